"""Structured configs behind the YAML in ``conf/``: typos and wrong types fail at start-up.

Each dataclass mirrors one config node; Hydra merges the YAML into them in struct mode, so an unknown
key is rejected with the valid keys listed, and an unknown group option lists the available ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ehrr1.data.build import TimelineBuildSettings
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings
from ehrr1.tasks.prompt import ThinkingSwitch
from ehrr1.tasks.select import SelectionSettings


class Pipeline(str, Enum):
    """What ``synthesize.py`` produces."""

    timelines = "timelines"  # (synthetic cohort if configured) -> per-patient timelines
    instructions = "instructions"  # timelines -> sample index -> selection -> EHR-Ins / EHR-Bench JSONL


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


@dataclass
class ModelConfig:
    """The model a prompt is built for: its tokenizer measures the context budget."""

    name: str = MISSING
    path: str | None = None  # local directory or hub id; None: the embedded model built from the data
    embedded_dir: str | None = None  # where the embedded model (and its tokenizer) is written
    thinking_switch: ThinkingSwitch = ThinkingSwitch.enable_thinking
    max_input_tokens: int = 8192
    tokenizer_vocab_size: int = 4096  # embedded tokenizer only
    tokenizer_patients: int = 500  # embedded tokenizer: patients whose markdown it is trained on


@dataclass
class TaskMixConfig:
    """A data config: how many samples of which task (-1 or 0: all), from which splits."""

    name: str = MISSING
    tasks: dict[str, int] = field(default_factory=dict)
    file: str | None = None  # a JSON data config {"<task>": n}; replaces ``tasks`` when set
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])


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
    num_workers: int = 2  # processes over timeline shards (prompt rendering and token counting)


@dataclass
class SynthesizeConfig:
    pipeline: Pipeline = Pipeline.instructions
    data_root: str = "./data"
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    task_mix: TaskMixConfig = MISSING
    tasks: TasksConfig = field(default_factory=TasksConfig)
    timelines: TimelinesConfig = field(default_factory=TimelinesConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    export: ExportConfig = field(default_factory=ExportConfig)
    progress: bool = True


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="synthesize_schema", node=SynthesizeConfig)
