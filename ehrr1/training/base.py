"""What the training objectives share: a Hugging Face causal LM built in ``configure_model`` (so sharded
strategies, FSDP and DeepSpeed ZeRO-3, can place it themselves), AdamW with the stage's schedule, clipping
to a global norm, throughput and resume bookkeeping. SFT (:mod:`ehrr1.training.sft`) and GRPO
(:mod:`ehrr1.training.grpo`) are its two subclasses, siblings.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from transformers import PreTrainedModel

from ehrr1.config import OptimConfig, ScheduleConfig, Scheduler, Toggle

log = logging.getLogger(__name__)


def lr_schedule(optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, total_steps: int) -> Any:
    """The stage's learning-rate schedule over ``total_steps`` optimiser steps, as transformers builds it for the
    Hugging Face Trainer (the reference's, so the curves match): ``ceil(warmup_ratio * total_steps)`` steps of
    linear warm-up from 0, then constant, cosine or linear decay to ``min_lr_ratio`` of the peak."""
    from transformers import optimization

    warmup = math.ceil(schedule.warmup_ratio * total_steps)
    scheduler, floor = Scheduler(schedule.scheduler), schedule.min_lr_ratio
    if scheduler is Scheduler.constant or floor >= 1:
        return optimization.get_constant_schedule_with_warmup(optimizer, warmup)
    if scheduler is Scheduler.cosine:
        return optimization.get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, warmup, total_steps, min_lr_rate=floor
        )
    peak = optimizer.param_groups[0]["lr"]
    return optimization.get_polynomial_decay_schedule_with_warmup(
        optimizer, warmup, total_steps, lr_end=floor * peak, power=1.0
    )


def apply_liger(model: PreTrainedModel, toggle: Toggle, on_gpu: bool) -> bool:
    """Patch the model with Liger kernels when asked (``on``) or possible (``auto``: installed and on a GPU)."""
    if toggle is Toggle.off or (toggle is Toggle.auto and not (on_gpu and importlib.util.find_spec("liger_kernel"))):
        return False
    if importlib.util.find_spec("liger_kernel") is None:
        raise ImportError("stage.liger=on needs liger-kernel: pip install -e '.[gpu]' (or stage.liger=off)")
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model)
    return True


def fused_adamw(params: list[torch.Tensor]) -> bool:
    """AdamW's fused kernel where every parameter is on a GPU: one launch per step and no host read of the step
    counts (the default path reads each parameter's step to the host); elsewhere PyTorch's default path."""
    return bool(params) and all(p.device.type == "cuda" for p in params)


class CausalLMModule(pl.LightningModule):
    """A stage's model, optimiser and bookkeeping; the objective (``training_step``) is the subclass's."""

    def __init__(
        self,
        build_model: Callable[[], PreTrainedModel],
        optim: OptimConfig,
        schedule: ScheduleConfig,
        gradient_checkpointing: bool = False,
        liger: Toggle = Toggle.off,
        cpu_offload_optimizer: bool = False,
    ):
        super().__init__()
        self.build_model = build_model
        self.optim = optim
        self.schedule = schedule
        self.gradient_checkpointing = gradient_checkpointing
        self.liger = liger
        self.cpu_offload_optimizer = cpu_offload_optimizer
        # a PreTrainedModel (a PeftModel around one under LoRA), built by configure_model; typed loosely
        # because PEFT's wrapper forwards the model's attributes dynamically
        self.model: Any = None
        self.data_position: tuple[int, int] | None = None  # (epoch, next batch): where a resume starts
        self.val_history: list[tuple[int, float]] = []  # (optimiser step, val loss), when the objective validates
        self.tokens_per_s: list[float] = []
        self.tokens_seen = 0  # real (non-padding) tokens of the training batches, this process
        self._last_loss: torch.Tensor | float | None = None  # the last optimiser step's loss (this rank)

    @property
    def last_train_loss(self) -> float | None:
        """The last optimiser step's loss on this rank, read to the host only when asked (not every step)."""
        return None if self._last_loss is None else float(self._last_loss)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if isinstance(self.trainer.strategy, DeepSpeedStrategy) and self.trainer.strategy.zero_stage_3:
            from transformers.integrations import HfDeepSpeedConfig

            # from_pretrained then loads each weight into its ZeRO-3 partition (kept alive while the model lives)
            self._hf_deepspeed = HfDeepSpeedConfig(self.trainer.strategy.config)
        self.model = self.build_model()
        self.model.config.use_cache = False
        self.model.train()  # from_pretrained returns the model in eval mode
        if self.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if apply_liger(self.model, self.liger, self.device.type == "cuda"):
            log.info("Liger kernels applied")

    def mean_tokens_per_s(self) -> float | None:
        """Mean training throughput of this process (the first micro-batch, with start-up costs, excluded)."""
        return round(sum(self.tokens_per_s) / len(self.tokens_per_s), 1) if self.tokens_per_s else None

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        """Clip to a global norm and log the norm before clipping; under FSDP through the sharded root module
        (the norm over every rank's shard), which Lightning's own clipping does not support. DeepSpeed clips
        inside its engine."""
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            return
        max_norm = gradient_clip_val or float("inf")
        owner: Any = self.trainer.strategy.model
        if hasattr(owner, "clip_grad_norm_"):
            norm = owner.clip_grad_norm_(max_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def configure_optimizers(self) -> Any:  # Lightning's optimiser-and-scheduler dict
        params = [p for p in self.model.parameters() if p.requires_grad]
        matrices = [p for p in params if len(getattr(p, "ds_shape", p.shape)) >= 2]  # ZeRO-3 keeps shapes aside
        others = [p for p in params if len(getattr(p, "ds_shape", p.shape)) < 2]
        groups = [
            {"params": matrices, "weight_decay": self.optim.weight_decay},  # no decay on norms and biases
            {"params": others, "weight_decay": 0.0},
        ]
        kwargs: dict[str, Any] = {"lr": self.optim.lr, "betas": tuple(self.optim.betas), "eps": self.optim.eps}
        if self.cpu_offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(groups, **kwargs)
        else:
            optimizer = torch.optim.AdamW(groups, **kwargs, fused=fused_adamw(params))
        scheduler = lr_schedule(optimizer, self.schedule, self.optimizer_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_steps(self) -> int:
        """The optimiser steps the stage takes, which its schedule spans: one per Lightning stepping batch."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ehrr1"] = {"val_history": self.val_history, "data_position": self.data_position}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ehrr1", {})
        self.val_history = [tuple(v) for v in state.get("val_history", [])]
        self.data_position = tuple(state["data_position"]) if state.get("data_position") else None
