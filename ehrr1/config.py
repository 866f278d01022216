"""Structured configs behind the YAML in ``conf/``: typos and wrong types fail at start-up.

Each dataclass mirrors one config node; Hydra merges the YAML into them in struct mode, so an unknown
key is rejected with the valid keys listed, and an unknown group option lists the available ones.

The settings that implementation modules take (timeline build, cohort, selection, sampling, ...) live here
too: the schema is a leaf that imports no implementation, so ``--help`` and ``--cfg job`` answer at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

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
    patients_per_shard: int = 2000
    memory_limit: str = "4GB"
    threads: int = 0  # 0: DuckDB's default (all cores)
    keep_staging: bool = False
    grouping: EventGrouping = EventGrouping.runs
    mapping_dir: str | None = None  # d_ccs_diagnoses / d_ccs_procedures / d_atc_prescriptions CSVs


@dataclass
class SyntheticCohortSettings:
    n_patients: int = 2000
    seed: int = 0


@dataclass
class SplitRatios:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclass
class SelectionSettings:
    force_number: float | None = None
    min_events: int = 10
    max_events: int = 100
    balance: bool = True
    seed: int = 0
    split: SplitRatios = field(default_factory=SplitRatios)


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_tokens: int = 2048
    seed: int = 0
    choices: tuple[str, ...] | None = None  # one answer token among these words' first tokens (yes, no)


class Pipeline(str, Enum):
    """What ``synthesize.py`` produces."""

    timelines = "timelines"  # (synthetic cohort if configured) -> per-patient timelines
    index = "index"  # timelines -> the sample index of the task mix's tasks
    instructions = "instructions"  # timelines -> sample index -> selection -> EHR-Ins / EHR-Bench JSONL
    reasoning = "reasoning"  # instructions -> concepts -> co-occurrence -> thinking graphs -> chains


@dataclass
class ModulesConfig:
    """Directories of the MIMIC-IV modules; ``ed`` and ``note`` are separate releases and optional."""

    hosp: str = MISSING
    icu: str = MISSING
    ed: str | None = None
    note: str | None = None


@dataclass
class DataConfig:
    name: str = MISSING  # names the derived artefacts (timelines, ...) of this data source
    root: str = MISSING
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    synthetic: SyntheticCohortSettings | None = None  # set: generate the cohort at ``root`` first


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
    """A Qwen3-architecture shape: the embedded model's, or any model initialised at random (``path: null``)."""

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_position_embeddings: int = 4096
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = True
    vocab_size: int | None = None  # None: the tokenizer's size


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
    max_input_tokens: int = 8192  # prompt budget: the EHR is cut from its oldest events to fit
    context_length: int = 8192  # longest training sequence (prompt + answer)
    tokenizer_vocab_size: int = 4096  # embedded tokenizer only
    tokenizer_patients: int = 500  # embedded tokenizer: patients whose markdown it is trained on


@dataclass
class TaskMixConfig:
    """A data config: how many samples of which task (-1 or 0: all), from which splits."""

    name: str = MISSING
    tasks: dict[str, int] = field(default_factory=dict)
    file: str | None = None  # a JSON data config {"<task>": n}; replaces ``tasks`` when set
    released: str | None = None  # released EHR-Ins items (file or folder): the instruction data, split by patient
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    split_factor: dict[str, float] = field(default_factory=dict)  # a task's count times this per split (default 1)
    min_events: int | None = None  # this mix's context filter minimum (None: selection.min_events)


@dataclass
class TasksConfig:
    """User-defined tasks, with the keys of ``ehrr1/tasks/catalogue.yaml``: {decision: {...}, risk: {...}}."""

    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class IndexConfig:
    dir: str = MISSING
    num_workers: int = 2


@dataclass
class ExportConfig:
    dir: str = MISSING
    num_workers: int = 2  # processes over work units (prompt rendering and token counting)
    unit_patients: int = 100  # patients per work unit; the output does not depend on it


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
    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    scheduler: Scheduler = Scheduler.cosine
    warmup_ratio: float = 0.03  # share of the optimiser steps spent warming up linearly from 0
    min_lr_ratio: float = 0.0  # the learning rate the decay ends at, as a share of ``optim.lr``


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
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class GRPOConfig:
    """Curriculum stage 3 (``stage=rl``): GRPO with verifiable rewards."""

    prompts_per_step: int = 2  # prompts per generation batch (each sampled group_size times)
    group_size: int = 8
    num_iterations: int = 1  # policy updates per generation batch (old log-probs cached)
    max_completion_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 20
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.0  # KL (k3) to the frozen reference; 0: no reference model
    loss_type: LossType = LossType.grpo
    scale_rewards: RewardScale = RewardScale.group
    rewards: RewardWeights = field(default_factory=RewardWeights)
    rollout: RolloutBackend = RolloutBackend.hf
    vllm_gpu_memory_utilization: float = 0.3  # vllm rollouts share the GPU with training
    lora: LoraConfig = field(default_factory=LoraConfig)
    tasks: list[str] | None = None  # the RL task mix: these tasks of the stage's data; None: all
    max_prompts: int | None = None  # at most this many prompts (a seeded draw); None: all


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
    epochs: int = 1
    max_steps: int = -1  # optimiser steps; -1: as many as the epochs take
    micro_batch_size: int = 1  # sequences per forward pass (packed: bins of max_seq_len tokens)
    grad_accum: int = 1  # micro-batches per optimiser step
    max_seq_len: int | None = None  # None: model.context_length; longer examples are left out (counted)
    packing: Toggle = Toggle.auto  # several examples per sequence, each attending only to itself; auto: with
    # varlen attention (flash_attention_2), where it saves compute; else length-grouped padding
    loss_on: LossOn = LossOn.completion  # sft: which tokens are trained (the reference's SFT: all)
    answer_weight: float = 1.0  # sft, loss_on=all: an assistant token's loss weight (a prompt token's: 1)
    loss_per: LossPer = LossPer.token  # sft: answers weigh per token, or per example (answer_weight each)
    gradient_clip: float | None = 1.0
    gradient_checkpointing: bool = False
    liger: Toggle = Toggle.auto  # Liger kernels (fused RMSNorm, SwiGLU, RoPE, cross-entropy) on a GPU
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    val_every_n_steps: int | None = None  # None: at the end of each epoch
    val_max_batches: int | None = None  # None: the whole val split
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 50  # resumable Lightning checkpoints (the last one is kept)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)  # objective grpo only


class Strategy(str, Enum):
    auto = "auto"  # one device
    ddp = "ddp"
    fsdp = "fsdp"
    deepspeed_zero3 = "deepspeed_zero3"


@dataclass
class FSDPConfig:
    sharding_strategy: str = "FULL_SHARD"  # FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD
    cpu_offload: bool = False
    state_dict_type: str = "full"  # full: one checkpoint file; sharded: one per rank


@dataclass
class DeepSpeedConfig:
    offload_optimizer: bool = False
    offload_parameters: bool = False


@dataclass
class HardwareConfig:
    """Where training runs: Lightning accelerator, devices, strategy and precision (``conf/hardware/``)."""

    name: str = MISSING
    accelerator: str = "cpu"  # cpu, gpu, auto
    devices: int = 1  # per node; -1: all visible
    num_nodes: int = 1
    strategy: Strategy = Strategy.auto
    precision: str = "32-true"  # Lightning precision: 32-true, bf16-mixed, bf16-true, 16-mixed
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    dataloader_workers: int = 0


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

    kind: LoggerKind = LoggerKind.csv
    project: str = "ehrr1"
    entity: str | None = None
    mode: WandbMode = WandbMode.auto
    tags: list[str] = field(default_factory=list)


@dataclass
class BackendConfig:
    """A generation backend (``conf/backend/``): how prompts become generations."""

    name: str = "hf"
    device: str = "auto"  # hf: auto (a GPU when there is one), cpu, cuda, cuda:1, ...
    base_url: str = "http://localhost:8000/v1"  # openai: the server
    served_model: str | None = None  # openai: the model name the server knows (None: the model path)
    tokenizer: str | None = None  # openai: where the chat template comes from (None: the model path)
    concurrency: int = 8  # openai: requests in flight
    timeout_s: float = 300.0
    max_retries: int = 4  # openai: on connection errors, 429 and 5xx, with exponential back-off
    backoff_s: float = 1.0
    allow_remote: bool = False  # openai: a server not on this machine receives EHR text: opt in explicitly
    api_key_env: str = "OPENAI_API_KEY"
    tensor_parallel_size: int = 1  # vllm: GPUs per replica
    data_parallel_size: int = 1  # vllm: replicas, each its own process and GPUs
    max_model_len: int | None = None  # vllm: None: what the model's config allows
    gpu_memory_utilization: float = 0.9  # vllm: share of each GPU for weights and KV cache
    enable_prefix_caching: bool = True  # vllm: samples sharing a patient context reuse its cache
    enforce_eager: bool = False  # vllm: skip CUDA graph capture (faster start, slower decoding)


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
    threshold: float = 0.9  # quickumls: minimum similarity
    free_text: bool = True  # quickumls: also the terms of free text (radiology and discharge notes, admission info)


class TopKPer(str, Enum):
    target = "target"  # top_k pairs per target concept over the training split
    sample = "sample"  # the reference's: per target, among each sample's own history concepts


class SupportOn(str, Enum):
    pair = "pair"  # min_support counts the samples holding both concepts
    history = "history"  # the reference's: the samples holding the history concept


@dataclass
class CooccurrenceConfig:
    min_support: int = 5  # training samples holding both concepts (support_on=history: the history concept)
    support_on: SupportOn = SupportOn.pair
    min_lift: float = 5.0  # keep pairs with lift above this
    top_k: int = 20  # pairs kept per target concept
    top_k_per: TopKPer = TopKPer.target


@dataclass
class GraphConfig:
    relations: list[str] = field(default_factory=lambda: ["cooccurrence", "hierarchy"])  # and/or umls
    umls_mrrel: str | None = None  # umls: path to MRREL.RRF of your UMLS release
    umls_relations: list[str] = field(default_factory=lambda: ["RB", "RN", "RO", "PAR", "CHD"])
    max_hops: int = 2  # path length bound of the search from a target to the history
    max_paths: int = 3  # paths kept per target concept
    filter_nograph: bool = True  # drop samples whose targets reach no history concept


@dataclass
class WriterConfig:
    kind: WriterKind = WriterKind.template
    model_path: str | None = None  # llm: the writing model (HF dir / hub id / served name); None: model.path
    backend: BackendConfig = field(default_factory=BackendConfig)  # llm: hf, vllm or openai
    max_tokens: int = 1024
    temperature: float = 0.7
    top_p: float = 0.95
    batch_size: int = 32  # chains per generate call (each batch is saved before the next)
    prompt: ChainPrompt = ChainPrompt.ehrr1
    chains_per_sample: int = 1  # llm: chains drawn per sample (seed, seed + 1, ...); the reference draws 3
    keep: KeepChains = KeepChains.first


class ChainFilter(str, Enum):
    ehrr1 = "ehrr1"  # sections present and in order, no repeated line, final results recall the answer
    reference = "reference"  # the reference's: >= share of labels after "Final Results", no "ground truth"


@dataclass
class SynthesisConfig:
    """Reasoning synthesis (``synthesize.py pipeline=reasoning``, ``conf/synthesis/``)."""

    dir: str = "./data/reasoning"
    splits: list[str] = field(default_factory=lambda: ["train", "val"])
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    cooccurrence: CooccurrenceConfig = field(default_factory=CooccurrenceConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    min_answer_recall: float = 1.0  # decision chains: share of the answer their final results must name
    chain_filter: ChainFilter = ChainFilter.ehrr1
    decision_only: bool = False  # chains for decision tasks only (the reference); risk records get none
    plain: PlainRecords = PlainRecords.none  # instruction records written beside the chains, answered directly
    allow_remote: bool = False  # the llm writer may send EHR text to a server not on this machine
    released: str | None = None  # released EHR-Ins reasoning items (file / folder) instead of synthesis
    num_workers: int = 2  # processes over chunks (extraction; template writing)
    chunk_size: int = 2000  # records per chunk: the unit of caching and resume
    seed: int = 0


@dataclass
class MarkdownConfig:
    style: MarkdownStyle = MarkdownStyle.reference  # reference: the EHR-R1 reference's text; clean: ehrr1's own


@dataclass
class DataPipelineConfig:
    """What ``synthesize.py`` and ``train.py`` share: the data, the model's prompts and the task mix."""

    data_root: str = "./data"
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


@dataclass
class SynthesizeConfig(DataPipelineConfig):
    pipeline: Pipeline = Pipeline.instructions
    # [first, stop): this job indexes / exports only these timeline shards (one job of an array, e.g. on
    # SLURM) and leaves the join to a run without it; None: all shards, then the join
    shards: list[int] | None = None


@dataclass
class AfterTrainingConfig:
    """The evaluation ``train.py`` runs on the curriculum's last trained stage (``evaluate.py`` settings)."""

    enabled: bool = True
    split: str = "test"
    limit: int | None = None  # samples per task
    batch_size: int = 8
    max_tokens: int = 64
    thinking: bool = False


@dataclass
class TrainConfig(DataPipelineConfig):
    stage: StageConfig = MISSING  # one stage, or ``curriculum``: the stages of ``curriculum`` in order
    curriculum: list[str] = field(default_factory=lambda: ["domain_adaptation", "reasoning", "rl"])
    stages: dict[str, StageConfig] = field(default_factory=dict)  # filled at start: the curriculum's stages
    hardware: HardwareConfig = MISSING
    logger: LoggerConfig = MISSING
    seed: int = 0
    resume: str | None = None  # an earlier run directory: continue it with its stored config
    run_dir: str | None = None  # where the run's stages go; None: Hydra's output directory
    evaluate: AfterTrainingConfig = field(default_factory=AfterTrainingConfig)


class BenchSource(str, Enum):
    built = "built"  # the EHR-Bench ehrr1 builds from the data source (task_mix, split)
    released = "released"  # the released EHR-Bench files (BlueZeros/EHR-Bench, credentialed)


@dataclass
class BenchConfig:
    """Which benchmark ``evaluate.py`` scores."""

    source: BenchSource = BenchSource.built
    path: str | None = None  # released: a .jsonl / .json / .parquet file, a folder of them, or a saved dataset
    train_path: str | None = None  # released EHR-Ins training items: the most-frequent-answer baseline


@dataclass
class TabularSettings:
    """The tabular baseline (``tabular.*``): per task, logistic regressions on concept counts."""

    max_train_per_task: int = 5000  # training samples per task (the first in file order): bounded memory
    max_labels: int = 200  # decision tasks: answers of the vocabulary modelled, the most frequent
    C: float = 1.0  # inverse regularisation strength of every logistic regression
    seed: int = 0


class Baseline(str, Enum):
    most_frequent = "most_frequent"  # always the training split's most frequent answer
    tabular = "tabular"  # scikit-learn models on concept counts of the same samples (evaluation/tabular.py)


@dataclass
class EvaluateConfig(DataPipelineConfig):
    bench: BenchConfig = field(default_factory=BenchConfig)
    backend: BackendConfig = MISSING
    sampling: SamplingParams = field(default_factory=SamplingParams)
    thinking: bool = False  # reasoning on (the model thinks first) or off (a closed think block)
    risk_one_token: bool = True  # risk tasks: thinking off, one token among yes / no (the reference's protocol)
    candidates_prompt: bool = False  # baseline models: the reference's candidate list and answer rules
    max_prompt_tokens: int | None = None  # longer prompts keep their last tokens, as the reference cuts
    batch_size: int | None = None  # prompts per generate call; None: the backend's (hf 8, openai 64, vllm 1024)
    limit: int | None = None  # samples per task; None: all
    only_tasks: list[str] | None = None  # None: every task of the split
    split: str = "test"
    train_run: str | None = None  # a train.py run directory: evaluate its last trained stage
    output_dir: str | None = None  # None: outputs/evaluate/<model>/<task mix>/<split>
    bootstrap: int = 1000  # resamples for the 95 % intervals
    seed: int = 0
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(kind=LoggerKind.none))
    log_outputs: bool = False  # per-sample model outputs to W&B: they may quote patient data, so opt in
    baselines: list[Baseline] = field(default_factory=lambda: [Baseline.most_frequent, Baseline.tabular])
    tabular: TabularSettings = field(default_factory=TabularSettings)  # the tabular baseline's models


SCHEMAS = {"synthesize_schema": SynthesizeConfig, "train_schema": TrainConfig, "evaluate_schema": EvaluateConfig}


def register_configs(*names: str) -> None:
    """Store the schemas ``names`` (all when none) in Hydra's config store.

    An entry point stores only its own: Hydra copies the whole store for each config group it lists,
    so ``--help`` takes a third of the time.
    """
    cs = ConfigStore.instance()
    for name in names or SCHEMAS:
        cs.store(name=name, node=SCHEMAS[name])
