"""Structured configs behind the YAML in ``conf/``: typos and wrong types fail at start-up.

Each dataclass mirrors one config node; Hydra merges the YAML into them in struct mode, so an unknown
key is rejected with the valid keys listed, and an unknown group option lists the available ones.

The settings that implementation modules take (timeline build, cohort, selection, sampling, ...) live here
too: the schema is a leaf that imports no implementation, so ``--help`` and ``--cfg job`` answer at once.

Values are checked here as well: a field made with :func:`checked` carries its range, a dataclass's
``problems(node, at)`` its cross-field rules, and :func:`validate` walks a composed config and reports
every problem in one message before any work starts.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ehrr1.errors import ConfigError

SPLITS = ("train", "val", "test")
T = TypeVar("T")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def remote_refusal(base_url: str, opt_in_key: str) -> str | None:
    """Why ``base_url`` may not receive EHR text without ``opt_in_key=true``; None for a server on this machine."""
    if (urlparse(base_url).hostname or "") in LOCAL_HOSTS:
        return None
    return (
        f"{base_url} is not on this machine: sending EHR text to a remote server breaks the MIMIC-IV data use "
        f"agreement (no sharing with third parties) unless that server is yours to use for it; set "
        f"{opt_in_key}=true to allow it"
    )


@dataclass(frozen=True)
class Range:
    """Where a numeric setting may lie: its bounds, and sentinel values allowed outside them (-1: all)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple[float, ...] = ()

    def expected(self) -> str:
        limits = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        bounds = " and ".join(f"{op} {v:g}" for op, v in limits if v is not None)
        return " or ".join([bounds, *(f"{v:g}" for v in self.also)])

    def holds(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )


def checked(default: Any, **bounds: Any) -> Any:
    """A dataclass field whose value :func:`validate` checks against ``Range(**bounds)`` (None always passes)."""
    return field(default=default, metadata={"range": Range(**bounds)})


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}choose from {', '.join(choices)}"


def known_split(at: str, value: str | None) -> list[str]:
    if value is None or value in SPLITS:
        return []
    return [f"{at}={value}: unknown split; {did_you_mean(value, SPLITS)}"]


# Settings that implementation modules take as arguments: defined here, so this module imports none of them.


class MarkdownStyle(str, Enum):
    reference = "reference"  # the EHR-R1 reference's text, byte for byte
    clean = "clean"  # ehrr1's own readable format


class ThinkingSwitch(str, Enum):
    enable_thinking = "enable_thinking"  # the chat template takes enable_thinking (Qwen3, EHR-R1-1.7B/8B)
    closed_think = "closed_think"  # append an empty think block to turn reasoning off (EHR-R1-72B)
    suffix = "suffix"  # Qwen3's soft switch: "/think" or "/no_think" after the user turn (the reference's SFT, GRPO)


class EventGrouping(str, Enum):
    runs = "runs"  # the reference's events: consecutive rows of one table
    timestamp = "timestamp"  # the rows of one table at one timestamp


@dataclass
class TimelineBuildSettings:
    patients_per_shard: int = checked(2000, ge=1)  # memory per shard is bounded by this, not by the cohort size
    memory_limit: str = "4GB"  # DuckDB's memory limit; it spills to disk beyond it
    threads: int = checked(0, ge=0)  # 0: DuckDB's default (all cores)
    keep_staging: bool = False  # keep the staged Parquet tables after the build
    grouping: EventGrouping = EventGrouping.runs
    # your d_ccs_diagnoses.csv, d_ccs_procedures.csv, d_atc_prescriptions.csv; None: the licence-free defaults
    mapping_dir: str | None = None


@dataclass
class SyntheticCohortSettings:
    n_patients: int = checked(2000, ge=1)
    seed: int = 0


@dataclass
class SplitRatios:
    train: float = checked(0.8, ge=0)
    val: float = checked(0.1, ge=0)
    test: float = checked(0.1, ge=0)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        total = sum(float(node[s]) for s in SPLITS)
        if math.isfinite(total) and abs(total - 1) > 1e-6:
            shares = ", ".join(f"{s} {node[s]:g}" for s in SPLITS)
            return [f"{at}: the split shares must sum to 1, got {total:g} ({shares})"]
        return []


@dataclass
class SelectionSettings:
    force_number: float | None = checked(None, gt=0)  # >= 1: that many per task; < 1: that share of each count
    min_events: int = checked(10, ge=0)  # kept: samples with min_events < context events < max_events
    max_events: int = checked(100, ge=1)
    balance: bool = True  # risk: an equal count per label; chartevents / emar / next_event: inverse frequency
    seed: int = 0
    split: SplitRatios = field(default_factory=SplitRatios)  # by patient

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        if node.max_events - node.min_events < 2:  # kept: min_events < context events < max_events
            return [
                f"{at}.min_events={node.min_events} must be below {at}.max_events={node.max_events} - 1: "
                "no sample could have a context strictly between them"
            ]
        return []


@dataclass
class SamplingParams:
    temperature: float = checked(0.0, ge=0)  # 0: greedy
    top_p: float = checked(1.0, gt=0, le=1)
    top_k: int = checked(0, ge=0)  # 0: off
    max_tokens: int = checked(2048, ge=1)
    seed: int = 0
    choices: tuple[str, ...] | None = None  # one answer token among these words' first tokens (yes, no)


class Pipeline(str, Enum):
    """What ``synthesize.py`` produces."""

    timelines = "timelines"  # (synthetic cohort if configured) -> per-patient timelines
    index = "index"  # type: ignore[assignment]  # timelines -> the sample index of the task mix's tasks (shadows str.index)
    instructions = "instructions"  # timelines -> sample index -> selection -> EHR-Ins / EHR-Bench JSONL
    reasoning = "reasoning"  # instructions -> concepts -> co-occurrence -> thinking graphs -> chains


@dataclass
class ModulesConfig:
    """Directories of the MIMIC-IV modules; ``ed`` and ``note`` are separate releases and optional."""

    hosp: str = MISSING
    icu: str = MISSING
    ed: str | None = MISSING  # null: no MIMIC-IV-ED
    note: str | None = MISSING  # null: no MIMIC-IV-Note


class OnDuplicates(str, Enum):
    """Rows repeating a primary key (hadm_id of admissions, stay_id of icustays / edstays, subject_id of patients)."""

    error = "error"  # stop, naming the file and lines
    drop = "drop"  # keep the first row of each key (counted in the build summary)
    keep = "keep"  # use them as they are (counted): every record joined to them is repeated


class EmptyTables(str, Enum):
    """A required table whose file has a header and no rows (patients and admissions: always an error)."""

    error = "error"
    warn = "warn"  # its events are absent (a small synthetic cohort may have no procedures)


@dataclass
class DataConfig:
    name: str = MISSING  # names the derived artefacts (timelines, ...) of this data source
    root: str = MISSING
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    synthetic: SyntheticCohortSettings | None = None  # set: generate the cohort at ``root`` first
    on_duplicates: OnDuplicates = OnDuplicates.error
    empty_tables: EmptyTables = EmptyTables.error


@dataclass
class TimelinesConfig(TimelineBuildSettings):
    dir: str = MISSING


class AttentionImplementation(str, Enum):
    auto = "auto"  # flash_attention_2 on a GPU when flash-attn is installed, else sdpa
    sdpa = "sdpa"
    eager = "eager"
    flash_attention_2 = "flash_attention_2"
    flex_attention = "flex_attention"  # PyTorch FlexAttention: block-sparse masks for packed sequences


class WeightsDtype(str, Enum):
    float32 = "float32"  # master weights for mixed precision (hardware.precision) and CPU training
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class ArchitectureConfig:
    """A Qwen3-architecture shape: the embedded model's, or any model initialised at random (``path: null``).
    The shape has no default: each model option states its own."""

    hidden_size: int = checked(MISSING, ge=1)
    num_hidden_layers: int = checked(MISSING, ge=1)
    num_attention_heads: int = checked(MISSING, ge=1)
    num_key_value_heads: int = checked(MISSING, ge=1)
    head_dim: int = checked(MISSING, ge=1)
    intermediate_size: int = checked(MISSING, ge=1)
    max_position_embeddings: int = checked(MISSING, ge=1)
    rope_theta: float = checked(1_000_000.0, gt=0)
    tie_word_embeddings: bool = True
    vocab_size: int | None = checked(None, ge=1)  # None: the tokenizer's size

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        heads, kv = node.num_attention_heads, node.num_key_value_heads
        if heads >= 1 and kv >= 1 and heads % kv:
            return [f"{at}.num_attention_heads={heads} must be a multiple of {at}.num_key_value_heads={kv}"]
        return []


@dataclass
class ModelConfig:
    """The model: where its weights come from, how it is loaded, and how prompts are built for it."""

    name: str = MISSING
    path: str | None = None  # local directory or hub id; None: random init of ``architecture`` (the embedded model)
    embedded_dir: str | None = None  # where the embedded model and its tokenizer are written
    architecture: ArchitectureConfig | None = None
    dtype: WeightsDtype = WeightsDtype.float32
    attn_implementation: AttentionImplementation = AttentionImplementation.auto
    thinking_switch: ThinkingSwitch = ThinkingSwitch.enable_thinking
    max_input_tokens: int = checked(MISSING, ge=1)  # prompt budget: the EHR is cut from its oldest events to fit
    context_length: int = checked(MISSING, ge=1)  # longest training sequence (prompt + answer)
    tokenizer_vocab_size: int = checked(4096, ge=300)  # embedded tokenizer only (256 bytes, specials, merges)
    tokenizer_patients: int = checked(500, ge=1)  # embedded tokenizer: patients whose markdown it is trained on


@dataclass
class TaskMixConfig:
    """A data config: how many samples of which task (-1 or 0: all), from which splits."""

    name: str = MISSING
    tasks: dict[str, int] = MISSING  # {task: count}; {} with ``file`` or ``released``
    file: str | None = None  # a JSON data config {"<task>": n}; replaces ``tasks`` when set
    released: str | None = None  # released EHR-Ins items (file or folder): the instruction data, split by patient
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    split_factor: dict[str, float] = field(default_factory=dict)  # a task's count times this per split (default 1)
    min_events: int | None = checked(None, ge=0)  # this mix's context filter minimum (None: selection.min_events)
    split: SplitRatios | None = None  # this mix's patient split (None: selection.split)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        found = [
            f"{at}.tasks.{task}={n}: a count must be >= 1, or -1 / 0 for all of the task's samples"
            for task, n in (node.tasks or {}).items()
            if n < -1
        ]
        for split, factor in (node.split_factor or {}).items():
            if split not in SPLITS:
                found.append(f"{at}.split_factor.{split}: unknown split; {did_you_mean(split, SPLITS)}")
            elif not factor >= 0:
                found.append(f"{at}.split_factor.{split}={factor}: must be >= 0")
        found += [p for s in node.splits for p in known_split(f"{at}.splits", s)]
        return found


@dataclass
class TasksConfig:
    """User-defined tasks, with the keys of ``ehrr1/tasks/catalogue.yaml``: {decision: {...}, risk: {...}}."""

    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexConfig:
    dir: str = MISSING
    num_workers: int = checked(2, ge=1)  # processes over timeline shards (groups of tasks on a one-shard cohort)


@dataclass
class ExportConfig:
    dir: str = MISSING
    num_workers: int = checked(2, ge=1)  # processes over work units (prompt rendering and token counting)
    unit_patients: int = checked(100, ge=1)  # patients per work unit; the output does not depend on it


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
    set_f1 = "set_f1"  # the reference's GRPO reward: F1 of the answer lines for every decision task


@dataclass
class RewardWeights:
    answer: float = 1.0  # the answer after </think> scored by ``answer_metric`` (0 without one)
    format: float = 1.0  # +1 / -1: the three reasoning sections, no repeated lines
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
    group_size: int = checked(8, ge=2)  # completions per prompt; one alone has no group to be compared with
    num_iterations: int = checked(1, ge=1)  # policy updates per generation batch (old log-probs cached)
    max_completion_tokens: int = checked(1024, ge=1)
    temperature: float = checked(0.7, gt=0)  # a group needs sampled, different completions
    top_p: float = checked(0.95, gt=0, le=1)
    top_k: int = checked(20, ge=0)
    epsilon_low: float = checked(0.2, ge=0)
    epsilon_high: float = checked(0.2, ge=0)
    beta: float = checked(0.0, ge=0)  # KL (k3) to the frozen reference; 0: no reference model
    lr: float | None = checked(None, gt=0)  # None: stage.optim.lr; GRPO usually wants a far smaller step than SFT
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

    name: str = MISSING
    objective: Objective = Objective.sft
    data: str = MISSING  # directory holding train.jsonl and val.jsonl (chat records)
    init: str | None = None  # weights to start from; None: the previous stage's, or the model's
    epochs: int = checked(1, ge=1)
    max_steps: int = checked(-1, ge=1, also=(-1,))  # optimiser steps; -1: as many as the epochs take
    micro_batch_size: int = checked(1, ge=1)  # sequences per forward pass (packed: bins of max_seq_len tokens)
    grad_accum: int = checked(16, ge=1)  # micro-batches per optimiser step
    max_seq_len: int | None = checked(None, ge=1)  # None: model.context_length; longer examples are left out
    packing: Toggle = Toggle.auto  # several examples per sequence, each attending only to itself; auto: with
    # varlen attention (flash_attention_2), where it saves compute; else length-grouped padding
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


class LoggerKind(str, Enum):
    none = "none"
    csv = "csv"
    wandb = "wandb"


class WandbMode(str, Enum):
    auto = "auto"  # online with an API key (WANDB_API_KEY or a wandb login), else offline
    online = "online"
    offline = "offline"


@dataclass
class LoggerConfig:
    """Metrics logging (``conf/logger/``). Only numbers and the config are logged, never EHR text."""

    kind: LoggerKind = MISSING
    project: str = "ehrr1"
    entity: str | None = None
    mode: WandbMode = WandbMode.auto
    tags: list[str] = field(default_factory=list)


@dataclass
class BackendConfig:
    """A generation backend (``conf/backend/``): how prompts become generations."""

    name: str = MISSING  # hf, vllm, openai, tabular
    device: str = "auto"  # hf: auto (a GPU when there is one), cpu, cuda, cuda:1, ...
    base_url: str = "http://localhost:8000/v1"  # openai: the server
    served_model: str | None = None  # openai: the model name the server knows (None: the model path)
    tokenizer: str | None = None  # openai: where the chat template comes from (None: the model path)
    concurrency: int = checked(8, ge=1)  # openai: requests in flight
    timeout_s: float = checked(300.0, gt=0)
    max_retries: int = checked(4, ge=0)  # openai: on connection errors, 429 and 5xx, with exponential back-off
    backoff_s: float = checked(1.0, ge=0)
    allow_remote: bool = False  # openai: a server not on this machine receives EHR text: opt in explicitly
    api_key_env: str = "OPENAI_API_KEY"
    tensor_parallel_size: int = checked(1, ge=1)  # vllm: GPUs per replica
    data_parallel_size: int = checked(1, ge=1)  # vllm: replicas, each its own process and GPUs
    max_model_len: int | None = checked(None, ge=1)  # vllm: None: what the model's config allows
    gpu_memory_utilization: float = checked(0.9, gt=0, le=1)  # vllm: share of each GPU for weights and KV cache
    enable_prefix_caching: bool = True  # vllm: samples sharing a patient context reuse its cache
    enforce_eager: bool = False  # vllm: skip CUDA graph capture (faster start, slower decoding)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        if at != "backend" or node.name != "openai" or node.allow_remote:  # the writer's: synthesis.allow_remote
            return []
        refusal = remote_refusal(node.base_url, "backend.allow_remote")
        return [refusal] if refusal else []


class WriterKind(str, Enum):
    template = "template"  # verbalise the graph (deterministic, no model)
    llm = "llm"  # a model writes the chain through a generation backend


class ChainPrompt(str, Enum):
    ehrr1 = "ehrr1"  # short: record and question, answer, graph paths, the three sections
    reference = "reference"  # the reference's knowledge-grounded prompt (reasoning_generation_new.py)


class PlainRecords(str, Enum):
    none = "none"  # the reasoning data holds chain records only
    unchained = "unchained"  # + the plain answer of every record without a kept chain (risk tasks included)
    all = "all"  # + the plain answer of every record (as the reference's stage 2 mixes /think and /no_think)


class KeepChains(str, Enum):
    first = "first"  # one training record per sample: its first chain that passes the filter
    all = "all"  # a record per passing chain (same id, ``chain`` numbers them)


@dataclass
class ExtractorConfig:
    name: str = "dictionary"  # dictionary (licence-free) or quickumls (your UMLS installation)
    quickumls_path: str | None = None  # quickumls: the QuickUMLS index built from your UMLS release
    threshold: float = checked(0.9, gt=0, le=1)  # quickumls: minimum similarity
    free_text: bool = True  # quickumls: also the terms of free text (radiology and discharge notes, admission info)


class TopKPer(str, Enum):
    target = "target"  # top_k pairs per target concept over the training split
    sample = "sample"  # the reference's: per target, among each sample's own history concepts


class SupportOn(str, Enum):
    pair = "pair"  # min_support counts the samples holding both concepts
    history = "history"  # the reference's: the samples holding the history concept


@dataclass
class CooccurrenceConfig:
    min_support: int = checked(5, ge=1)  # training samples holding both concepts (support_on=history: the history)
    support_on: SupportOn = SupportOn.history
    min_lift: float = checked(5.0, ge=0)  # keep pairs with lift above this
    top_k: int = checked(20, ge=1)  # pairs kept per target concept
    top_k_per: TopKPer = TopKPer.sample


@dataclass
class GraphConfig:
    relations: list[str] = field(default_factory=lambda: ["cooccurrence", "hierarchy"])  # and/or umls
    umls_mrrel: str | None = None  # umls: path to MRREL.RRF of your UMLS release
    umls_relations: list[str] = field(default_factory=lambda: ["RB", "RN", "RO", "PAR", "CHD"])
    max_hops: int = checked(2, ge=1)  # path length bound of the search from a target to the history
    max_paths: int = checked(3, ge=1)  # paths kept per target concept
    filter_nograph: bool = True  # drop samples whose targets reach no history concept


@dataclass
class WriterConfig:
    kind: WriterKind = WriterKind.template
    model_path: str | None = None  # llm: the writing model (HF dir / hub id / served name); None: model.path
    # llm: hf, vllm or openai (backend.base_url=...; a server off this machine needs synthesis.allow_remote)
    backend: BackendConfig = field(default_factory=lambda: BackendConfig(name="hf"))
    max_tokens: int = checked(1024, ge=1)
    temperature: float = checked(0.5, ge=0)  # the reference's
    top_p: float = checked(0.95, gt=0, le=1)
    batch_size: int = checked(32, ge=1)  # chains per generate call (each batch is saved before the next)
    prompt: ChainPrompt = ChainPrompt.reference
    # llm: chains drawn per sample (seed, seed + 1, ...); the reference asks GPT-4o for 3, keeps the first to pass
    chains_per_sample: int = checked(3, ge=1)
    keep: KeepChains = KeepChains.first


class ChainFilter(str, Enum):
    ehrr1 = "ehrr1"  # sections present and in order, no repeated line, final results recall the answer
    reference = "reference"  # the reference's: >= share of labels after "Final Results", no "ground truth"


@dataclass
class SynthesisConfig:
    """Reasoning synthesis (``synthesize.py pipeline=reasoning``, ``conf/synthesis/``): concepts ->
    co-occurrence (training split) -> thinking graph per sample -> chain (## Extraction / ## Reasoning /
    ## Final Results) -> filter. The defaults are the paper's: support >= 5, lift > 5, top 20 per target
    concept, the reference's chain prompt and filter."""

    dir: str = MISSING
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    cooccurrence: CooccurrenceConfig = field(default_factory=CooccurrenceConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    min_answer_recall: float = checked(0.7, ge=0, le=1)  # decision chains: share of the answer results must name
    chain_filter: ChainFilter = ChainFilter.reference
    decision_only: bool = True  # chains for decision tasks only (the reference); risk records get none
    plain: PlainRecords = PlainRecords.none  # instruction records written beside the chains, answered directly
    allow_remote: bool = False  # the llm writer may send EHR text to a server not on this machine
    released: str | None = None  # released EHR-Ins reasoning items (file / folder) instead of synthesis
    num_workers: int = checked(2, ge=1)  # processes over chunks (extraction; template writing)
    chunk_size: int = checked(2000, ge=1)  # records per chunk: the unit of caching and resume
    seed: int = 0

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        found = [p for s in node.splits for p in known_split(f"{at}.splits", s)]
        writer = node.writer
        if writer.kind == WriterKind.llm.value and writer.backend.name == "openai" and not node.allow_remote:
            refusal = remote_refusal(writer.backend.base_url, f"{at}.allow_remote")
            found += [refusal] if refusal else []
        return found


@dataclass
class MarkdownConfig:
    style: MarkdownStyle = MarkdownStyle.reference  # reference: the EHR-R1 reference's text; clean: ehrr1's own


@dataclass
class DataPipelineConfig:
    """What ``synthesize.py`` and ``train.py`` share: the data, the model's prompts and the task mix."""

    data_root: str = "./data"  # every derived artefact lives under here
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    task_mix: TaskMixConfig = MISSING
    tasks: TasksConfig = field(default_factory=TasksConfig)
    timelines: TimelinesConfig = field(default_factory=TimelinesConfig)
    markdown: MarkdownConfig = field(default_factory=MarkdownConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    export: ExportConfig = field(default_factory=ExportConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    progress: bool = True
    debug: bool = False  # user errors show their traceback too (as HYDRA_FULL_ERROR=1 does)


@dataclass
class SynthesizeConfig(DataPipelineConfig):
    pipeline: Pipeline = Pipeline.instructions  # timelines / index: stop after them; reasoning: stage 2's chains
    # [first, stop): this job indexes / exports only these timeline shards (one job of an array, e.g. on
    # SLURM) and leaves the join to a run without it; None: all shards, then the join
    shards: list[int] | None = None


@dataclass
class AfterTrainingConfig:
    """The evaluation ``train.py`` runs on the curriculum's last trained stage (``evaluate.py`` settings)."""

    enabled: bool = True
    split: str = "test"
    limit: int | None = checked(None, ge=1)  # samples per task
    batch_size: int = checked(8, ge=1)
    max_tokens: int = checked(64, ge=1)
    thinking: bool = False

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        return known_split(f"{at}.split", node.split)


@dataclass
class TrainConfig(DataPipelineConfig):
    stage: StageConfig = MISSING  # one stage, or ``curriculum``: the stages of ``curriculum`` in order
    # stage=curriculum runs these in order, each from the previous one's weights, skipping those without data
    curriculum: list[str] = field(default_factory=lambda: ["domain_adaptation", "reasoning", "rl"])
    stages: dict[str, StageConfig] = field(default_factory=dict)  # filled at start: the curriculum's stages
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = 0
    resume: str | None = None  # an earlier run directory (outputs/train/<time>): continue it where it stopped
    run_dir: str | None = None  # where the run's stages go; None: Hydra's output directory
    evaluate: AfterTrainingConfig = field(default_factory=AfterTrainingConfig)


class BenchSource(str, Enum):
    built = "built"  # the EHR-Bench ehrr1 builds from the data source (task_mix, split)
    released = "released"  # the released EHR-Bench files (BlueZeros/EHR-Bench, credentialed)


@dataclass
class BenchConfig:
    """Which benchmark ``evaluate.py`` scores."""

    source: BenchSource = MISSING
    path: str | None = None  # released: a .jsonl / .json / .parquet file, a folder of them, or a saved dataset
    train_path: str | None = None  # released EHR-Ins training items: the most-frequent-answer baseline


@dataclass
class TabularSettings:
    """The tabular baseline (``tabular.*``): per task, logistic regressions on concept counts."""

    max_train_per_task: int = checked(5000, ge=1)  # training samples per task (the first in file order)
    max_labels: int = checked(200, ge=1)  # decision tasks: answers of the vocabulary modelled, the most frequent
    C: float = checked(1.0, gt=0)  # inverse regularisation strength of every logistic regression
    seed: int = 0


class Baseline(str, Enum):
    most_frequent = "most_frequent"  # always the training split's most frequent answer
    tabular = "tabular"  # scikit-learn models on concept counts of the same samples (evaluation/tabular.py)


@dataclass
class EvaluateConfig(DataPipelineConfig):
    bench: BenchConfig = MISSING
    backend: BackendConfig = MISSING
    sampling: SamplingParams = field(default_factory=SamplingParams)
    thinking: bool = False  # reasoning on (the model thinks first) or off (a closed think block)
    risk_one_token: bool = True  # risk tasks: thinking off, one token among yes / no, P(yes) for AUROC (the reference)
    candidates_prompt: bool = False  # baseline models: the reference's candidate list and answer rules
    # longer prompts keep their last tokens, as the reference cuts (it used min(model limit, 16000) - max new tokens)
    max_prompt_tokens: int | None = checked(None, ge=1)
    # prompts per generate call; None: the backend's (hf 8, openai 64, vllm 1024)
    batch_size: int | None = checked(None, ge=1)
    limit: int | None = checked(None, ge=1)  # samples per task; None: all
    only_tasks: list[str] | None = None  # e.g. [labevents, Inpatient_Mortality]; None: every task of the split
    split: str = "test"  # EHR-Bench; val for model selection
    train_run: str | None = None  # a train.py run directory: evaluate its last trained stage
    output_dir: str | None = None  # results.jsonl (resumable) and reports; None: outputs/evaluate/<model>/<mix>/<split>
    bootstrap: int = checked(1000, ge=1)  # resamples for the 95 % intervals
    seed: int = 0
    logger: LoggerConfig = MISSING
    log_outputs: bool = False  # per-sample model outputs to W&B: they may quote patient data, so opt in
    baselines: list[Baseline] = field(default_factory=lambda: [Baseline.most_frequent, Baseline.tabular])
    tabular: TabularSettings = field(default_factory=TabularSettings)  # the tabular baseline's models

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        found = known_split("split", node.split)
        if node.train_run and node.model.path:
            found.append(
                f"train_run={node.train_run} and model.path={node.model.path} both name the weights to evaluate: "
                "set one of them"
            )
        return found


def settings_of(cls: type[T], node: DictConfig) -> T:
    """The ``cls`` dataclass (nested ones included) from the matching keys of a config node."""
    subset = {f.name: node[f.name] for f in fields(cast(Any, cls)) if f.name in node}
    return cast(T, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), subset)))


def validate(cfg: DictConfig) -> None:
    """Check every setting against its range and every node's cross-field rules, before any work starts."""
    found = list(_problems(cfg, ""))
    if len(found) == 1:
        raise ConfigError(f"invalid setting: {found[0]}")
    if found:
        raise ConfigError(f"{len(found)} invalid settings:\n  " + "\n  ".join(found))


def _problems(node: DictConfig, at: str) -> Iterator[str]:
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        for f in fields(schema):
            bounds = f.metadata.get("range")
            value = _value(node, f.name)
            if bounds is not None and isinstance(value, int | float) and not bounds.holds(value):
                yield f"{at}{f.name} must be {bounds.expected()}, got {value}"
        cross = getattr(schema, "problems", None)
        if cross is not None:
            with contextlib.suppress(OmegaConfBaseException):  # unresolved or missing: checked where it is used
                yield from cross(node, at.rstrip("."))
    for key in map(str, node):
        child = _value(node, key, raw=True)
        if not isinstance(child, DictConfig | ListConfig) or child._is_none() or child._is_missing():
            continue
        if isinstance(child, DictConfig):
            yield from _problems(child, f"{at}{key}.")
        else:
            for i in range(len(child)):
                item = child._get_node(i)
                if isinstance(item, DictConfig) and not item._is_none():
                    yield from _problems(item, f"{at}{key}[{i}].")


def _value(node: DictConfig, key: str, raw: bool = False) -> Any:
    """``node[key]`` resolved, or None where it is missing or cannot be resolved yet (``${now:...}``)."""
    try:
        return node._get_node(key) if raw else OmegaConf.select(node, key, throw_on_missing=False)
    except OmegaConfBaseException:
        return None


def _copy_config_store_as_itself() -> None:
    """Make a deep copy of Hydra's ``ConfigStore`` singleton the singleton itself.

    Hydra 1.3 deep-copies its config repository, and with it the store and every schema in it, once per
    config group that ``--help`` lists: about 100 copies, 2 of the 2.7 s ``--help`` took here. Nothing
    writes to those copies (re-initialising a copy swaps its list of sources), and a copied singleton is
    a stale one: Hydra 1.4 reads the live store instead (facebookresearch/hydra#2928), as this does.
    """
    if "__deepcopy__" not in vars(ConfigStore):
        ConfigStore.__deepcopy__ = lambda self, memo: self  # type: ignore[attr-defined]


SCHEMAS = {"synthesize_schema": SynthesizeConfig, "train_schema": TrainConfig, "evaluate_schema": EvaluateConfig}


def register_configs(*names: str) -> None:
    """Store the schemas ``names`` (all when none) in Hydra's config store."""
    _copy_config_store_as_itself()
    cs = ConfigStore.instance()
    for name in names or SCHEMAS:
        cs.store(name=name, node=SCHEMAS[name])
