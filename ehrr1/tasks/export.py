"""Selected samples -> JSONL chat records (EHR-Ins: train/val, EHR-Bench: test) and a statistics report.

Each line: ``{"id", "messages": [system, user, assistant], "task", "kind", "metric", "subject_id",
"hadm_id", "target", "split", "events_dropped", "prompt_tokens"}``, readable with
``datasets.load_dataset("json", data_files=...)``.

The work is cut into units of ``unit_patients`` patients of one timeline shard (so a one-shard cohort uses
every worker too), exported in parallel processes, each to its own part files (written atomically, with
their statistics); a killed export resumes with the units it finished. The parts are then joined in unit
order (shards in order, patients in id order, tasks in mix order, anchors in time order), so the same
selection always gives the same bytes, whatever the unit size or the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import UserError
from ehrr1.resumable import WorkDir
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.samples import Sample
from ehrr1.utils import atomic_output, atomic_write_json, atomic_write_text, digest, locked, read_json, run_jobs

log = logging.getLogger(__name__)

PARTS = "_parts"


def sample_id(task: str, subject_id: int, event: int) -> str:
    return f"{task}/{subject_id}/{event}"


def _record(task, sample: Sample, split: str, prompt) -> InstructionRecord:
    return {
        "id": sample_id(task.name, sample.subject_id, sample.event),
        "messages": [*prompt.messages, {"role": "assistant", "content": prompt.answer}],
        "task": task.name,
        "kind": task.kind.value,
        "metric": task.metric.value,
        "subject_id": sample.subject_id,
        "hadm_id": sample.hadm_id,
        "target": list(sample.target),
        "split": split,
        "events_dropped": prompt.events_dropped,
        "prompt_tokens": prompt.n_tokens,
    }


def shown_positions(rows: list[dict[str, Any]]) -> set[int]:
    """The timeline positions the samples of ``rows`` (one patient's) may show or read: demographics, the
    anchors, previous notes, admissions and context windows."""
    positions = {0}
    for row in rows:
        positions.add(row["event"])
        positions.update(row[k] for k in ("last_discharge_id", "admissions_id") if row[k] is not None)
        positions.update(range(row["period_begin"], row["period_end"]))
    return positions


def export_unit(
    store_root: str,
    registry: TaskRegistry,
    builder: PromptBuilder,
    task_order: list[str],
    parts: WorkDir,
    shard: int,
    unit: str,
    rows: pa.Table,
) -> None:
    """Write one unit's records (``rows``, all of ``shard``) to ``<parts>/<split>-<unit>.jsonl``, then its
    statistics beside them (which mark the unit done)."""
    store = TimelineStore(store_root)
    order = {name: i for i, name in enumerate(task_order)}
    by_subject: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows.to_pylist():
        by_subject[row["subject_id"]].append(row)
    lines: dict[str, list[str]] = defaultdict(list)
    stats: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for timeline in store.excerpts(shard, {subject: shown_positions(rows) for subject, rows in by_subject.items()}):
        for row in sorted(by_subject[timeline.subject_id], key=lambda r: (order[r["task"]], r["event"])):
            task = registry[row["task"]]
            sample = Sample(
                **{k: row[k] for k in Sample.__dataclass_fields__ if k != "target"}, target=tuple(row["target"])
            )
            prompt = builder.build(timeline, sample, task)
            counts = stats[row["split"]][task.name]
            if not prompt.fits:
                counts["too_long"] += 1
                continue
            lines[row["split"]].append(json.dumps(_record(task, sample, row["split"], prompt), ensure_ascii=False))
            counts["samples"] += 1
            counts["context_events"] += sample.period_end - sample.period_begin
            counts["events_dropped"] += prompt.events_dropped
            counts["prompt_tokens"] += prompt.n_tokens or 0
            counts[f"label:{prompt.answer}"] += 1
    for split, split_lines in lines.items():
        parts.commit_text(f"{split}-{unit}.jsonl", "".join(line + "\n" for line in split_lines))
    parts.commit_json(_unit_stats(unit), stats)


def work_units(selected: pa.Table, store: TimelineStore, unit_patients: int) -> dict[str, tuple[int, pa.Table]]:
    """``{name: (shard, rows)}`` in join order: each shard's patients in id order, ``unit_patients`` at a time;
    a name (``<shard>-<first patient's rank>``) depends only on the selection and the unit size. The rows
    stay Arrow tables (each unit's its own copy, so a worker is sent only its rows)."""
    if unit_patients < 1:
        raise UserError(f"export.unit_patients must be >= 1 (patients per work unit), got {unit_patients}")
    subjects = selected.column("subject_id").to_numpy()
    shards = store.shard_of(subjects)
    order = np.lexsort((subjects, shards))  # by shard, then patient; a patient's rows keep their order
    subjects, shards = subjects[order], shards[order]
    first_of_patient = np.flatnonzero(np.r_[True, subjects[1:] != subjects[:-1]])  # a patient has one shard
    units: dict[str, tuple[int, pa.Table]] = {}
    for shard in np.unique(shards):
        begin, end = np.searchsorted(shards, shard), np.searchsorted(shards, shard, side="right")
        starts = first_of_patient[(first_of_patient >= begin) & (first_of_patient < end)]
        for rank in range(0, len(starts), unit_patients):
            stop = starts[rank + unit_patients] if rank + unit_patients < len(starts) else end
            units[f"{shard:05d}-{rank:07d}"] = (int(shard), selected.take(pa.array(order[starts[rank] : stop])))
    return units


def export_samples(
    selected: pa.Table,
    store: TimelineStore,
    registry: TaskRegistry,
    builder: PromptBuilder,
    out_dir: str | Path,
    task_order: list[str],
    num_workers: int = 1,
    progress: bool = True,
    unit_patients: int = 100,
    shards: range | None = None,
) -> dict[str, Any]:
    """Write ``<out_dir>/<split>.jsonl`` for every split in ``selected`` plus ``stats.json`` / ``stats.md``.

    ``shards``: only the units of these timeline shards, left in ``<out_dir>/_parts`` for a run without
    ``shards`` to join (jobs of one array run at once: each holds the output's lock only to claim it);
    returns how many units are done then."""
    out = Path(out_dir)
    with locked(out) if shards is None else nullcontext():
        units = work_units(selected, store, unit_patients)
        key = _export_key(selected, unit_patients, task_order, builder, registry)
        parts = WorkDir(out / PARTS, key, "export parts")
        with locked(out):  # the jobs of one array run at once: only a run of all shards removes temporaries
            parts.claim(clean=shards is None)
        mine = [name for name, (shard, _) in units.items() if shards is None or shard in shards]
        todo = parts.pending(mine, _unit_stats)
        if len(todo) < len(mine):
            log.info("export resumes: %d of %d unit(s) already written", len(mine) - len(todo), len(mine))
        shared = (str(store.root), registry, builder, task_order, parts)
        jobs = [(units[name][0], name, units[name][1]) for name in todo]
        run_jobs(export_unit, jobs, num_workers, "export units", progress, shared)
        if shards is not None:
            done = len(units) - len(parts.pending(units, _unit_stats))
            return {"units_done": done, "units": len(units), "shards": [shards.start, shards.stop]}
        return _join(units, parts.path, out, registry, task_order)


def _unit_stats(unit: str) -> str:
    """The file of a unit's statistics, written last: the unit is done when it is there."""
    return f"stats-{unit}.json"


def _export_key(
    selected: pa.Table, unit_patients: int, task_order: list[str], builder: PromptBuilder, registry: TaskRegistry
) -> str:
    """What the parts depend on: the selection, the unit size, the tasks (their definitions: instruction,
    forbidden events, ...) and the prompt builder (its budget, system prompt, markdown and tokenizer)."""
    return digest(
        {
            "rows": selected.num_rows,
            "unit_patients": unit_patients,
            "ids": _table_digest(selected),
            "tasks": task_order,
            "definitions": [asdict(registry[t]) for t in task_order],
            "builder": [builder.max_input_tokens, builder.system, builder.style.value],
            "tokenizer": _tokenizer_digest(builder.tokenizer),
        }
    )


def _tokenizer_digest(tokenizer: Any) -> str | None:
    """What a tokenizer counts and templates with: its vocabulary and merges, and its chat template."""
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = backend.to_str() if backend is not None else str(getattr(tokenizer, "name_or_path", ""))
    return digest([hashlib.sha256(model.encode()).hexdigest(), getattr(tokenizer, "chat_template", None)])


def _table_digest(table: pa.Table) -> str:
    """A digest of a table's contents (its Arrow IPC stream), without turning it into Python objects."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as stream:
        stream.write_table(table.combine_chunks())  # the same rows give the same bytes however chunked
    return hashlib.sha256(sink.getvalue()).hexdigest()[:16]


def _join(
    units: dict[str, tuple[int, pa.Table]], parts: Path, out: Path, registry: TaskRegistry, task_order: list[str]
) -> dict[str, Any]:
    """The units' parts joined in unit order into ``<split>.jsonl``, their statistics summed."""
    totals: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for name in units:
        for split, tasks in read_json(parts / _unit_stats(name)).items():
            for task_name, counts in tasks.items():
                totals[split][task_name].update(counts)
    splits = sorted({split for _, rows in units.values() for split in pc.unique(rows.column("split")).to_pylist()})
    for split in splits:
        with atomic_output(out / f"{split}.jsonl") as tmp, open(tmp, "wb") as joined:
            for name in units:
                part = parts / f"{split}-{name}.jsonl"
                if part.exists():
                    with open(part, "rb") as piece:
                        shutil.copyfileobj(piece, joined)
    report = _report(totals, registry, task_order)
    atomic_write_json(out / "stats.json", report)
    atomic_write_text(out / "stats.md", stats_markdown(report))
    shutil.rmtree(parts)
    return report


def _report(totals, registry: TaskRegistry, task_order: list[str]) -> dict[str, Any]:
    per_split: dict[str, dict[str, Any]] = {}
    for split in sorted(totals):
        per_split[split] = {}
        for name in [t for t in task_order if t in totals[split]]:
            counts, n = totals[split][name], totals[split][name]["samples"]
            entry = {
                "samples": n,
                "too_long": counts["too_long"],
                "mean_context_events": round(counts["context_events"] / n, 1) if n else 0.0,
                "mean_prompt_tokens": round(counts["prompt_tokens"] / n, 1) if n else 0.0,
                "events_dropped": counts["events_dropped"],
            }
            if registry[name].is_risk:
                entry["yes"], entry["no"] = counts["label:yes"], counts["label:no"]
            else:
                entry["distinct_answers"] = sum(1 for k in counts if k.startswith("label:"))
            per_split[split][name] = entry
    return {"splits": per_split, "totals": {s: sum(e["samples"] for e in t.values()) for s, t in per_split.items()}}


def stats_markdown(report: dict[str, Any]) -> str:
    lines = []
    for split, tasks in report["splits"].items():
        lines += [
            f"## {split} ({report['totals'][split]} samples)",
            "",
            "| task | samples | yes | no | distinct answers | mean context events | mean prompt tokens | too long |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, e in tasks.items():
            lines.append(
                f"| {name} | {e['samples']} | {e.get('yes', '')} | {e.get('no', '')} | "
                f"{e.get('distinct_answers', '')} | {e['mean_context_events']} | {e['mean_prompt_tokens']} | "
                f"{e['too_long']} |"
            )
        lines.append("")
    return "\n".join(lines)
