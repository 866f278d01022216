"""``conf/logger/``: where metrics go (none, CSV, W&B); never EHR text. Each option names its schema, whose
``_target_`` is the tracker that ``ehrr1.tracking`` builds for a training stage and for an evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from ehrr1.config.checks import builds


class WandbMode(str, Enum):
    auto = "auto"  # online with an API key (WANDB_API_KEY or a wandb login), else offline
    online = "online"
    offline = "offline"


@dataclass
class LoggerConfig:
    """Metrics logging (``conf/logger/``): ``_target_`` builds the tracker. Only numbers and the config are
    logged, never EHR text."""

    _target_: str = MISSING


@dataclass
class NoLoggerConfig(LoggerConfig):
    _target_: str = "ehrr1.tracking.NoTracker"  # the progress bar and the console summary only


@dataclass
class CSVLoggerConfig(LoggerConfig):
    _target_: str = "ehrr1.tracking.CSVTracker"  # csv/version_<attempt>/metrics.csv in each stage's directory


@dataclass
class WandbLoggerConfig(LoggerConfig):
    _target_: str = "ehrr1.tracking.WandbTracker"
    project: str = "ehrr1"
    entity: str | None = None
    mode: WandbMode = WandbMode.auto
    tags: list[str] = field(default_factory=list)


LOGGER_SCHEMAS = {"no_logger_schema": NoLoggerConfig, "csv_schema": CSVLoggerConfig, "wandb_schema": WandbLoggerConfig}
builds(*LOGGER_SCHEMAS.values())
