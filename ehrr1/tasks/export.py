"""Selected samples -> JSONL chat records (EHR-Ins: train/val, EHR-Bench: test) and a statistics report.

Each line: ``{"id", "messages": [system, user, assistant], "task", "kind", "metric", "subject_id",
"hadm_id", "target", "split", "events_dropped", "prompt_tokens"}``, readable with
``datasets.load_dataset("json", data_files=...)``.

Timeline shards are exported in parallel processes, each to its own part files (written atomically,
with their statistics); a killed export resumes with the shards it finished. The parts are then joined
in shard order (patients in id order, tasks in mix order, anchors in time order), so the same selection
always gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from ehrr1.data.timeline import TimelineStore
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.samples import Sample
from ehrr1.utils import atomic_write_json, atomic_write_text, digest, read_json, run_jobs

log = logging.getLogger(__name__)

PARTS = "_parts"


def sample_id(task: str, subject_id: int, event: int) -> str:
    return f"{task}/{subject_id}/{event}"


def _record(task, sample: Sample, split: str, prompt) -> dict[str, Any]:
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


def export_shard(
    store_root: str,
    shard: int,
    rows: list[dict[str, Any]],
    registry: TaskRegistry,
    builder: PromptBuilder,
    task_order: list[str],
    parts: str,
) -> None:
    """Write one shard's records to ``<parts>/<split>-<shard>.jsonl`` and its statistics beside them."""
    store, out = TimelineStore(store_root), Path(parts)
    order = {name: i for i, name in enumerate(task_order)}
    by_subject: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_subject[row["subject_id"]].append(row)
    lines: dict[str, list[str]] = defaultdict(list)
    stats: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for timeline in store.iter_shard(shard, subjects=by_subject):
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
        atomic_write_text(out / f"{split}-{shard:05d}.jsonl", "".join(line + "\n" for line in split_lines))
    atomic_write_json(out / f"stats-{shard:05d}.json", stats)


def export_samples(
    selected: pa.Table,
    store: TimelineStore,
    registry: TaskRegistry,
    builder: PromptBuilder,
    out_dir: str | Path,
    task_order: list[str],
    num_workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``<out_dir>/<split>.jsonl`` for every split in ``selected`` plus ``stats.json`` / ``stats.md``."""
    out = Path(out_dir)
    parts = out / PARTS
    rows_by_shard: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in selected.to_pylist():
        rows_by_shard[store.shard_of(row["subject_id"])].append(row)
    splits = sorted({row["split"] for rows in rows_by_shard.values() for row in rows})
    key = digest(
        {
            "rows": selected.num_rows,
            "ids": digest(selected.to_pydict()),
            "tasks": task_order,
            "builder": [
                builder.max_input_tokens,
                builder.system,
                getattr(builder.tokenizer, "name_or_path", None),
                builder.style.value,
            ],
        }
    )
    state = parts / "export.json"
    if parts.exists() and (not state.exists() or read_json(state)["key"] != key):
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state, {"key": key})
    todo = [s for s in sorted(rows_by_shard) if not (parts / f"stats-{s:05d}.json").exists()]
    if len(todo) < len(rows_by_shard):
        log.info(
            "export resumes: %d of %d shard(s) already written", len(rows_by_shard) - len(todo), len(rows_by_shard)
        )
    args = [(str(store.root), s, rows_by_shard[s], registry, builder, task_order, str(parts)) for s in todo]
    run_jobs(export_shard, args, num_workers, "export shards", progress)
    totals: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for shard in sorted(rows_by_shard):
        for split, tasks in read_json(parts / f"stats-{shard:05d}.json").items():
            for name, counts in tasks.items():
                totals[split][name].update(counts)
    for split in splits:
        tmp = out / f"{split}.jsonl.tmp"
        with open(tmp, "wb") as joined:
            for shard in sorted(rows_by_shard):
                part = parts / f"{split}-{shard:05d}.jsonl"
                if part.exists():
                    with open(part, "rb") as piece:
                        shutil.copyfileobj(piece, joined)
        tmp.replace(out / f"{split}.jsonl")
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
