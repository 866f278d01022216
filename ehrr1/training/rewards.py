"""Verifiable rewards of curriculum stage 3, from the shared task metrics and answer parsing.

- answer: the task's metric (F1 / recall / accuracy; risk tasks: accuracy of the yes/no) of the final
  answer (the lines after the last ``</think>``) against the target, or with ``answer_metric=set_f1`` the
  reference's reward: F1 of the answer lines for every set-valued decision task (risk tasks keep the
  yes/no). A prompt that asked the model to reason scores 0 until the reasoning is closed by ``</think>``;
  one that asked it to answer at once (risk tasks: ``/no_think``, or a think block the prompt closed) is
  scored on its answer as evaluation scores it.
- format: for prompts that asked for reasoning, +1 when the reasoning (inside the think block) has the
  three sections in order and no repeated line, else -1; 0 for prompts that did not ask for it.
The total is their weighted sum. Garbage (empty, non-UTF-8, enormous) gets the lowest rewards; never raises.
"""

from __future__ import annotations

from ehrr1.config import AnswerMetric, RewardWeights
from ehrr1.tasks.metrics import METRICS, reasoning_format_problem, score, to_text
from ehrr1.tasks.records import InstructionRecord
from ehrr1.think import THINK_CLOSE, reasoning_of


def answer_reward(completion: str | bytes | None, metric: str, target: list[str], thinking: bool = True) -> float:
    text = to_text(completion)
    if text is None or (thinking and THINK_CLOSE not in text):
        return 0.0
    try:
        return float(score(metric, text, target))
    except (ValueError, IndexError):
        return 0.0


def format_reward(completion: str | bytes | None, thinking: bool = True) -> float:
    if not thinking:
        return 0.0
    text = to_text(completion)
    if text is None or THINK_CLOSE not in text:
        return -1.0
    return 1.0 if reasoning_format_problem(reasoning_of(text)) is None else -1.0


def rewards(
    completion: str | bytes | None, record: InstructionRecord, weights: RewardWeights, thinking: bool = True
) -> dict[str, float]:
    """Each component and the weighted total for one completion of ``record``'s prompt, which asked the model
    to reason first (``thinking``) or to answer at once."""
    metric = record["metric"]
    if AnswerMetric(weights.answer_metric) is AnswerMetric.set_f1 and METRICS[metric].set_valued:
        metric = "f1"
    answer = answer_reward(completion, metric, list(record["target"]), thinking)
    form = format_reward(completion, thinking)
    return {"answer": answer, "format": form, "total": weights.answer * answer + weights.format * form}
