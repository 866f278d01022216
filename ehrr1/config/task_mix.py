"""``conf/task_mix/`` and the nodes that turn timelines into samples (``tasks``, ``index``, ``selection``,
``export``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from ehrr1.config.checks import SPLITS, checked, did_you_mean, known_split, path_name


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
class TaskMixConfig:
    """A data config: how many samples of which task (-1 or 0: all), from which splits."""

    name: str = path_name()
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
