"""PNG figures of a report: per-task scores against their baselines, and ROC curves of the risk tasks."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from ehrr1.evaluation.report import TaskSamples, finite_score  # noqa: E402
from ehrr1.tasks.metrics import metric  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def interval_errors(values: list[float], lows: list[float | None], highs: list[float | None]) -> list[list[float]]:
    """matplotlib's ``xerr`` for values with 95 % bounds: 0 where a bound is missing, and where a small
    sample's point value lies outside its own bootstrap percentiles (matplotlib refuses negative errors)."""
    return [
        [max(0.0, v - low) if low is not None else 0.0 for v, low in zip(values, lows, strict=True)],
        [max(0.0, high - v) if high is not None else 0.0 for v, high in zip(values, highs, strict=True)],
    ]


def score_chart(report: dict[str, Any], path: Path) -> Path:
    """Horizontal bars: each task's score with its 95 % interval, and the baseline as a tick."""
    tasks = [t for t in report["tasks"] if t["value"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(tasks) + 1.2))
    y = range(len(tasks))
    colours = ["tab:blue" if t["kind"] == "decision" else "tab:orange" for t in tasks]
    errors = interval_errors([t["value"] for t in tasks], [t["ci_low"] for t in tasks], [t["ci_high"] for t in tasks])
    ax.barh(list(y), [t["value"] for t in tasks], xerr=errors, color=colours, alpha=0.8, capsize=2)
    baselines = [(i, t["baseline"]) for i, t in enumerate(tasks) if t["baseline"] is not None]
    ax.scatter([b for _, b in baselines], [i for i, _ in baselines], marker="|", s=120, color="black", label="baseline")
    ax.set_yticks(list(y), [f"{t['task']} ({t['metric']})" for t in tasks], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (decision: F1 / recall / accuracy; risk: AUROC)")
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def roc_curves(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One ROC curve per task of a ranked metric (AUROC) with both labels present (probability scores, hard
    answers otherwise)."""
    from sklearn.metrics import roc_curve

    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if metric(r["metric"]).ranked and finite_score(r):
            by_task[r["task"]].append(r)
    curves = []
    for task, task_rows in by_task.items():
        samples = TaskSamples.of(task_rows[0]["metric"], task_rows)
        if len(set(samples.positive)) == 2:
            fpr, tpr, _ = roc_curve(samples.positive, samples.values)
            curves.append((task, fpr, tpr))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 6))
    for task, fpr, tpr in curves:
        ax.plot(fpr, tpr, label=task, linewidth=1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=6, loc="lower right")
    return save_figure(fig, path)


def write_plots(report: dict[str, Any], rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    paths = [score_chart(report, out / "scores.png"), roc_curves(rows, out / "roc.png")]
    return [p for p in paths if p is not None]
