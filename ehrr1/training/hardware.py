"""``hardware=`` -> the Lightning Trainer's accelerator, devices, strategy and precision."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

from ehrr1.config import DeepSpeedConfig, FSDPSharding, FSDPStateDict, HardwareConfig
from ehrr1.errors import ConfigError
from ehrr1.utils import instantiate


def decoder_layer_classes() -> set[type]:
    """Transformer blocks FSDP wraps (and checkpoints) one by one."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    return {Qwen2DecoderLayer, Qwen3DecoderLayer}


def build_strategy(hw: HardwareConfig, micro_batch_size: int = 1) -> Any:
    """The Lightning strategy of ``hardware.strategy``, built by its ``_target_``; ``"auto"`` for one device.
    DeepSpeed, unless told otherwise, is told the stage's micro-batch size."""
    if hw.strategy is None:
        return "auto"
    strategy = hw.strategy
    if isinstance(strategy, DeepSpeedConfig) and strategy.logging_batch_size_per_gpu is None:
        strategy = replace(strategy, logging_batch_size_per_gpu=micro_batch_size)
    return instantiate(strategy)


def fsdp_strategy(sharding_strategy: FSDPSharding, cpu_offload: bool, state_dict_type: FSDPStateDict) -> Any:
    """FSDP wrapping (and checkpointing) each decoder layer, with the original parameters kept for the optimiser."""
    from lightning.pytorch.strategies import FSDPStrategy

    return FSDPStrategy(
        auto_wrap_policy=decoder_layer_classes(),
        sharding_strategy=FSDPSharding(sharding_strategy).value,  # type: ignore[arg-type]  # one of its Literal's
        cpu_offload=cpu_offload,
        state_dict_type=FSDPStateDict(state_dict_type).value,  # type: ignore[arg-type]
        use_orig_params=True,
    )


def deepspeed_strategy(
    stage: int, offload_optimizer: bool, offload_parameters: bool, logging_batch_size_per_gpu: int
) -> Any:
    require_deepspeed()
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(
        stage=stage,
        offload_optimizer=offload_optimizer,
        offload_parameters=offload_parameters,
        logging_batch_size_per_gpu=logging_batch_size_per_gpu,
    )


def require_deepspeed() -> None:
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("hardware=deepspeed_zero3 needs DeepSpeed: pip install -e '.[gpu]' on a GPU machine")


def check_hardware(hw: HardwareConfig) -> None:
    """Refuse, before any work, hardware this machine does not have."""
    import torch

    if hw.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"hardware={hw.name} (accelerator={hw.accelerator}) needs a CUDA GPU and torch sees none "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False): use hardware=cpu here"
        )
    visible = torch.cuda.device_count() if hw.accelerator in ("gpu", "cuda") else None
    if visible is not None and hw.devices > visible:
        raise ConfigError(f"hardware.devices={hw.devices} but {visible} GPU(s) are visible on this machine")
    if isinstance(hw.strategy, DeepSpeedConfig):
        require_deepspeed()


def trainer_kwargs(hw: HardwareConfig, micro_batch_size: int = 1) -> dict[str, Any]:
    return {
        "accelerator": hw.accelerator,
        "devices": hw.devices,
        "num_nodes": hw.num_nodes,
        "strategy": build_strategy(hw, micro_batch_size),
        "precision": hw.precision,
    }
