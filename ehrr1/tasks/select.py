"""Selecting samples from the index with a data config ``{task: n}``: counts, balance, splits.

- ``n`` of -1 or 0 takes every sample; a force number overrides every count (>= 1: that many per task;
  < 1: that fraction of each count, or of what exists when the count is "all").
- Filters (the reference's ``data_index_gen.py``): ``min_events < period_end - period_begin < max_events``;
  tasks marked ``admission_in_window`` only when the current admission is not before the window; tasks
  with ``max_targets`` only up to that many target values.
- Balance: with ``balance`` risk tasks take ``n // 2`` per label (a short label gives what it has, the
  other is not trimmed); otherwise risk tasks, and always the decision tasks marked ``balance``, are
  drawn with weight 1 / (mean frequency of the sample's target values over the task's whole index);
  the rest uniformly.
- Splits are by patient: a subject's split is a hash of (seed, subject_id), so no patient is in two
  splits and the assignment does not depend on which other patients exist.

Everything is seeded; the same index, config and seed give the same selection.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ehrr1.config import SPLITS, SelectionSettings, SplitRatios
from ehrr1.errors import ConfigError
from ehrr1.tasks.registry import TaskRegistry, TaskSpec

log = logging.getLogger(__name__)


def load_data_config(path: str | Path) -> dict[str, int]:
    """A data config file: a JSON object ``{"<task name>": <number of samples>}``."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"data config {path}: not a readable JSON file ({exc})") from exc
    if not isinstance(config, dict) or not all(isinstance(v, int) for v in config.values()):
        raise ConfigError(f'data config {path}: expected a JSON object {{"<task name>": <number of samples>}}')
    negative = {task: n for task, n in config.items() if n < -1}
    if negative:
        raise ConfigError(f"data config {path}: {negative}: a count must be >= 1, or -1 / 0 for all of its samples")
    return config


def subject_split(subject_id: int | str, ratios: SplitRatios, seed: int) -> str:
    h = hashlib.sha256(f"{seed}:{subject_id}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < ratios.train:
        return "train"
    return "val" if u < ratios.train + ratios.val else "test"


def wanted_count(count: int, force_number: float | None, available: int) -> int:
    if force_number is not None and force_number >= 1:
        return int(force_number)
    base = available if count <= 0 else count
    if force_number is not None:
        return max(1, round(base * force_number))
    return base


def _rng(seed: int, *parts: str) -> np.random.Generator:
    material = hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(material[:8], "big"))


def _labels(table: pa.Table) -> np.ndarray:
    return pc.binary_join(table.column("target"), "\n").to_numpy(zero_copy_only=False)


def target_frequency(targets: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """How often each target value occurs over a task's samples."""
    counts = pc.value_counts(pc.list_flatten(targets))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


def target_weights(targets: pa.ChunkedArray | pa.Array, frequency: Mapping[str, int]) -> np.ndarray:
    """1 / mean frequency of each sample's target values (the reference's ``target_weight``); 0 without any."""
    targets = pa.chunked_array([targets]) if isinstance(targets, pa.Array) else targets
    flat = pc.list_flatten(targets)
    values = pa.array(list(frequency), pa.string())
    counts = np.array(list(frequency.values()), dtype=float)[pc.index_in(flat, value_set=values).to_numpy()]
    rows = pc.list_parent_indices(targets).to_numpy()
    totals = np.bincount(rows, weights=counts, minlength=len(targets))
    lengths = pc.list_value_length(targets).to_numpy(zero_copy_only=False).astype(float)
    return np.divide(lengths, totals, out=np.zeros(len(targets)), where=lengths > 0)


def _draw(
    task: TaskSpec,
    table: pa.Table,
    n: int,
    balance: bool,
    rng: np.random.Generator,
    where: str,
    frequency: Mapping[str, int],
    warn: bool = True,
) -> np.ndarray:
    """Row positions to take; ``warn`` about shortfalls only when a number was asked for (not "all")."""
    size = table.num_rows
    if n >= size:
        if n > size and warn:
            log.warning("%s: %d samples requested, %d exist: taking all", where, n, size)
        return np.arange(size)
    if balance and task.is_risk:
        labels = np.array(_labels(table), dtype=object)
        chosen = []
        for label in sorted(set(labels)):
            pool = np.flatnonzero(labels == label)
            per_label = n // len(set(labels))
            if len(pool) < per_label and warn:
                log.warning("%s: %d '%s' samples requested for balance, %d exist", where, per_label, label, len(pool))
            chosen.append(rng.choice(pool, size=min(per_label, len(pool)), replace=False))
        return np.sort(np.concatenate(chosen))
    if task.is_risk or task.balance:
        weights = target_weights(table.column("target"), frequency)
        if np.count_nonzero(weights) >= n:
            return np.sort(rng.choice(size, size=n, replace=False, p=weights / weights.sum()))
    return np.sort(rng.choice(size, size=n, replace=False))


def _filter(task: TaskSpec, rows: pa.Table, settings: SelectionSettings) -> pa.Table:
    length = pc.subtract(rows.column("period_end"), rows.column("period_begin"))
    mask = pc.and_(pc.greater(length, settings.min_events), pc.less(length, settings.max_events))
    if task.admission_in_window:
        admission = rows.column("admissions_id")
        mask = pc.and_(mask, pc.or_kleene(pc.is_null(admission), pc.greater(admission, rows.column("period_begin"))))
    if task.max_targets is not None:
        mask = pc.and_(mask, pc.less_equal(pc.list_value_length(rows.column("target")), task.max_targets))
    return rows.filter(mask)


def select(
    index: pa.Table | Callable[[str], pa.Table],
    mix: Mapping[str, int],
    registry: TaskRegistry,
    settings: SelectionSettings,
    splits: tuple[str, ...] = SPLITS,
    split_factor: Mapping[str, float] | None = None,
) -> pa.Table:
    """Selected index rows with a ``split`` column, ordered by split, task (mix order), subject, anchor.
    ``split_factor`` scales a task's count per split (``{train: 4, test: 1}``: four times as many to train on).

    ``index``: the index rows, or a function giving one task's (``read_index`` of one task), so that only
    one task's index is in memory at a time."""
    tasks = registry.select(mix)  # unknown names fail here, listing the valid ones
    rows_of = index if callable(index) else (lambda name: index.filter(pc.equal(index.column("task"), name)))
    chosen: dict[tuple[str, str], pa.Table] = {}
    for task in tasks:
        rows = rows_of(task.name)
        frequency = target_frequency(rows.column("target"))
        rows = rows.append_column("split", _splits(rows.column("subject_id"), settings))
        for split in splits:
            chosen[split, task.name] = _select_split(
                task, rows, split, mix[task.name], settings, split_factor, frequency
            )
    parts = [chosen[split, task.name] for split in splits for task in tasks]
    if parts:
        return pa.concat_tables(parts)
    schema = index.schema if isinstance(index, pa.Table) else None
    return schema.append(pa.field("split", pa.string())).empty_table() if schema is not None else pa.table({})


def _splits(subjects: pa.ChunkedArray, settings: SelectionSettings) -> pa.Array:
    """Each row's split, from its subject (computed once per patient)."""
    unique = pc.unique(subjects)
    names = pa.array([subject_split(s, settings.split, settings.seed) for s in unique.to_pylist()], pa.string())
    return names.take(pc.index_in(subjects, value_set=unique))


def _select_split(
    task: TaskSpec,
    rows: pa.Table,
    split: str,
    count: int,
    settings: SelectionSettings,
    split_factor: Mapping[str, float] | None,
    frequency: Mapping[str, int],
) -> pa.Table:
    rows = _filter(task, rows.filter(pc.equal(rows.column("split"), split)), settings)
    rows = rows.sort_by([("subject_id", "ascending"), ("event", "ascending")])
    if count > 0 and split_factor:
        count = max(1, round(count * split_factor.get(split, 1.0)))
    n = wanted_count(count, settings.force_number, rows.num_rows)
    asked = count > 0 or settings.force_number is not None
    rng = _rng(settings.seed, split, task.name)
    positions = _draw(task, rows, n, settings.balance, rng, f"{task.name}/{split}", frequency, warn=asked)
    return rows.take(pa.array(positions, type=pa.int64()))
