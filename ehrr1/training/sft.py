"""Supervised fine-tuning (curriculum stages 1 and 2) as a LightningModule around a Hugging Face causal LM.

The loss is the cross-entropy of assistant tokens summed over an optimiser step's micro-batches and divided
by the step's assistant-token count (not averaged per micro-batch), so gradient accumulation and packing do
not change the objective. The model is built in ``configure_model`` so sharded strategies (FSDP, DeepSpeed
ZeRO-3) can place it themselves.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from transformers import PreTrainedModel

from ehrr1.config import OptimConfig, ScheduleConfig, Scheduler, Toggle

log = logging.getLogger(__name__)


def lr_lambda(
    scheduler: Scheduler, total_steps: int, warmup_ratio: float, min_lr_ratio: float
) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each optimiser step: linear warm-up, then the decay."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if scheduler is Scheduler.constant:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if scheduler is Scheduler.cosine else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * decay

    return factor


def apply_liger(model: PreTrainedModel, toggle: Toggle, on_gpu: bool) -> bool:
    """Patch the model with Liger kernels when asked (``on``) or possible (``auto``: installed and on a GPU)."""
    if toggle is Toggle.off or (toggle is Toggle.auto and not (on_gpu and importlib.util.find_spec("liger_kernel"))):
        return False
    if importlib.util.find_spec("liger_kernel") is None:
        raise ImportError("stage.liger=on needs liger-kernel: pip install -e '.[gpu]' (or stage.liger=off)")
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    _apply_liger_kernel_to_instance(model=model)
    return True


class SFTModule(pl.LightningModule):
    """Trains ``build_model()``'s causal LM on batches from :class:`ehrr1.training.data.ChatDataModule`."""

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
        self.model: PreTrainedModel | None = None
        self.data_position: tuple[int, int] | None = None  # (epoch, next micro-batch): where a resume starts
        self.val_history: list[tuple[int, float]] = []  # (optimiser step, val loss)
        self.tokens_per_s: list[float] = []
        self.tokens_seen = 0  # real (non-padding) tokens of the training batches, this process
        self.last_train_loss: float | None = None  # token-mean loss of the last optimiser step (this rank)
        self._step_loss = torch.zeros(())
        self._val_sums = torch.zeros(2)
        self._last_batch_end: float | None = None

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

    def forward_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed cross-entropy of the batch's labelled tokens divided by the step's label-token count
        (weighted by ``label_weights`` when the batch has them: ``stage.answer_weight``)."""
        if "label_weights" in batch:
            return self.weighted_loss(batch)
        out = self.model(
            input_ids=batch["input_ids"],
            labels=batch["labels"],
            position_ids=batch["position_ids"],
            attention_mask=batch.get("attention_mask"),
            num_items_in_batch=batch["step_label_tokens"],
            use_cache=False,
        )
        return out.loss

    def weighted_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=batch.get("attention_mask"),
            use_cache=False,
        ).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
        )
        weights = batch["label_weights"][:, 1:].reshape(-1).to(losses.dtype)
        return (losses * weights).sum() / batch["step_label_tokens"].to(losses.dtype)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.forward_loss(batch)  # share of the step's token-mean loss
        self._step_loss = self._step_loss.to(loss.device) + loss.detach()
        self.data_position = (int(batch["epoch"]), int(batch["position"]) + 1)
        return loss * self.trainer.accumulate_grad_batches  # Lightning divides by it again

    def on_train_batch_end(self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True  # stopping mid-epoch: Lightning then validates once more, in fit
        now = time.perf_counter()
        self.tokens_seen += int(batch["n_tokens"])
        if self._last_batch_end is not None:
            rate = float(batch["n_tokens"]) / (now - self._last_batch_end)
            self.tokens_per_s.append(rate)
            self.log("train/tokens_per_s", rate, on_step=True, on_epoch=False)
        self._last_batch_end = now

    def mean_tokens_per_s(self) -> float | None:
        """Mean training throughput of this process (the first micro-batch, with start-up costs, excluded)."""
        return round(sum(self.tokens_per_s) / len(self.tokens_per_s), 1) if self.tokens_per_s else None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.last_train_loss = float(self._step_loss)
        self.log("train/loss", self._step_loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        self._step_loss = torch.zeros((), device=self._step_loss.device)
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False, prog_bar=True)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        """Clip to a global norm and log the norm before clipping; under FSDP through the sharded root module
        (the norm over every rank's shard), which Lightning's own clipping does not support. DeepSpeed clips
        inside its engine."""
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            return
        max_norm = gradient_clip_val or float("inf")
        owner = self.trainer.strategy.model
        if hasattr(owner, "clip_grad_norm_"):
            norm = owner.clip_grad_norm_(max_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm)
        self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(2, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        tokens = batch["step_label_tokens"].to(self.device)
        loss = self.forward_loss(batch)  # mean over this micro-batch's labelled tokens
        self._val_sums += torch.stack([loss.detach().float() * tokens, tokens.float()])

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        value = float(sums[0] / sums[1].clamp(min=1))
        if self.trainer.sanity_checking:  # a full pass before training: the loss before
            if self.val_history:
                return
            if self.logger is not None:  # Lightning does not log during the sanity check
                self.logger.log_metrics({"val/loss": value}, step=self.trainer.global_step)
        self.val_history.append((self.trainer.global_step, value))
        self.log("val/loss", value, prog_bar=True, sync_dist=True)  # already reduced: the same on every rank

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        matrices = [p for p in params if len(getattr(p, "ds_shape", p.shape)) >= 2]  # ZeRO-3 keeps shapes aside
        others = [p for p in params if len(getattr(p, "ds_shape", p.shape)) < 2]
        groups = [
            {"params": matrices, "weight_decay": self.optim.weight_decay},  # no decay on norms and biases
            {"params": others, "weight_decay": 0.0},
        ]
        kwargs = {"lr": self.optim.lr, "betas": tuple(self.optim.betas), "eps": self.optim.eps}
        if self.cpu_offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(groups, **kwargs)
        else:
            optimizer = torch.optim.AdamW(groups, **kwargs)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = lr_lambda(self.schedule.scheduler, total, self.schedule.warmup_ratio, self.schedule.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ehrr1"] = {"val_history": self.val_history, "data_position": self.data_position}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("ehrr1", {})
        self.val_history = [tuple(v) for v in state.get("val_history", [])]
        self.data_position = tuple(state["data_position"]) if state.get("data_position") else None
