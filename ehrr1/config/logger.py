"""``conf/logger/``: where metrics go (none, CSV, W&B); never EHR text."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING


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
