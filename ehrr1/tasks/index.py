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
from ehrr1.resumable import WorkDir
from ehrr1.tasks.registry import ANY_EVENT, TaskSpec
from ehrr1.tasks.samples import samples_table, shard_samples
from ehrr1.utils import digest, locked, read_json, run_jobs

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


def index_file(shard: int) -> str:
    return f"index-{shard:05d}.parquet"


def index_shard_path(root: Path, task: str, shard: int) -> Path:
    return root / task / index_file(shard)


def task_work(out: Path, store: TimelineStore, task: TaskSpec) -> WorkDir:
    """A task's index directory, keyed by the timelines and the task's definition."""
    key = digest({"version": INDEX_VERSION, "timelines": store.manifest["fingerprint"], "task": asdict(task)})
    return WorkDir(out / task.name, key, f"index of task {task.name}", state="build.json", owns=("index-*.parquet",))


def build_shard(timelines_dir: str, shard: int, tasks: list[WorkDir], specs: list[TaskSpec]) -> None:
    """Index one timeline shard for ``specs``, one file in each task's directory (``tasks``)."""
    samples = shard_samples(specs, pq.read_table(shard_path(Path(timelines_dir), shard)))
    for work, task in zip(tasks, specs, strict=True):
        with work.commit(index_file(shard)) as tmp:
            pq.write_table(samples_table(samples[task.name], SCHEMA), tmp)


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
        dirs = {t.name: task_work(out, store, t) for t in tasks}
        with locked(out):
            pending = [t for t in tasks if not dirs[t.name].is_done()]
            for task in pending:  # killed runs' temporaries: only a run holding the whole index may remove them
                dirs[task.name].claim(clean=shards is None)
        work = {}
        for shard in shards if shards is not None else range(store.num_shards):
            missing = [t for t in pending if dirs[t.name].pending([shard], index_file)]
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
            (str(store.root), shard, [dirs[t.name] for t in group], group)
            for shard, shard_tasks in work.items()
            for group in balanced_groups(shard_tasks, groups, sizes)
        ]
        run_jobs(build_shard, jobs, num_workers, "index shards", progress)
        with locked(out):
            for task in pending:
                if not dirs[task.name].pending(range(store.num_shards), index_file):
                    _finish(store, dirs[task.name], task, time.time() - started)
        done = [dirs[t.name] for t in tasks if dirs[t.name].is_done()]
        return {work.path.name: work.read_manifest()["samples"] for work in done}


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


def _finish(store: TimelineStore, work: WorkDir, task: TaskSpec, seconds: float) -> None:
    files = [work.path / index_file(s) for s in range(store.num_shards)]
    work.finish(
        {
            "task": asdict(task),
            "num_shards": store.num_shards,
            "samples": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
            "timelines": str(store.root),
            "build_seconds": round(seconds, 2),
        }
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
