"""Per-task scores with 95 % bootstrap intervals, macro averages, baselines, and report files.

Two baselines stand beside the model: ``baseline``, always giving the training split's most frequent
answer (risk: a constant, AUROC 0.5), and ``tabular``, scikit-learn models on the same samples
(:mod:`ehrr1.evaluation.tabular`), scored with the same metric and intervals. Each metric's rules come from
the registry (:data:`ehrr1.tasks.metrics.METRICS`); intervals are ``scipy.stats.bootstrap`` percentile
intervals; a baseline's macro average is over the same tasks as the model's, or there is none."""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
from rich.console import Console
from rich.table import Table

from ehrr1.tasks.metrics import AnswerForm, Metric, metric, score, set_score
from ehrr1.tasks.records import InstructionRecord
from ehrr1.utils import atomic_write_json, atomic_write_text

KINDS = ("decision", "risk")
SMALL_LABEL = 10  # a risk task with fewer positives or negatives than this is flagged: its AUROC is noise
SMALL_N = 20  # a decision task with fewer samples than this is flagged


@dataclass
class TaskScore:
    task: str
    kind: str
    metric: str
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    baseline: float | None  # the training split's most frequent answer (decision); risk: a constant (AUROC 0.5)
    invalid: int  # empty, non-UTF-8, enormous or errored outputs (scored 0)
    errors: int  # of those: generation failed after retries (server errors, timeouts), kept per sample
    truncated: int  # generations cut at max_tokens
    hard_scored: int  # risk samples without an answer probability, scored by their yes/no answer
    prompts_cut: int = 0  # prompts cut from the left to fit max_prompt_tokens
    precision: float | None = None  # decision tasks: mean per-sample precision, recall and F1 of the answer
    recall: float | None = None  # lines, beside the headline metric (the reference reports all three)
    f1: float | None = None
    tabular: float | None = None  # the tabular baseline's score, with its 95 % interval
    tabular_ci_low: float | None = None
    tabular_ci_high: float | None = None
    nonfinite: int = 0  # samples whose score was NaN or infinite (a broken model): counted, not scored
    small_n: bool = False  # too few samples (of a label) for the score to mean much (SMALL_LABEL, SMALL_N)


def finite_score(row: dict[str, Any]) -> bool:
    """Whether a result row can be scored: its P(yes), if any, is a finite number (rows written before the
    ``nonfinite`` flag may hold NaN itself)."""
    p = row.get("p_yes")
    return not row.get("nonfinite") and (p is None or (isinstance(p, int | float) and math.isfinite(p)))


def small_sample(metric: Metric, rows: list[dict[str, Any]]) -> bool:
    if metric.ranked:
        positives = sum(metric.positive(r["target"]) for r in rows)
        return min(positives, len(rows) - positives) < SMALL_LABEL
    return len(rows) < SMALL_N


@dataclass(frozen=True)
class TaskSamples:
    """A task's scored rows as its metric reads them: each sample's value and label, ``[n]``."""

    metric: Metric
    values: np.ndarray
    positive: np.ndarray

    @classmethod
    def of(cls, metric_name: str, rows: list[dict[str, Any]]) -> TaskSamples:
        m = metric(metric_name)
        values = np.array([m.value(r["score"], r.get("p_yes"), r["output"]) for r in rows], dtype=float)
        return cls(m, values, np.array([m.positive(r["target"]) for r in rows], dtype=bool))

    def score(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The task's score on the samples ``idx`` (``[..., n]``: resamples as rows; None: all of them)."""
        if idx is None:
            return self.metric.task_score(self.values, self.positive)
        return self.metric.task_score(self.values[idx], self.positive[idx])


def task_value(metric_name: str, rows: list[dict[str, Any]]) -> float | None:
    if not rows:
        return None
    value = float(TaskSamples.of(metric_name, rows).score())
    return None if math.isnan(value) else value


def hard_scored(metric_name: str, rows: list[dict[str, Any]]) -> int:
    """Samples of a ranked metric scored by their hard answer: without a P(yes)."""
    return sum(r.get("p_yes") is None for r in rows) if metric(metric_name).ranked else 0


def _interval(statistic: Any, sizes: list[int], n_boot: int, seed: int) -> tuple[float | None, float | None]:
    """The 95 % percentile interval of ``statistic`` (indices of each sample -> a value per resample) under
    ``scipy.stats.bootstrap``, each sample resampled on its own; resamples a metric cannot score (NaN:
    an AUROC with one label) are left out."""
    if not sizes or min(sizes) < 2:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)  # NaN resamples: left out below
        result = scipy.stats.bootstrap(
            tuple(np.arange(n) for n in sizes),
            statistic,
            n_resamples=n_boot,
            vectorized=True,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    values = result.bootstrap_distribution[~np.isnan(result.bootstrap_distribution)]
    if values.size == 0:
        return None, None
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def bootstrap(
    metric_name: str, rows: list[dict[str, Any]], n_boot: int, seed: int
) -> tuple[float | None, float | None]:
    """The 95 % interval of a task's score over its samples drawn with replacement."""
    if len(rows) < 2:
        return None, None
    samples = TaskSamples.of(metric_name, rows)
    return _interval(lambda idx, axis=-1: samples.score(idx.astype(int)), [len(rows)], n_boot, seed)


def macro_interval(
    by_task: dict[str, list[dict[str, Any]]], tasks: list[str], n_boot: int, seed: int
) -> tuple[float | None, float | None]:
    """95 % interval of the macro average over ``tasks``: each task resampled on its own, per resample the
    mean of the tasks' scores (those a resample can score); a task of one sample adds its one score to each."""
    samples = [TaskSamples.of(by_task[name][0]["metric"], by_task[name]) for name in tasks]
    drawn = [s for s, name in zip(samples, tasks, strict=True) if len(by_task[name]) > 1]
    fixed = [float(s.score()) for s, name in zip(samples, tasks, strict=True) if len(by_task[name]) == 1]

    def statistic(*idx: np.ndarray, axis: int = -1) -> np.ndarray:
        scores = [s.score(i.astype(int)) for s, i in zip(drawn, idx, strict=True)]  # each [B]
        stacked = np.stack([*scores, *(np.full_like(scores[0], v) for v in fixed)])  # [tasks, B]
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample no task can score is NaN, left out
            return np.nanmean(stacked, 0)

    if not drawn:
        return None, None
    return _interval(statistic, [len(by_task[name]) for name in tasks if len(by_task[name]) > 1], n_boot, seed)


def set_scores(rows: list[dict[str, Any]]) -> tuple[float, float, float]:
    """Mean precision, recall and F1 of the answer lines against the target over ``rows``."""
    scored = [set_score(r["output"], r["target"]) for r in rows]
    return (
        float(np.mean([s.precision for s in scored])),
        float(np.mean([s.recall for s in scored])),
        float(np.mean([s.f1 for s in scored])),
    )


def most_frequent_answers(records: Iterable[InstructionRecord]) -> dict[str, str]:
    """Each task's most frequent answer among ``records`` (the training split: no peeking at the test)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        counts[r["task"]]["\n".join(r["target"])] += 1
    return {task: c.most_common(1)[0][0] for task, c in counts.items()}


def baseline(metric_name: str, rows: list[dict[str, Any]], answer: str | None) -> float | None:
    """What a model scores by always giving ``answer`` (the most frequent one), scored as the model's answers
    are (a ranked metric: every sample that one answer, so a constant score)."""
    if answer is None:
        return None
    constant = [{**r, "output": answer, "score": score(metric_name, answer, r["target"]), "p_yes": None} for r in rows]
    return task_value(metric_name, constant)


def aggregate(
    rows: list[dict[str, Any]],
    frequent: dict[str, str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    tabular: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per-task scores (tasks in the order they first appear in ``rows``) and macro averages per kind;
    ``frequent``: the most frequent answers (None: no such baseline); ``tabular``: the tabular baseline's
    rows on the same samples."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    nonfinite: Counter = Counter()
    for r in rows:
        if finite_score(r):
            by_task[r["task"]].append(r)
        else:
            nonfinite[r["task"]] += 1
    tabular_by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in tabular or []:
        tabular_by_task[r["task"]].append(r)
    tasks = []
    for name, task_rows in by_task.items():
        name_of_metric, kind = task_rows[0]["metric"], task_rows[0]["kind"]
        m = metric(name_of_metric)
        low, high = bootstrap(m.name, task_rows, n_boot, seed)
        lines = m.form in (AnswerForm.set, AnswerForm.line)
        precision, recall, f1 = set_scores(task_rows) if lines else (None,) * 3
        side = tabular_by_task.get(name, [])
        side_low, side_high = bootstrap(m.name, side, n_boot, seed)
        tasks.append(
            TaskScore(
                task=name,
                kind=kind,
                metric=m.name,
                n=len(task_rows),
                value=task_value(m.name, task_rows),
                ci_low=low,
                ci_high=high,
                baseline=baseline(m.name, task_rows, frequent.get(name)) if frequent is not None else None,
                invalid=sum(not r["valid"] for r in task_rows),
                errors=sum(bool(r.get("error")) for r in task_rows),
                truncated=sum(r["finish_reason"] == "length" for r in task_rows),
                hard_scored=hard_scored(m.name, task_rows),
                prompts_cut=sum(bool(r.get("prompt_tokens_cut")) for r in task_rows),
                precision=precision,
                recall=recall,
                f1=f1,
                tabular=task_value(m.name, side),
                tabular_ci_low=side_low,
                tabular_ci_high=side_high,
                nonfinite=nonfinite[name],
                small_n=small_sample(m, task_rows),
            )
        )
    tasks.sort(key=lambda t: KINDS.index(t.kind))
    macro = {}
    for kind in KINDS:
        scored = [t for t in tasks if t.kind == kind and t.value is not None]
        if scored:
            low, high = macro_interval(by_task, [t.task for t in scored], n_boot, seed)
            entry: dict[str, Any] = {
                "value": float(np.mean([t.value for t in scored])),
                "ci_low": low,
                "ci_high": high,
                "tasks": len(scored),
                "small_n": sum(t.small_n for t in scored),
            }
            for column in ("baseline", "tabular"):
                entry[column], entry[f"{column}_missing"] = same_tasks_mean(scored, column)
            macro[kind] = entry
    lost = sorted(set(nonfinite) - set(by_task))
    report = {"tasks": [asdict(t) for t in tasks], "macro": macro, "samples": len(rows)}
    report["nonfinite"] = {"samples": sum(nonfinite.values()), "tasks_unscored": lost}
    return report


def same_tasks_mean(tasks: list[TaskScore], column: str) -> tuple[float | None, list[str]]:
    """A baseline's macro average over the same tasks as the model's, and the tasks it has no score on: a
    macro over fewer tasks would compare unlike with like, so then there is none."""
    missing = [t.task for t in tasks if getattr(t, column) is None]
    if len(missing) == len(tasks):  # the baseline was not run
        return None, []
    if missing:
        return None, missing
    return float(np.mean([getattr(t, column) for t in tasks])), []


def score_text(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def interval_text(low: float | None, high: float | None) -> str:
    """A 95 % interval as ``low–high`` (empty when there is none)."""
    return "" if low is None else f"{score_text(low)}–{score_text(high)}"


def macro_text(kind: str, m: dict[str, Any]) -> str:
    """One line per kind: the macro average, its interval, and the baselines' macro averages."""
    ci = interval_text(m.get("ci_low"), m.get("ci_high"))
    line = f"macro {kind}: {m['value']:.3f}" + (f" (95 % CI {ci})" if ci else "") + f" over {m['tasks']} tasks"
    if m.get("small_n"):
        line += f" ({m['small_n']} with small n, marked *)"
    baselines = []
    for column, name in (("baseline", "most frequent"), ("tabular", "tabular")):
        if m.get(column) is not None:
            baselines.append(f"{name} {score_text(m[column])}")
        elif m.get(f"{column}_missing"):
            baselines.append(f"{name} n/a (no score on {', '.join(m[f'{column}_missing'])})")
    return line + (f"; baselines: {', '.join(baselines)}" if baselines else "")


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| task | kind | metric | n | score | 95 % CI | most frequent | tabular | tabular 95 % CI | P | R | F1 "
        "| invalid | errors | truncated | hard-scored | non-finite |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for t in report["tasks"]:
        ci = interval_text(t["ci_low"], t["ci_high"])
        tabular = f"{score_text(t.get('tabular'))} | {interval_text(t.get('tabular_ci_low'), t.get('tabular_ci_high'))}"
        prf = " | ".join(score_text(t.get(k)) for k in ("precision", "recall", "f1"))
        lines.append(
            f"| {task_name(t)} | {t['kind']} | {t['metric']} | {t['n']} | {score_text(t['value'])} | {ci} | "
            f"{score_text(t['baseline'])} | {tabular} | {prf} | {t['invalid']} | {t['errors']} | {t['truncated']} "
            f"| {t['hard_scored']} | {t.get('nonfinite', 0)} |"
        )
    lines.append("")
    lines += [f"- {macro_text(kind, m)}" for kind, m in report["macro"].items()]
    lines += [f"- {note}" for note in notes(report)]
    return "\n".join(lines) + "\n"


def task_name(t: dict[str, Any]) -> str:
    return t["task"] + (" *" if t.get("small_n") else "")


def notes(report: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting the table: failed samples, small samples, non-finite scores."""
    found = []
    failures = sum(t.get("errors", 0) for t in report["tasks"])
    if failures:
        found.append(
            f"{failures} samples failed to generate (server errors after retries) and are scored 0: the scores are "
            "not final; running the same evaluation again asks them again"
        )
    if any(t.get("small_n") for t in report["tasks"]):
        found.append(
            f"* small n: a risk task with fewer than {SMALL_LABEL} positive or negative samples, or a decision task "
            f"with fewer than {SMALL_N} samples; its score and interval say little"
        )
    lost = report.get("nonfinite", {})
    if lost.get("samples"):
        unscored = f"; unscored tasks: {', '.join(lost['tasks_unscored'])}" if lost.get("tasks_unscored") else ""
        found.append(
            f"{lost['samples']} samples had a non-finite score (NaN or infinite P(yes): a broken model?) and were "
            f"left out of the scores{unscored}"
        )
    return found


def csv_text(report: dict[str, Any]) -> str:
    columns = list(TaskScore.__dataclass_fields__)
    rows = [",".join(columns)]
    rows += [",".join("" if t[c] is None else str(t[c]) for c in columns) for t in report["tasks"]]
    return "\n".join(rows) + "\n"


def write_reports(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"json": out / "report.json", "md": out / "report.md", "csv": out / "report.csv"}
    atomic_write_json(paths["json"], report)
    atomic_write_text(paths["md"], markdown(report))
    atomic_write_text(paths["csv"], csv_text(report))
    return paths


def print_report(report: dict[str, Any], title: str, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 120))
    table = Table(title=title)
    for column in ("task", "metric", "n", "score", "95 % CI", "most freq.", "tabular", "invalid", "errors"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right", no_wrap=True)
    for t in report["tasks"]:
        ci = interval_text(t["ci_low"], t["ci_high"])
        baselines = (score_text(t["baseline"]), score_text(t.get("tabular")))
        cells = (score_text(t["value"]), ci, *baselines, str(t["invalid"]), str(t["errors"]))
        table.add_row(task_name(t), t["metric"], str(t["n"]), *cells)
    console.print(table)
    for kind, m in report["macro"].items():
        console.print(macro_text(kind, m))
    for note in notes(report):
        console.print(note)
