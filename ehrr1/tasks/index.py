"""Timelines -> sample index: one Parquet row per patient x task x anchor.

Columns: ``subject_id, hadm_id, task, event, period_begin, period_end, admissions_id,
last_discharge_id, target`` (``target`` is a list of strings; risk tasks hold ``["yes"]`` or ``["no"]``).

Each task has its own directory (``<index dir>/<task>/index-NNNNN.parquet`` per timeline shard) and its
own fingerprint (timelines + task definition), so adding or changing a task rebuilds only that task.
One pass over the timeline shards serves every task that needs work; shards run in parallel processes
and each file is written atomically, so a killed build resumes with what it finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ehrr1.data.build import shard_path
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import MissingInputError
from ehrr1.tasks.registry import ANY_EVENT, TaskSpec
from ehrr1.tasks.samples import samples_table, shard_samples
from ehrr1.utils import atomic_write_json, digest, locked, read_json, removed_on_failure, run_jobs, temporary_path

log = logging.getLogger(__name__)

INDEX_VERSION = 2
SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("hadm_id", pa.int64()),
        ("task", pa.string()),
        ("event", pa.int32()),
        ("period_begin", pa.int32()),
        ("period_end", pa.int32()),
        ("admissions_id", pa.int32()),
        ("last_discharge_id", pa.int32()),
        ("target", pa.list_(pa.string())),
    ]
)


def index_shard_path(root: Path, task: str, shard: int) -> Path:
    return root / task / f"index-{shard:05d}.parquet"


def build_shard(timelines_dir: str, shard: int, tasks: list[TaskSpec], out_dir: str) -> None:
    """Index one timeline shard for ``tasks``, one file per task."""
    samples = shard_samples(tasks, pq.read_table(shard_path(Path(timelines_dir), shard)))
    for task in tasks:
        final = index_shard_path(Path(out_dir), task.name, shard)
        with removed_on_failure(temporary_path(final), final) as tmp:
            pq.write_table(samples_table(samples[task.name], SCHEMA), tmp)
            tmp.replace(final)


def _fingerprint(store: TimelineStore, task: TaskSpec) -> str:
    return digest({"version": INDEX_VERSION, "timelines": store.manifest["fingerprint"], "task": asdict(task)})


def _prepare_task_dir(out: Path, task: TaskSpec, fingerprint: str, clean: bool) -> bool:
    """True when the task's index is complete; otherwise make its directory ready to (re)build (``clean``:
    removing temporaries killed runs left, which only a run that holds the whole index may do)."""
    directory = out / task.name
    manifest = directory / "manifest.json"
    if manifest.exists() and read_json(manifest)["fingerprint"] == fingerprint:
        return True
    state = directory / "build.json"
    if directory.exists() and (not state.exists() or read_json(state)["fingerprint"] != fingerprint):
        log.warning("task %s changed (or its timelines did): rebuilding its index", task.name)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if clean:
        for leftover in directory.glob("*.tmp"):
            leftover.unlink()
    atomic_write_json(state, {"fingerprint": fingerprint})
    return False


def build_index(
    timelines_dir: str | Path,
    out_dir: str | Path,
    tasks: Iterable[TaskSpec],
    num_workers: int = 1,
    progress: bool = True,
    shards: range | None = None,
) -> dict[str, int]:
    """Build (or resume, or reuse) the index of ``tasks``; returns the number of samples per task whose
    index is complete. ``shards``: only these timeline shards (one job of several, which run at once and
    hold the output's lock only while claiming it and writing manifests); a task's manifest is written
    by whichever run finds all of its shards done."""
    store, out, tasks = TimelineStore(timelines_dir), Path(out_dir), list(tasks)
    with locked(out) if shards is None else nullcontext():
        with locked(out):
            fingerprints = {t.name: _fingerprint(store, t) for t in tasks}
            pending = [t for t in tasks if not _prepare_task_dir(out, t, fingerprints[t.name], shards is None)]
        work = {}
        for shard in shards if shards is not None else range(store.num_shards):
            missing = [t for t in pending if not index_shard_path(out, t.name, shard).exists()]
            if missing:
                work[shard] = missing
        if work:
            log.info(
                "indexing %d task(s) over %d shard(s) with %d worker(s) -> %s",
                len(pending), len(work), num_workers, out,
            )  # fmt: skip
        started = time.time()
        # fewer shards than workers (a one-shard cohort): each shard's tasks in groups, one job each
        groups = max(1, -(-num_workers // max(1, len(work))))
        sizes = store.manifest.get("per_event_type", {})
        jobs = [
            (str(store.root), shard, group, str(out))
            for shard, shard_tasks in work.items()
            for group in balanced_groups(shard_tasks, groups, sizes)
        ]
        run_jobs(build_shard, jobs, num_workers, "index shards", progress)
        with locked(out):
            for task in pending:
                files = [index_shard_path(out, task.name, s) for s in range(store.num_shards)]
                if all(f.exists() for f in files):
                    _write_manifest(store, out, task, fingerprints[task.name], files, time.time() - started)
        done = [t for t in tasks if (out / t.name / "manifest.json").exists()]
        return {t.name: read_json(out / t.name / "manifest.json")["samples"] for t in done}


def balanced_groups(tasks: list[TaskSpec], groups: int, sizes: dict[str, dict[str, int]]) -> list[list[TaskSpec]]:
    """``tasks`` in at most ``groups`` groups of about equal work: each task, heaviest first, joins the
    lightest group; in list order within a group. A task's work grows with its anchors (its anchor
    type's events, every type's for ``*``, as the timelines' manifest counts them) and with their
    records where it reads them; the weights are from timing each task alone on the synthetic cohort."""

    def work(task: TaskSpec) -> int:
        types = sizes.values() if task.anchor == ANY_EVENT else [sizes.get(task.anchor, {})]
        events, records = (sum(t.get(key, 0) for t in types) for key in ("events", "records"))
        return 1 + (2 * events if task.target == "event_type" else 4 * events + records)

    loads = [0] * min(groups, len(tasks))
    members: list[list[int]] = [[] for _ in loads]
    for i in sorted(range(len(tasks)), key=lambda i: -work(tasks[i])):
        lightest = loads.index(min(loads))
        loads[lightest] += work(tasks[i])
        members[lightest].append(i)
    return [[tasks[i] for i in sorted(group)] for group in members]


def _write_manifest(
    store: TimelineStore, out: Path, task: TaskSpec, fingerprint: str, files: list[Path], seconds: float
) -> None:
    atomic_write_json(
        out / task.name / "manifest.json",
        {
            "fingerprint": fingerprint,
            "task": asdict(task),
            "num_shards": store.num_shards,
            "samples": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
            "timelines": str(store.root),
            "build_seconds": round(seconds, 2),
        },
    )


def _index_files(index_dir: str | Path, tasks: Iterable[str]) -> list[Path]:
    out = Path(index_dir)
    files = []
    for task in tasks:
        manifest = out / task / "manifest.json"
        if not manifest.exists():
            raise MissingInputError(f"no index for task '{task}' in {out}; build it with build_index")
        files += [index_shard_path(out, task, s) for s in range(read_json(manifest)["num_shards"])]
    return files


def read_index(index_dir: str | Path, tasks: Iterable[str]) -> pa.Table:
    """The index rows of ``tasks`` (built beforehand with :func:`build_index`)."""
    files = _index_files(index_dir, tasks)
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files]) if files else SCHEMA.empty_table()


def iter_index(index_dir: str | Path, task: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """One task's index rows in batches of at most ``batch_rows``, shard by shard: what a pass over an
    index of any size holds in memory at once."""
    for path in _index_files(index_dir, [task]):
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
