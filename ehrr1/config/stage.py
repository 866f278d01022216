"""``conf/stage/``: one curriculum stage (SFT or GRPO), its optimiser, schedule, LoRA and rewards."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING, DictConfig

from ehrr1.config.checks import checked, path_name, unset_by_default


class Objective(str, Enum):
    sft = "sft"  # supervised fine-tuning on chat examples (stages 1 and 2)
    grpo = "grpo"  # reinforcement learning with verifiable rewards (stage 3)


class Scheduler(str, Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class Toggle(str, Enum):
    auto = "auto"  # on where it is installed and applies (a GPU), else off
    on = "on"  # required: fail when it cannot be used
    off = "off"


@dataclass
class OptimConfig:
    lr: float = checked(2e-5, gt=0)
    weight_decay: float = checked(0.0, ge=0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = checked(1e-8, gt=0)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        betas = list(node.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            return [f"{at}.betas={betas}: expected two values in [0, 1)"]
        return []


@dataclass
class ScheduleConfig:
    scheduler: Scheduler = Scheduler.cosine
    warmup_ratio: float = checked(0.03, ge=0, le=1)  # share of the optimiser steps spent warming up from 0
    min_lr_ratio: float = checked(0.0, ge=0, le=1)  # the learning rate the decay ends at, as a share of optim.lr


class LossType(str, Enum):
    """How GRPO aggregates per-token losses."""

    grpo = "grpo"  # mean over each sequence's tokens, then over sequences
    bnpo = "bnpo"  # mean over all tokens of the batch
    dr_grpo = "dr_grpo"  # sum over tokens / (sequences x max completion length)
    dapo = "dapo"  # sum over tokens / tokens of the whole generation batch


class RewardScale(str, Enum):
    group = "group"  # divide advantages by the group's reward std
    batch = "batch"  # by the batch's reward std
    none = "none"  # centre only (Dr. GRPO)


class RolloutBackend(str, Enum):
    hf = "hf"  # generate with the policy itself (CPU or GPU)
    vllm = "vllm"  # a vLLM engine on the same GPU, weights synced after each update


class AnswerMetric(str, Enum):
    task = "task"  # each task's own metric (F1, recall, accuracy; risk: the yes/no)
    set_f1 = "set_f1"  # the reference's GRPO reward: F1 of the answer lines for every set task (recall, F1)


@dataclass
class RewardWeights:
    answer: float = 1.0  # the final answer scored by ``answer_metric`` (0 while a reasoning prompt's is unclosed)
    format: float = 1.0  # +1 / -1: the three reasoning sections, no repeated lines (prompts asking to reason)
    answer_metric: AnswerMetric = AnswerMetric.task


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = checked(16, ge=1)
    alpha: int = checked(32, ge=1)
    dropout: float = checked(0.05, ge=0, lt=1)
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class GRPOConfig:
    """Curriculum stage 3 (``stage=rl``): GRPO with verifiable rewards."""

    prompts_per_step: int = checked(2, ge=1)  # prompts per generation batch (each sampled group_size times)
    micro_batch_size: int = checked(8, ge=1)  # completions (prompt + completion sequences) per forward/backward pass
    group_size: int = checked(8, ge=2)  # completions per prompt; one alone has no group to be compared with
    num_iterations: int = checked(1, ge=1)  # policy updates per generation batch (old log-probs cached)
    max_completion_tokens: int = checked(1024, ge=1)
    temperature: float = checked(0.7, gt=0)  # a group needs sampled, different completions
    top_p: float = checked(0.95, gt=0, le=1)
    top_k: int = checked(20, ge=0)
    epsilon_low: float = checked(0.2, ge=0)
    epsilon_high: float = checked(0.2, ge=0)
    beta: float = checked(0.0, ge=0)  # KL (k3) to the frozen reference; 0: no reference model
    loss_type: LossType = LossType.grpo
    scale_rewards: RewardScale = RewardScale.group
    rewards: RewardWeights = field(default_factory=RewardWeights)
    rollout: RolloutBackend = RolloutBackend.hf
    vllm_gpu_memory_utilization: float = checked(0.3, gt=0, le=1)  # vllm rollouts share the GPU with training
    lora: LoraConfig = field(default_factory=LoraConfig)
    tasks: list[str] | None = None  # the RL task mix: these tasks of the stage's data; None: all
    max_prompts: int | None = checked(None, ge=1)  # at most this many prompts (a seeded draw); None: all


class LossOn(str, Enum):
    completion = "completion"  # the assistant's answer (and its end-of-turn) only
    all = "all"  # every token of the chat, prompt included (TRL's SFTTrainer without completion_only_loss)


class LossPer(str, Enum):
    token = "token"  # every answer token weighs the same (a 20-line answer outweighs a yes / no)
    example = "example"  # every example's answer weighs the same however many tokens it has


@dataclass
class StageConfig:
    """One curriculum stage: its data, objective, optimiser and schedule (``conf/stage/``)."""

    name: str = path_name()
    objective: Objective = Objective.sft
    data: str = MISSING  # directory holding train.jsonl and val.jsonl (chat records)
    init: str | None = None  # weights to start from; None: the previous stage's, or the model's
    epochs: int = checked(1, ge=1)
    max_steps: int = checked(-1, ge=1, also=(-1,))  # optimiser steps; -1: as many as the epochs take
    micro_batch_size: int = checked(1, ge=1)  # sft: sequences per forward pass (packed: bins of max_seq_len
    # tokens); a grpo stage's is grpo.micro_batch_size (completions)
    grad_accum: int = checked(16, ge=1)  # micro-batches per optimiser step
    max_seq_len: int | None = checked(None, ge=1)  # None: model.context_length; longer examples are left out
    packing: Toggle = Toggle.auto  # several examples per sequence, each attending only to itself; auto: with
    # document-sparse attention (flash_attention_2, flex_attention), where it saves compute; else length-grouped
    # padding
    loss_on: LossOn = LossOn.completion  # sft: which tokens are trained (the reference's SFT: all)
    answer_weight: float = checked(1.0, gt=0)  # sft, loss_on=all: an assistant token's loss weight (prompt: 1)
    loss_per: LossPer = LossPer.token  # sft: answers weigh per token, or per example (answer_weight each)
    gradient_clip: float | None = checked(1.0, gt=0)
    gradient_checkpointing: bool = True  # recompute activations in the backward pass: memory for compute
    liger: Toggle = Toggle.auto  # Liger kernels (fused RMSNorm, SwiGLU, RoPE, cross-entropy) on a GPU
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    val_every_n_steps: int | None = checked(None, ge=1)  # None: at the end of each epoch
    val_max_batches: int | None = checked(None, ge=1)  # None: the whole val split
    log_every_n_steps: int = checked(10, ge=1)
    checkpoint_every_n_steps: int = checked(500, ge=1)  # resumable Lightning checkpoints (the last one is kept)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)  # objective grpo only


# A curriculum's ``stage`` node (conf/stage/curriculum.yaml): the settings given for every stage, each unset (???)
# until an experiment or an override sets it; a stage keeps its own where they are unset.
EveryStageConfig = unset_by_default(StageConfig)
