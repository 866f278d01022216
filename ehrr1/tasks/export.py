"""Selected samples -> JSONL chat records (EHR-Ins: train/val, EHR-Bench: test) and a statistics report.

Each line: ``{"id", "messages": [system, user, assistant], "task", "kind", "metric", "subject_id",
"hadm_id", "target", "split", "events_dropped", "prompt_tokens"}``, readable with
``datasets.load_dataset("json", data_files=...)``. Records are written shard by shard (memory bounded by
a shard), patients in id order, tasks in mix order, anchors in time order; files are renamed into place
when complete, so the same selection always gives the same bytes.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from ehrr1.data.timeline import TimelineStore
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.samples import Sample
from ehrr1.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def sample_id(task: str, subject_id: int, event: int) -> str:
    return f"{task}/{subject_id}/{event}"


def _rows_by_subject(selected: pa.Table) -> dict[int, list[dict[str, Any]]]:
    rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in selected.to_pylist():
        rows[row["subject_id"]].append(row)
    return rows


def export_samples(
    selected: pa.Table,
    store: TimelineStore,
    registry: TaskRegistry,
    builder: PromptBuilder,
    out_dir: str | Path,
    task_order: list[str],
    progress: bool = True,
) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = {name: i for i, name in enumerate(task_order)}
    by_subject = _rows_by_subject(selected)
    splits = sorted(set(selected.column("split").to_pylist())) if selected.num_rows else []
    handles = {s: open(out / f"{s}.jsonl.tmp", "w", encoding="utf-8") for s in splits}  # noqa: SIM115
    stats: dict[tuple[str, str], Counter] = defaultdict(Counter)
    labels: dict[tuple[str, str], Counter] = defaultdict(Counter)
    shards = sorted({store.shard_of(s) for s in by_subject})
    try:
        with tqdm(total=selected.num_rows, desc="export samples", disable=not progress) as bar:
            for shard in shards:
                for timeline in store.iter_shard(shard):
                    rows = by_subject.get(timeline.subject_id)
                    if not rows:
                        continue
                    for row in sorted(rows, key=lambda r: (order[r["task"]], r["event"])):
                        task = registry[row["task"]]
                        sample = Sample(
                            **{k: row[k] for k in Sample.__dataclass_fields__ if k != "target"},
                            target=tuple(row["target"]),
                        )
                        prompt = builder.build(timeline, sample, task)
                        key = (row["split"], task.name)
                        bar.update()
                        if not prompt.fits:
                            stats[key]["too_long"] += 1
                            continue
                        record = {
                            "id": sample_id(task.name, sample.subject_id, sample.event),
                            "messages": [*prompt.messages, {"role": "assistant", "content": prompt.answer}],
                            "task": task.name,
                            "kind": task.kind.value,
                            "metric": task.metric.value,
                            "subject_id": sample.subject_id,
                            "hadm_id": sample.hadm_id,
                            "target": list(sample.target),
                            "split": row["split"],
                            "events_dropped": prompt.events_dropped,
                            "prompt_tokens": prompt.n_tokens,
                        }
                        handles[row["split"]].write(json.dumps(record, ensure_ascii=False) + "\n")
                        stats[key]["samples"] += 1
                        stats[key]["context_events"] += sample.period_end - sample.period_begin
                        stats[key]["events_dropped"] += prompt.events_dropped
                        stats[key]["prompt_tokens"] += prompt.n_tokens or 0
                        labels[key][prompt.answer if task.is_risk else "distinct"] += 1
                        if not task.is_risk:
                            labels[key][f"label:{prompt.answer}"] += 1
    finally:
        for handle in handles.values():
            handle.close()
    for split in splits:
        (out / f"{split}.jsonl.tmp").replace(out / f"{split}.jsonl")
    report = _report(stats, labels, registry, task_order)
    atomic_write_json(out / "stats.json", report)
    atomic_write_text(out / "stats.md", stats_markdown(report))
    return report


def _report(stats, labels, registry: TaskRegistry, task_order: list[str]) -> dict[str, Any]:
    per_split: dict[str, dict[str, Any]] = defaultdict(dict)
    for (split, task_name), counts in sorted(stats.items(), key=lambda kv: (kv[0][0], task_order.index(kv[0][1]))):
        n = counts["samples"]
        entry = {
            "samples": n,
            "too_long": counts["too_long"],
            "mean_context_events": round(counts["context_events"] / n, 1) if n else 0.0,
            "mean_prompt_tokens": round(counts["prompt_tokens"] / n, 1) if n else 0.0,
            "events_dropped": counts["events_dropped"],
        }
        label_counts = labels[(split, task_name)]
        if registry[task_name].is_risk:
            entry["yes"], entry["no"] = label_counts["yes"], label_counts["no"]
        else:
            entry["distinct_answers"] = sum(1 for k in label_counts if k.startswith("label:"))
        per_split[split][task_name] = entry
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
