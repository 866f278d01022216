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

Everything is seeded: a row's chance comes from a hash of (seed, task, split, subject, anchor), so the
same index, config and seed give the same selection however the index is sharded or read. A task's
index is read twice in batches (a census of what passes the filters, then the draw keeping the best
keys), so selection holds the chosen rows and one batch, not the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ehrr1.config import SPLITS, SelectionSettings, SplitRatios
from ehrr1.errors import ConfigError
from ehrr1.tasks.index import SCHEMA
from ehrr1.tasks.registry import TaskRegistry, TaskSpec
from ehrr1.utils import read_user_text

log = logging.getLogger(__name__)

BATCH_ROWS = 65_536  # index rows read at a time


MAX_MIX_BYTES = 2**20  # a task mix names at most a few hundred tasks: kilobytes


def load_data_config(path: str | Path) -> dict[str, int]:
    """A data config file: a JSON object ``{"<task name>": <number of samples>}``."""
    path = Path(path)
    text = read_user_text(path, "task_mix.file", limit=MAX_MIX_BYTES)
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
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


def _uniform(seed: int, task: str, split: str, subjects: np.ndarray, events: np.ndarray) -> np.ndarray:
    """A number in (0, 1] per row from (seed, task, split, subject, anchor) alone, so a draw does not depend
    on how the index is stored or read (shards, batches, other tasks)."""
    salt = np.uint64(int.from_bytes(hashlib.sha256(f"{seed}|{split}|{task}".encode()).digest()[:8], "big"))
    x = subjects.astype(np.uint64) * _GOLDEN ^ (events.astype(np.uint64) + salt)
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):  # splitmix64's finaliser
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(factor)
    x ^= x >> np.uint64(31)
    return ((x >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _labels(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    return np.asarray(pc.binary_join(table.column("target"), "\n").to_numpy(zero_copy_only=False), dtype=object)


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


class Draw(Enum):
    """How one split of a task is drawn (decided from the census, before the rows are read again)."""

    all = "all"  # fewer rows than asked for: every one
    balanced = "balanced"  # a risk task with ``balance``: n // labels per label, uniformly
    weighted = "weighted"  # weight 1 / mean target frequency (Efraimidis-Spirakis keys)
    uniform = "uniform"


@dataclass
class _Census:
    """One pass over a task's index: what the draws need to know before they start."""

    frequency: Counter = field(default_factory=Counter)  # target value -> rows holding it (whole index)
    pool: Counter = field(default_factory=Counter)  # split -> rows passing the filters
    labels: Counter = field(default_factory=Counter)  # (split, label) -> rows passing the filters
    targeted: Counter = field(default_factory=Counter)  # split -> of those, rows with a target (weight > 0)


@dataclass
class _Plan:
    draw: Draw
    quota: dict[str | None, int]  # label (None: any) -> rows to keep; empty for Draw.all


class _Largest:
    """The rows with the ``k`` largest keys seen so far, holding ``O(k + one batch)`` rows."""

    def __init__(self, k: int):
        self.k, self.floor = k, -np.inf
        self.keys: list[np.ndarray] = []
        self.rows: list[pa.Table] = []

    def add(self, keys: np.ndarray, rows: pa.Table) -> None:
        if self.k == 0:
            return
        better = keys > self.floor
        if not better.all():
            keys, rows = keys[better], rows.filter(pa.array(better))
        if len(keys):
            self.keys.append(keys)
            self.rows.append(rows)
        if sum(len(k) for k in self.keys) > 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        keys, rows = np.concatenate(self.keys), pa.concat_tables(self.rows)
        if len(keys) >= self.k:
            keep = np.argpartition(-keys, self.k - 1)[: self.k]
            keys, rows = keys[keep], rows.take(pa.array(keep))
            self.floor = keys.min()
        self.keys, self.rows = [keys], [rows]

    def table(self) -> pa.Table | None:
        if not self.rows:
            return None
        self._compact()
        return self.rows[0]


def _filter(task: TaskSpec, rows: pa.Table | pa.RecordBatch, settings: SelectionSettings) -> pa.Table | pa.RecordBatch:
    """The rows passing the reference's context filters (see the module's docstring)."""
    length = pc.subtract(rows.column("period_end"), rows.column("period_begin"))
    mask = pc.and_(pc.greater(length, settings.min_events), pc.less(length, settings.max_events))
    if task.admission_in_window:
        admission = rows.column("admissions_id")
        mask = pc.and_(mask, pc.or_kleene(pc.is_null(admission), pc.greater(admission, rows.column("period_begin"))))
    if task.max_targets is not None:
        mask = pc.and_(mask, pc.less_equal(pc.list_value_length(rows.column("target")), task.max_targets))
    return rows.filter(mask)


IndexRows = Callable[[str], Iterable[pa.RecordBatch]]


def select(
    index: pa.Table | IndexRows,
    mix: Mapping[str, int],
    registry: TaskRegistry,
    settings: SelectionSettings,
    splits: tuple[str, ...] = SPLITS,
    split_factor: Mapping[str, float] | None = None,
) -> pa.Table:
    """Selected index rows with a ``split`` column, ordered by split, task (mix order), subject, anchor.
    ``split_factor`` scales a task's count per split (``{train: 4, test: 1}``: four times as many to train on).

    ``index``: the index rows, or a function giving one task's in batches (:func:`iter_index`). Each task's
    rows are read twice, a batch at a time (a census, then the draw), so memory holds the selection and
    one batch, whatever the size of the index."""
    tasks = registry.select(mix)  # unknown names fail here, listing the valid ones
    batches_of = index if callable(index) else _table_batches(index)
    split_of = _SplitOf(settings)
    chosen: dict[tuple[str, str], pa.Table] = {}
    for task in tasks:
        census = _census(task, batches_of(task.name), split_of, settings)
        plans = {split: _plan(task, census, split, mix[task.name], settings, split_factor) for split in splits}
        chosen.update(_draw(task, batches_of(task.name), split_of, settings, plans, census.frequency))
    parts = [chosen[split, task.name] for split in splits for task in tasks if (split, task.name) in chosen]
    if parts:
        return pa.concat_tables(parts)
    return SCHEMA.append(pa.field("split", pa.string())).empty_table()


def _table_batches(index: pa.Table) -> IndexRows:
    return lambda name: index.filter(pc.equal(index.column("task"), name)).to_batches(BATCH_ROWS)


class _SplitOf:
    """Each row's split, from its subject (hashed once per patient)."""

    def __init__(self, settings: SelectionSettings):
        self.settings = settings
        self.known: dict[int, str] = {}

    def __call__(self, subjects: pa.Array) -> pa.Array:
        unique = pc.unique(subjects)
        ids = unique.to_pylist()
        for subject in ids:
            if subject not in self.known:
                self.known[subject] = subject_split(subject, self.settings.split, self.settings.seed)
        names = pa.array([self.known[s] for s in ids], pa.string())
        return names.take(pc.index_in(subjects, value_set=unique))


def _weighted(task: TaskSpec, settings: SelectionSettings) -> bool:
    return task.balance or (task.is_risk and not settings.balance)


def _census(task: TaskSpec, batches: Iterable[pa.RecordBatch], split_of: _SplitOf, settings: SelectionSettings):
    census = _Census()
    for batch in batches:
        if _weighted(task, settings):
            census.frequency.update(target_frequency(batch.column("target")))
        batch = _filter(task, batch.append_column("split", split_of(batch.column("subject_id"))), settings)
        splits = batch.column("split").to_numpy(zero_copy_only=False)
        census.pool.update(splits.tolist())
        if task.is_risk and settings.balance:
            census.labels.update(zip(splits.tolist(), _labels(batch).tolist(), strict=True))
        targeted = pc.greater(pc.list_value_length(batch.column("target")), 0).to_numpy(zero_copy_only=False)
        census.targeted.update(splits[targeted].tolist())
    return census


def _plan(
    task: TaskSpec,
    census: _Census,
    split: str,
    count: int,
    settings: SelectionSettings,
    split_factor: Mapping[str, float] | None,
) -> _Plan:
    """How many rows of ``split`` to take, and how; warns about shortfalls when a number was asked for."""
    where, size = f"{task.name}/{split}", census.pool[split]
    if count > 0 and split_factor:
        count = max(1, round(count * split_factor.get(split, 1.0)))
    n = wanted_count(count, settings.force_number, size)
    warn = count > 0 or settings.force_number is not None
    if n >= size:
        if n > size and warn:
            log.warning("%s: %d samples requested, %d exist: taking all", where, n, size)
        return _Plan(Draw.all, {})
    if task.is_risk and settings.balance:
        labels = sorted(label for s, label in census.labels if s == split)
        quota = {}
        for label in labels:
            per_label, exist = n // len(labels), census.labels[split, label]
            if exist < per_label and warn:
                log.warning("%s: %d '%s' samples requested for balance, %d exist", where, per_label, label, exist)
            quota[label] = min(per_label, exist)
        return _Plan(Draw.balanced, quota)
    if _weighted(task, settings) and census.targeted[split] >= n:
        return _Plan(Draw.weighted, {None: n})
    return _Plan(Draw.uniform, {None: n})


def _draw(
    task: TaskSpec,
    batches: Iterable[pa.RecordBatch],
    split_of: _SplitOf,
    settings: SelectionSettings,
    plans: Mapping[str, _Plan],
    frequency: Mapping[str, int],
) -> dict[tuple[str, str], pa.Table]:
    """The second pass: each split's rows kept by its plan, sorted by subject and anchor."""
    kept = {(split, label): _Largest(k) for split, plan in plans.items() for label, k in plan.quota.items()}
    everything: dict[str, list[pa.Table]] = {split: [] for split, plan in plans.items() if plan.draw is Draw.all}
    for batch in batches:
        batch = _filter(task, batch.append_column("split", split_of(batch.column("subject_id"))), settings)
        for split, plan in plans.items():
            rows = pa.Table.from_batches([batch.filter(pc.equal(batch.column("split"), split))])
            if plan.draw is Draw.all:
                everything[split].append(rows)
                continue
            keys = _uniform(
                settings.seed, task.name, split, rows.column("subject_id").to_numpy(), rows.column("event").to_numpy()
            )
            if plan.draw is Draw.weighted:
                weights = target_weights(rows.column("target"), frequency)
                keys = np.divide(np.log(keys), weights, out=np.full(len(keys), -np.inf), where=weights > 0)
            if plan.draw is Draw.balanced:
                labels = _labels(rows)
                for label in plan.quota:
                    mine = labels == label
                    kept[split, label].add(keys[mine], rows.filter(pa.array(mine)))
            else:
                kept[split, None].add(keys, rows)
    out = {}
    for split in plans:
        parts = everything.get(split) or [t for (s, _), top in kept.items() if s == split and (t := top.table())]
        if parts:
            rows = pa.concat_tables(parts)
            out[split, task.name] = rows.sort_by([("subject_id", "ascending"), ("event", "ascending")])
    return out
