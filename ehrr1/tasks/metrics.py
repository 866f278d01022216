"""Answer parsing and metrics: one implementation for evaluation, RL rewards and synthesis filters.

An answer is the text after the last ``</think>`` (all of it when there is none), split into lines,
lower-cased and stripped, empty lines dropped. Set metrics compare those lines with the target's.
Garbage (None, bytes that are not UTF-8, empty or enormous text) scores 0 and never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


def score(metric: str, answer: str | bytes | None, target: Sequence[str]) -> float:
    """The per-sample score of a task's metric (risk tasks: accuracy of the yes/no answer)."""
    if metric == "f1":
        return set_score(answer, target).f1
    if metric == "recall":
        return set_score(answer, target).recall
    if metric in ("accuracy", "auroc"):
        if metric == "auroc":
            return float(yes_no(answer) == target[0])
        return accuracy(answer, target)
    if metric == "rouge1":
        return rouge(answer, target[0] if target else "", "rouge1")
    raise ConfigError(f"unknown metric '{metric}'; use f1, recall, accuracy, auroc or rouge1")


def auroc(labels: Sequence[str], scores: Sequence[float]) -> float | None:
    """AUROC of ``scores`` (probability of yes) against yes/no labels; None when only one label occurs."""
    from sklearn.metrics import roc_auc_score

    y = [1 if label == "yes" else 0 for label in labels]
    if len(set(y)) < 2:
        return None
    return float(roc_auc_score(y, scores))


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
