"""``conf/hardware/``: Lightning accelerator, devices, strategy (DDP, FSDP, DeepSpeed: built by ``_target_``) and
precision."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING, DictConfig

from ehrr1.config.checks import builds, checked, did_you_mean


class FSDPSharding(str, Enum):
    FULL_SHARD = "FULL_SHARD"  # parameters, gradients and optimiser state
    SHARD_GRAD_OP = "SHARD_GRAD_OP"  # gradients and optimiser state
    HYBRID_SHARD = "HYBRID_SHARD"  # full sharding within a node, replicas across nodes
    NO_SHARD = "NO_SHARD"


class FSDPStateDict(str, Enum):
    full = "full"  # one checkpoint file
    sharded = "sharded"  # one per rank


@dataclass
class StrategyConfig:
    """A Lightning strategy over several devices: ``_target_`` is called with the settings beside it
    (``hydra.utils.instantiate``). Each hardware option names its schema (``/ddp_schema@strategy``)."""

    _target_: str = MISSING


@dataclass
class DDPConfig(StrategyConfig):
    _target_: str = "lightning.pytorch.strategies.DDPStrategy"
    find_unused_parameters: bool = False


@dataclass
class FSDPConfig(StrategyConfig):
    """Fully sharded data parallel, wrapping (and checkpointing) each decoder layer."""

    _target_: str = "ehrr1.training.hardware.fsdp_strategy"
    sharding_strategy: FSDPSharding = FSDPSharding.FULL_SHARD
    cpu_offload: bool = False
    state_dict_type: FSDPStateDict = FSDPStateDict.full


@dataclass
class DeepSpeedConfig(StrategyConfig):
    """DeepSpeed ZeRO (the paper's stage 3); needs the gpu extra."""

    _target_: str = "ehrr1.training.hardware.deepspeed_strategy"
    stage: int = checked(3, ge=1, le=3)
    offload_optimizer: bool = False
    offload_parameters: bool = False
    # DeepSpeed's micro-batch (its throughput logs); None: the stage's micro_batch_size (our loader yields ready
    # micro-batches, so DeepSpeed cannot read it off the loader)
    logging_batch_size_per_gpu: int | None = checked(None, ge=1)


STRATEGY_SCHEMAS = {"ddp_schema": DDPConfig, "fsdp_schema": FSDPConfig, "deepspeed_schema": DeepSpeedConfig}
builds(*STRATEGY_SCHEMAS.values())


ACCELERATORS = ("cpu", "gpu", "cuda", "auto")


PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "32", "16", "bf16")


@dataclass
class HardwareConfig:
    """Where training runs: Lightning accelerator, devices, strategy and precision (``conf/hardware/``)."""

    name: str = MISSING
    accelerator: str = "cpu"  # cpu, gpu, auto
    devices: int = checked(1, ge=1, also=(-1,))  # per node; -1: all visible
    num_nodes: int = checked(1, ge=1)
    strategy: StrategyConfig | None = None  # None: one device per process (Lightning's "auto")
    precision: str = "32-true"  # Lightning precision: 32-true, bf16-mixed, bf16-true, 16-mixed
    dataloader_workers: int = checked(0, ge=0)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        found = []
        if node.accelerator not in ACCELERATORS:
            found.append(f"{at}.accelerator={node.accelerator}: {did_you_mean(node.accelerator, ACCELERATORS)}")
        if str(node.precision) not in PRECISIONS:
            found.append(f"{at}.precision={node.precision}: {did_you_mean(str(node.precision), PRECISIONS)}")
        return found
