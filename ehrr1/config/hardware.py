"""``conf/hardware/``: Lightning accelerator, devices, strategy (DDP, FSDP, DeepSpeed) and precision."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING, DictConfig

from ehrr1.config.checks import checked, did_you_mean


class Strategy(str, Enum):
    auto = "auto"  # one device
    ddp = "ddp"
    fsdp = "fsdp"
    deepspeed_zero3 = "deepspeed_zero3"


class FSDPSharding(str, Enum):
    FULL_SHARD = "FULL_SHARD"  # parameters, gradients and optimiser state
    SHARD_GRAD_OP = "SHARD_GRAD_OP"  # gradients and optimiser state
    HYBRID_SHARD = "HYBRID_SHARD"  # full sharding within a node, replicas across nodes
    NO_SHARD = "NO_SHARD"


class FSDPStateDict(str, Enum):
    full = "full"  # one checkpoint file
    sharded = "sharded"  # one per rank


@dataclass
class FSDPConfig:
    sharding_strategy: FSDPSharding = FSDPSharding.FULL_SHARD
    cpu_offload: bool = False
    state_dict_type: FSDPStateDict = FSDPStateDict.full


@dataclass
class DeepSpeedConfig:
    offload_optimizer: bool = False
    offload_parameters: bool = False


ACCELERATORS = ("cpu", "gpu", "cuda", "auto")


PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true", "32", "16", "bf16")


@dataclass
class HardwareConfig:
    """Where training runs: Lightning accelerator, devices, strategy and precision (``conf/hardware/``)."""

    name: str = MISSING
    accelerator: str = "cpu"  # cpu, gpu, auto
    devices: int = checked(1, ge=1, also=(-1,))  # per node; -1: all visible
    num_nodes: int = checked(1, ge=1)
    strategy: Strategy = Strategy.auto
    precision: str = "32-true"  # Lightning precision: 32-true, bf16-mixed, bf16-true, 16-mixed
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    dataloader_workers: int = checked(0, ge=0)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        found = []
        if node.accelerator not in ACCELERATORS:
            found.append(f"{at}.accelerator={node.accelerator}: {did_you_mean(node.accelerator, ACCELERATORS)}")
        if str(node.precision) not in PRECISIONS:
            found.append(f"{at}.precision={node.precision}: {did_you_mean(str(node.precision), PRECISIONS)}")
        return found
