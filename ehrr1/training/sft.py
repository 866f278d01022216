"""Supervised fine-tuning (curriculum stages 1 and 2) as a LightningModule around a Hugging Face causal LM.

The loss is the cross-entropy of assistant tokens summed over an optimiser step's micro-batches and divided
by the step's assistant-token count (not averaged per micro-batch), so gradient accumulation and packing do
not change the objective. The model, optimiser, schedule and clipping are :class:`CausalLMModule`'s, shared
with GRPO.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ehrr1.training.base import CausalLMModule


class SFTModule(CausalLMModule):
    """Trains ``build_model()``'s causal LM on batches from :class:`ehrr1.training.data.ChatDataModule`."""

    def on_train_start(self) -> None:
        self._step_loss = torch.zeros((), device=self.device)  # the current optimiser step's loss so far
        self._last_batch_end: float | None = None

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

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.forward_loss(batch)  # share of the step's token-mean loss
        self._step_loss = self._step_loss.to(loss.device) + loss.detach()
        self.data_position = (batch["epoch"], batch["position"] + 1)  # host ints: no device sync
        return loss * self.trainer.accumulate_grad_batches  # Lightning divides by it again

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Any], batch_idx: int) -> None:
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True  # stopping mid-epoch: Lightning then validates once more, in fit
        now = time.perf_counter()
        self.tokens_seen += batch["n_tokens"]
        if self._last_batch_end is not None:
            rate = batch["n_tokens"] / (now - self._last_batch_end)
            self.tokens_per_s.append(rate)
            self.log("train/tokens_per_s", rate, on_step=True, on_epoch=False)
        self._last_batch_end = now

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self._last_loss = self._step_loss
        self.log("train/loss", self._step_loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        self._step_loss = torch.zeros((), device=self._step_loss.device)
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False, prog_bar=True)

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
