"""``conf/bench/`` and the baselines ``evaluate.py`` scores beside the model."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING

from ehrr1.config.checks import checked


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
