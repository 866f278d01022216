"""Curriculum stage 3: GRPO as a LightningModule (manual optimisation), so RL shares SFT's config groups,
hardware strategies, checkpoints and logging.

Each training step takes ``prompts_per_step`` prompts, samples ``group_size`` completions of each through a
rollout backend (the policy itself with HF generate, or a colocated vLLM engine whose weights are synced
after each update), scores them with the verifiable rewards, turns rewards into group-normalised
advantages, caches the old (and, with beta > 0, the reference) log-probabilities, then takes
``num_iterations`` optimiser steps on the same rollouts, micro-batched over completions.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedModel

from ehrr1.backends import RolloutSampler, SamplingParams
from ehrr1.config import GRPOConfig, LossType, OptimConfig, RolloutBackend, ScheduleConfig
from ehrr1.errors import ConfigError
from ehrr1.tasks.prompt import ThinkingSwitch, generation_prompt
from ehrr1.tasks.records import InstructionRecord, prompt_messages
from ehrr1.training.base import CausalLMModule
from ehrr1.training.data import ResumableDataModule
from ehrr1.training.grpo_loss import completion_logps, group_advantages, grpo_loss
from ehrr1.training.rewards import rewards

log = logging.getLogger(__name__)

RewardFn = Callable[[list[str], list[InstructionRecord], list[list[int]]], list[dict[str, float]]]


def rl_thinks(record: InstructionRecord) -> bool:
    """Whether RL asks the record with thinking on: decision tasks reason first, risk tasks answer at once
    (the reference's ``/think`` and ``/no_think``)."""
    return record["kind"] != "risk"


def rl_prompt(tokenizer: Any, record: InstructionRecord, switch: ThinkingSwitch) -> str:
    """The text a record is asked with in RL: the prompt SFT trained it on and evaluation asks it with
    (:func:`~ehrr1.tasks.prompt.generation_prompt`), thinking as :func:`rl_thinks` says."""
    return generation_prompt(tokenizer, prompt_messages(record), rl_thinks(record), switch)


class PromptOrder(Sampler):
    """Seeded batches of prompt indices per epoch, this rank's share, from a resume position on."""

    def __init__(self, n: int, per_step: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.per_step, self.seed, self.rank, self.world_size = n, per_step, seed, rank, world_size
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return self.n // (self.per_step * self.world_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        ids = list(range(self.n))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(ids)
        start, self.start = self.start, 0
        for position in range(start, len(self)):
            first = (position * self.world_size + self.rank) * self.per_step
            yield ids[first : first + self.per_step]


class PromptDataModule(ResumableDataModule):
    """Prompts (the records of a stage's ``train.jsonl``, optionally only some tasks) in seeded batches."""

    def __init__(self, records: list[InstructionRecord], per_step: int, seed: int):
        super().__init__()
        if len(records) < per_step:
            raise ConfigError(f"stage.grpo.prompts_per_step={per_step} but the RL data holds {len(records)} prompts")
        self.records, self.per_step, self.seed = records, per_step, seed

    def train_dataloader(self) -> DataLoader:
        order = PromptOrder(len(self.records), self.per_step, self.seed, *self._rank())
        if (position := self.take_resume_position()) is not None:
            order.epoch, order.start = position
        prompts = cast(Dataset, self.records)  # a list is a map-style dataset
        return DataLoader(prompts, batch_sampler=order, collate_fn=lambda batch: batch)


@dataclass
class RolloutBatch:
    """The tensors of one generation batch. A row is one completion: its prompt left-padded to the longest,
    then the completion right-padded to the longest (rows = prompts * group_size, a prompt's group together)."""

    input_ids: torch.Tensor  # [rows, prompt_len + completion_len] long
    attention_mask: torch.Tensor  # [rows, prompt_len + completion_len]: 1 on prompt and completion tokens
    completion_mask: torch.Tensor  # [rows, completion_len]: 1 on completion tokens, the ones the loss scores


class GRPOModule(CausalLMModule):
    """GRPO on ``build_model()``'s causal LM; SFT's sibling: the same model set-up, optimiser, schedule, clipping."""

    def __init__(
        self,
        build_model: Callable[[], PreTrainedModel],
        tokenizer: Any,
        settings: GRPOConfig,
        optim: OptimConfig,
        schedule: ScheduleConfig,
        micro_batch_size: int = 8,
        gradient_clip: float | None = 1.0,
        gradient_checkpointing: bool = False,
        switch: ThinkingSwitch = ThinkingSwitch.enable_thinking,
        seed: int = 0,
        reward_fn: RewardFn | None = None,
        model_path: str | None = None,
    ):
        super().__init__(build_model, optim, schedule, gradient_checkpointing)
        self.automatic_optimization = False
        self.tokenizer = tokenizer
        self.settings = settings
        self.micro_batch_size = micro_batch_size
        self.gradient_clip = gradient_clip
        self.switch = switch
        self.seed = seed
        self.reward_fn = reward_fn or self.task_rewards
        self.model_path = model_path  # vllm rollouts load the engine from here, then get synced weights
        self.reference: PreTrainedModel | None = None
        self.rollout_engine: Any = None
        self.reward_history: list[float] = []  # mean total reward per step
        self.step_seconds: list[tuple[float, float]] = []  # (rollout, update) wall time per step

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        lora = self.settings.lora
        if lora.enabled:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
            )
            self.model = get_peft_model(cast(PreTrainedModel, self.model), config)  # built by super() just now
        if self.settings.beta != 0.0 and not lora.enabled:  # with LoRA the reference is the adapter-free base
            self.reference = self.build_model().eval().requires_grad_(False)
        s = self.settings
        log.info(
            "GRPO: %d prompts x %d samples per step, %s rollouts, %d update(s) per batch, beta %g%s",
            s.prompts_per_step,
            s.group_size,
            s.rollout.value,
            s.num_iterations,
            s.beta,
            ", LoRA" if lora.enabled else "",
        )

    def task_rewards(
        self, texts: list[str], records: list[InstructionRecord], ids: list[list[int]]
    ) -> list[dict[str, float]]:
        return [rewards(t, r, self.settings.rewards, rl_thinks(r)) for t, r in zip(texts, records, strict=True)]

    def rollout(self, prompts: list[str], step: int) -> list[list[int]]:
        s = self.settings
        sampling = SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_tokens=s.max_completion_tokens,
            seed=self.seed * 1_000_003 + step,
        )
        policy = self.model
        was_training = policy.training
        policy.eval()  # no dropout while sampling from the policy itself
        try:
            return self.rollout_sampler().sample_ids(prompts, sampling, s.group_size)
        finally:
            policy.train(was_training)

    def rollout_sampler(self) -> RolloutSampler:
        """The policy itself through HF generate, or the colocated vLLM engine holding its synced weights."""
        if self.settings.rollout is RolloutBackend.vllm:
            return self.vllm_engine()
        from ehrr1.backends.hf import HFBackend

        return HFBackend.around(self.model, self.tokenizer)

    def vllm_engine(self) -> Any:
        if self.rollout_engine is None:
            import os

            from ehrr1.backends.vllm import Engine

            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in process: weights can be synced
            dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
            if self.model_path is None:
                raise ConfigError(
                    "stage.grpo.rollout=vllm needs the policy's weights on disk (model_path) to start from"
                )
            self.rollout_engine = Engine(
                self.model_path,
                {
                    "dtype": dtype,
                    "gpu_memory_utilization": self.settings.vllm_gpu_memory_utilization,
                    "enable_prefix_caching": True,
                    "seed": self.seed,
                },
            )
            self.sync_rollout_weights()  # the policy may already differ from model_path (a resumed run)
        return self.rollout_engine

    def sync_rollout_weights(self) -> None:
        if self.rollout_engine is None:
            return
        if not self.settings.lora.enabled:
            self.rollout_engine.load_weights((name, p.detach()) for name, p in self.model.state_dict().items())
            return
        self.model.merge_adapter()  # base + adapters, under the base model's names; undone right after
        try:
            merged = {
                name.removeprefix("base_model.model.").replace(".base_layer", ""): p.detach()
                for name, p in self.model.state_dict().items()
                if "lora_" not in name
            }
            self.rollout_engine.load_weights(merged.items())
        finally:
            self.model.unmerge_adapter()

    def batch_tensors(self, prompts: list[str], completions: list[list[int]]) -> RolloutBatch:
        """Left-padded prompts (each repeated group_size times) then right-padded completions."""
        pad = self.tokenizer.pad_token_id
        prompt_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        rows = [p for p in prompt_ids for _ in range(self.settings.group_size)]
        p_len, c_len = max(map(len, rows)), max(1, max(map(len, completions)))
        ids = torch.full((len(rows), p_len + c_len), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, (p, c) in enumerate(zip(rows, completions, strict=True)):
            ids[i, p_len - len(p) : p_len] = torch.tensor(p)
            attention[i, p_len - len(p) : p_len] = 1
            if c:
                ids[i, p_len : p_len + len(c)] = torch.tensor(c)
                attention[i, p_len : p_len + len(c)] = 1
        completion = attention[:, p_len:].clone()
        return RolloutBatch(ids.to(self.device), attention.to(self.device), completion.to(self.device))

    def logps(self, model: torch.nn.Module, batch: RolloutBatch, rows: slice) -> torch.Tensor:
        """[len(rows), completion_len] log-probabilities of the completions' tokens under ``model``."""
        width = batch.completion_mask.shape[1]
        return completion_logps(model, batch.input_ids[rows], batch.attention_mask[rows], width)

    @torch.no_grad()
    def cached_logps(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        n = batch.input_ids.shape[0]
        step = self.micro_batch_size
        return torch.cat([self.logps(model, batch, slice(i, i + step)) for i in range(0, n, step)])

    def training_step(self, records: list[InstructionRecord], batch_idx: int) -> None:
        s = self.settings
        started = time.perf_counter()
        prompts = [rl_prompt(self.tokenizer, r, self.switch) for r in records]
        completions = self.rollout(prompts, self.trainer.global_step)
        rollout_s = time.perf_counter() - started
        grouped = [r for r in records for _ in range(s.group_size)]
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        scored = self.reward_fn(texts, grouped, completions)
        total = torch.tensor([x["total"] for x in scored], dtype=torch.float32)
        advantages = group_advantages(total, s.group_size, s.scale_rewards).to(self.device)
        batch = self.batch_tensors(prompts, completions)
        mask = batch.completion_mask
        old = self.cached_logps(self.model, batch) if s.num_iterations > 1 else None
        ref = None
        if s.beta != 0.0:
            if self.reference is not None:
                ref = self.cached_logps(self.reference, batch)
            else:
                with self.model.disable_adapter():
                    ref = self.cached_logps(self.model, batch)
        train_started = time.perf_counter()
        stats = self.update(batch, mask, advantages, old, ref)
        self.sync_rollout_weights()
        train_s = time.perf_counter() - train_started
        self.step_seconds.append((rollout_s, train_s))
        self.log_step(records, grouped, scored, completions, mask, stats, rollout_s, train_s)
        epoch = self.trainer.current_epoch
        done = self.data_position[1] if self.data_position and self.data_position[0] == epoch else 0
        self.data_position = (epoch, done + 1)  # where a resumed run picks up the prompt order

    def update(self, batch, mask, advantages, old, ref) -> dict[str, float]:
        """``num_iterations`` optimiser steps over the rollouts; each sums the micro-batches' shares."""
        s = self.settings
        optimizer: Any = self.optimizers()  # one LightningOptimizer (manual optimisation)
        scheduler: Any = self.lr_schedulers()
        n, tokens = mask.shape[0], mask.sum().clamp(min=1)
        sums: dict[str, float] = defaultdict(float)
        for _ in range(s.num_iterations):
            for start in range(0, n, self.micro_batch_size):
                rows = slice(start, start + self.micro_batch_size)
                logps = self.logps(self.model, batch, rows)
                loss, stats = grpo_loss(
                    logps,
                    old[rows] if old is not None else logps.detach(),
                    advantages[rows],
                    mask[rows],
                    epsilon_low=s.epsilon_low,
                    epsilon_high=s.epsilon_high,
                    beta=s.beta,
                    ref_logps=ref[rows] if ref is not None else None,
                    loss_type=s.loss_type,
                    max_completion_length=s.max_completion_tokens,
                    num_items=tokens,
                )
                share = mask[rows].sum() / tokens if s.loss_type is LossType.bnpo else 1.0
                if s.loss_type in (LossType.grpo, LossType.dr_grpo):
                    share = logps.shape[0] / n
                self.manual_backward(loss * share)
                weight = float(mask[rows].sum() / tokens) / s.num_iterations
                for key, value in stats.items():
                    sums[key] += float(value) * weight
                sums["loss"] += float(loss.detach() * share) / s.num_iterations
            self.configure_gradient_clipping(optimizer, self.gradient_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return dict(sums)

    def log_step(self, records, grouped, scored, completions, mask, stats, rollout_s, train_s) -> None:
        lengths = torch.tensor([len(c) for c in completions], dtype=torch.float32)
        eos = self.tokenizer.eos_token_id
        truncated = [not c or c[-1] != eos for c in completions]
        metrics = {f"train/{k}": v for k, v in stats.items()}
        for key in scored[0]:
            values = torch.tensor([x[key] for x in scored])
            metrics[f"reward/{key}/mean"] = float(values.mean())
            metrics[f"reward/{key}/std"] = float(values.std()) if len(values) > 1 else 0.0
        by_task: dict[str, list[float]] = defaultdict(list)
        for record, x in zip(grouped, scored, strict=True):
            by_task[record["task"]].append(x["total"])
        metrics.update({f"reward_by_task/{t}": sum(v) / len(v) for t, v in by_task.items()})
        new_tokens = float(mask.sum())
        metrics.update(
            {
                "completion/length_mean": float(lengths.mean()),
                "completion/truncated_fraction": sum(truncated) / len(truncated),
                "rollout/tokens_per_s": new_tokens / max(rollout_s, 1e-9),
                "train/tokens_per_s": new_tokens * self.settings.num_iterations / max(train_s, 1e-9),
                "train/lr": cast(Any, self.optimizers()).param_groups[0]["lr"],
            }
        )
        self.reward_history.append(metrics["reward/total/mean"])
        self.tokens_per_s.append(metrics["train/tokens_per_s"])
        self._last_loss = metrics["train/loss"]
        self.log_dict(metrics, on_step=True, on_epoch=False)
        self.log("reward", metrics["reward/total/mean"], prog_bar=True, on_step=True, on_epoch=False)

    def optimizer_steps(self) -> int:
        """``num_iterations`` optimiser steps per generation batch (each counts in ``global_step``), up to
        ``max_steps``: the schedule spans all of them, not the batches alone."""
        trainer = self.trainer
        int(trainer.estimated_stepping_batches)  # sets up the data, so num_training_batches is known
        limits = [trainer.max_steps] if trainer.max_steps > 0 else []
        if trainer.max_epochs and trainer.max_epochs > 0 and math.isfinite(trainer.num_training_batches):
            limits.append(int(trainer.num_training_batches) * trainer.max_epochs * self.settings.num_iterations)
        return max(1, min(limits)) if limits else 1

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ehrr1"]["reward_history"] = self.reward_history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.reward_history = list(checkpoint.get("ehrr1", {}).get("reward_history", []))
