"""Answer parsing and the metric registry: one implementation for evaluation, baselines, RL rewards and
synthesis filters.

An answer is the text after the last ``</think>`` (all of it when there is none), split into lines,
lower-cased and stripped, empty lines dropped. Set metrics compare those lines with the target's.
Garbage (None, bytes that are not UTF-8, empty or enormous text) scores 0 and never raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy.stats import rankdata

from ehrr1.errors import ConfigError
from ehrr1.think import split_reasoning

MAX_ANSWER_CHARS = 100_000  # longer answers are garbage: scored 0 instead of parsed


@dataclass(frozen=True)
class SetScore:
    precision: float
    recall: float
    f1: float


ZERO = SetScore(0.0, 0.0, 0.0)


def to_text(answer: str | bytes | None) -> str | None:
    if answer is None:
        return None
    if isinstance(answer, bytes):
        try:
            answer = answer.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    return answer


def final_answer(answer: str | bytes | None) -> str | None:
    """The part after the reasoning (after the last ``</think>``), or None for garbage."""
    text = to_text(answer)
    if text is None:
        return None
    return split_reasoning(text)[1]


def answer_lines(answer: str | bytes | None) -> list[str]:
    text = final_answer(answer)
    if text is None:
        return []
    return [line.strip().lower() for line in text.splitlines() if line.strip()]


def set_score(answer: str | bytes | None, target: Sequence[str]) -> SetScore:
    predicted = set(answer_lines(answer))
    expected = {t.strip().lower() for t in target if t.strip()}
    if not predicted or not expected:
        return ZERO
    hits = len(predicted & expected)
    if hits == 0:
        return ZERO
    precision, recall = hits / len(predicted), hits / len(expected)
    return SetScore(precision, recall, 2 * precision * recall / (precision + recall))


def accuracy(answer: str | bytes | None, target: Sequence[str]) -> float:
    """1 when the first answer line equals the (first) target, else 0."""
    lines = answer_lines(answer)
    return float(bool(lines) and bool(target) and lines[0] == target[0].strip().lower())


def yes_no(answer: str | bytes | None) -> str | None:
    """'yes' / 'no' when the answer's first line starts with it, else None."""
    lines = answer_lines(answer)
    if not lines:
        return None
    word = lines[0].split()[0].strip(".,:;!") if lines[0].split() else ""
    return word if word in ("yes", "no") else None


def auroc_of(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` against boolean labels ``positive``, both ``[..., n]``, over the last axis (one value
    per leading index: resamples come as rows): the Mann-Whitney U over average ranks (ties count half), NaN
    where only one label occurs. ``tests/test_metrics.py`` checks it against scikit-learn's roc_auc_score."""
    positive = np.asarray(positive, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=float), axis=-1)
    n_pos = positive.sum(-1)
    n_neg = positive.shape[-1] - n_pos
    u = (ranks * positive).sum(-1) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def auroc(labels: Sequence[str], scores: Sequence[float]) -> float | None:
    """AUROC of ``scores`` (probability of yes) against yes/no labels; None when only one label occurs."""
    value = float(auroc_of(np.array([label == "yes" for label in labels]), np.array(scores, dtype=float)))
    return None if math.isnan(value) else value


class AnswerForm(str, Enum):
    """What an answer is, which decides how it is read beside its headline metric."""

    set = "set"  # lines compared as a set with the target's (precision, recall and F1 are reported)
    line = "line"  # the first line against the one target (precision, recall and F1 of the lines reported too)
    text = "text"  # free text against one reference text: no answer vocabulary
    yes_no = "yes_no"  # yes or no, ranked by P(yes) where the backend gives it


@dataclass(frozen=True)
class Metric:
    """A task metric: how one sample scores, how a task's samples make its score, and how to read it."""

    name: str
    form: AnswerForm
    sample: Callable[[str | bytes | None, Sequence[str]], float]  # one sample's score (0 for garbage)
    ranked: bool = False  # the task's score ranks its samples by P(yes) (AUROC) instead of averaging ``sample``
    higher_is_better: bool = True

    @property
    def set_valued(self) -> bool:
        """Whether answers are sets of lines (the reference's RL reward is their F1)."""
        return self.form is AnswerForm.set

    def value(self, score: float, p_yes: float | None, output: str | None) -> float:
        """What one sample adds to its task's score: its score; for a ranked metric its P(yes), or without one
        its yes/no answer as 1 / 0 (anything else 0.5)."""
        if not self.ranked:
            return score
        if p_yes is not None:
            return float(p_yes)
        return {"yes": 1.0, "no": 0.0}.get(yes_no(output) or "", 0.5)

    @staticmethod
    def positive(target: Sequence[str]) -> bool:
        """The label a ranked metric ranks against: the target says yes."""
        return bool(target) and target[0].strip().lower() == "yes"

    def task_score(self, values: np.ndarray, positive: np.ndarray) -> np.ndarray:
        """The task's score from its samples' ``values`` and labels, both ``[..., n]`` (resamples as rows):
        AUROC for a ranked metric (NaN with one label), else the mean."""
        return auroc_of(positive, values) if self.ranked else np.asarray(values, dtype=float).mean(-1)


def _yes_no_accuracy(answer: str | bytes | None, target: Sequence[str]) -> float:
    return float(bool(target) and yes_no(answer) == target[0])


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("f1", AnswerForm.set, lambda answer, target: set_score(answer, target).f1),
        Metric("recall", AnswerForm.set, lambda answer, target: set_score(answer, target).recall),
        Metric("accuracy", AnswerForm.line, accuracy),
        Metric("auroc", AnswerForm.yes_no, _yes_no_accuracy, ranked=True),  # a sample: its yes/no is right
        Metric("rouge1", AnswerForm.text, lambda answer, target: rouge(answer, target[0] if target else "")),
    )
}


def metric(name: str) -> Metric:
    """The registered metric ``name``; an unknown one is a config error listing them."""
    if name not in METRICS:
        raise ConfigError(f"unknown metric '{name}'; use {', '.join(METRICS)}")
    return METRICS[name]


def score(metric_name: str, answer: str | bytes | None, target: Sequence[str]) -> float:
    """The per-sample score of a task's metric (risk tasks: accuracy of the yes/no answer)."""
    return metric(metric_name).sample(answer, target)


def rouge(answer: str | bytes | None, reference: str, kind: str = "rouge1") -> float:
    """ROUGE F-measure (``rouge1``: the discharge note task's metric; ``rougeL``)."""
    from rouge_score import rouge_scorer

    text = final_answer(answer)
    if not text or not reference:
        return 0.0
    return float(rouge_scorer.RougeScorer([kind], use_stemmer=True).score(reference, text)[kind].fmeasure)


REASONING_SECTIONS = ("## Extraction", "## Reasoning", "## Final Results")  # a reasoning chain's sections


def reasoning_format_problem(chain: str | bytes | None) -> str | None:
    """Why a reasoning chain breaks the format (None: it keeps it): the three sections missing or out of
    order, or a repeated line. Shared by the synthesis filter and the RL format reward."""
    text = to_text(chain)
    if text is None:
        return "format"
    positions = [text.find(s) for s in REASONING_SECTIONS]
    if min(positions) < 0 or positions != sorted(positions):
        return "format"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != len(set(lines)):
        return "repeated lines"
    return None
