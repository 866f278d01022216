"""Structured configs behind the YAML in ``conf/``: typos and wrong types fail at start-up.

One module per config group (``data``, ``task_mix``, ``model``, ``stage``, ``hardware``, ``logger``,
``backend``, ``synthesis``, ``bench``), the entry points' schemas in ``runs`` and the checks in ``checks``.
Each dataclass mirrors one config node; Hydra merges the YAML into them in struct mode, so an unknown
key is rejected with the valid keys listed, and an unknown group option lists the available ones.

The settings that implementation modules take (timeline build, cohort, selection, sampling, ...) live here
too: the schema is a leaf that imports no implementation, so ``--help`` and ``--cfg job`` answer at once.

Values are checked here as well: a field made with :func:`checked` carries its range, a dataclass's
``problems(node, at)`` its cross-field rules, and :func:`validate` walks a composed config and reports
every problem in one message before any work starts.
"""

from __future__ import annotations

from ehrr1.config.backend import BackendConfig, SamplingParams
from ehrr1.config.bench import Baseline, BenchConfig, BenchSource, TabularSettings
from ehrr1.config.checks import (
    LOCAL_HOSTS,
    SPLITS,
    Range,
    checked,
    did_you_mean,
    known_split,
    remote_refusal,
    settings_of,
    validate,
)
from ehrr1.config.data import (
    DataConfig,
    EmptyTables,
    EventGrouping,
    MarkdownConfig,
    MarkdownStyle,
    ModulesConfig,
    OnDuplicates,
    SyntheticCohortSettings,
    TimelineBuildSettings,
    TimelinesConfig,
)
from ehrr1.config.hardware import (
    ACCELERATORS,
    PRECISIONS,
    DeepSpeedConfig,
    FSDPConfig,
    FSDPSharding,
    FSDPStateDict,
    HardwareConfig,
    Strategy,
)
from ehrr1.config.logger import LoggerConfig, LoggerKind, WandbMode
from ehrr1.config.model import ArchitectureConfig, AttentionImplementation, ModelConfig, ThinkingSwitch, WeightsDtype
from ehrr1.config.runs import (
    SCHEMAS,
    AfterTrainingConfig,
    DataPipelineConfig,
    EvaluateConfig,
    Pipeline,
    SynthesizeConfig,
    TrainConfig,
    register_configs,
)
from ehrr1.config.stage import (
    AnswerMetric,
    GRPOConfig,
    LoraConfig,
    LossOn,
    LossPer,
    LossType,
    Objective,
    OptimConfig,
    RewardScale,
    RewardWeights,
    RolloutBackend,
    ScheduleConfig,
    Scheduler,
    StageConfig,
    Toggle,
)
from ehrr1.config.synthesis import (
    ChainFilter,
    ChainPrompt,
    CooccurrenceConfig,
    ExtractorConfig,
    GraphConfig,
    KeepChains,
    PlainRecords,
    SupportOn,
    SynthesisConfig,
    TopKPer,
    WriterConfig,
    WriterKind,
)
from ehrr1.config.task_mix import ExportConfig, IndexConfig, SelectionSettings, SplitRatios, TaskMixConfig, TasksConfig

__all__ = [
    "ACCELERATORS",
    "AfterTrainingConfig",
    "AnswerMetric",
    "ArchitectureConfig",
    "AttentionImplementation",
    "BackendConfig",
    "Baseline",
    "BenchConfig",
    "BenchSource",
    "ChainFilter",
    "ChainPrompt",
    "CooccurrenceConfig",
    "DataConfig",
    "DataPipelineConfig",
    "DeepSpeedConfig",
    "EmptyTables",
    "EvaluateConfig",
    "EventGrouping",
    "ExportConfig",
    "ExtractorConfig",
    "FSDPConfig",
    "FSDPSharding",
    "FSDPStateDict",
    "GRPOConfig",
    "GraphConfig",
    "HardwareConfig",
    "IndexConfig",
    "KeepChains",
    "LOCAL_HOSTS",
    "LoggerConfig",
    "LoggerKind",
    "LoraConfig",
    "LossOn",
    "LossPer",
    "LossType",
    "MarkdownConfig",
    "MarkdownStyle",
    "ModelConfig",
    "ModulesConfig",
    "Objective",
    "OnDuplicates",
    "OptimConfig",
    "PRECISIONS",
    "Pipeline",
    "PlainRecords",
    "Range",
    "RewardScale",
    "RewardWeights",
    "RolloutBackend",
    "SCHEMAS",
    "SPLITS",
    "SamplingParams",
    "ScheduleConfig",
    "Scheduler",
    "SelectionSettings",
    "SplitRatios",
    "StageConfig",
    "Strategy",
    "SupportOn",
    "SynthesisConfig",
    "SynthesizeConfig",
    "SyntheticCohortSettings",
    "TabularSettings",
    "TaskMixConfig",
    "TasksConfig",
    "ThinkingSwitch",
    "TimelineBuildSettings",
    "TimelinesConfig",
    "Toggle",
    "TopKPer",
    "TrainConfig",
    "WandbMode",
    "WeightsDtype",
    "WriterConfig",
    "WriterKind",
    "checked",
    "did_you_mean",
    "known_split",
    "register_configs",
    "remote_refusal",
    "settings_of",
    "validate",
]
