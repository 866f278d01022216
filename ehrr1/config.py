"""Structured configs behind the YAML in ``conf/``: typos and wrong types fail at start-up.

Each dataclass mirrors one config node; Hydra merges the YAML into them in struct mode, so an unknown
key is rejected with the valid keys listed, and an unknown group option lists the available ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ehrr1.data.build import TimelineBuildSettings
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings


class Pipeline(str, Enum):
    """What ``synthesize.py`` produces."""

    timelines = "timelines"  # (synthetic cohort if configured) -> per-patient timelines


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
class SynthesizeConfig:
    pipeline: Pipeline = Pipeline.timelines
    data_root: str = "./data"
    data: DataConfig = MISSING
    timelines: TimelinesConfig = field(default_factory=TimelinesConfig)
    progress: bool = True


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="synthesize_schema", node=SynthesizeConfig)
