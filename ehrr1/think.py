"""The think block: the tags around a model's reasoning, as Qwen3 writes them, and the one place that builds
and splits texts holding one (a leaf: no imports)."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CLOSED_THINK = "<think>\n\n</think>\n"  # appended by models without a thinking switch to turn reasoning off


def with_reasoning(reasoning: str, answer: str) -> str:
    """An assistant turn that reasons first: ``<think>\n{reasoning}\n</think>\n\n{answer}``."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{answer}"


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a model's text: the answer follows the last ``</think>`` (the whole text when
    there is none); the reasoning is what precedes it, without the opening tag."""
    if THINK_CLOSE not in text:
        return "", text
    head, _, answer = text.rpartition(THINK_CLOSE)
    return head.replace(THINK_OPEN, ""), answer


def reasoning_of(text: str) -> str:
    """The text inside the first think block (the completion may or may not repeat the opening tag)."""
    head = text.split(THINK_CLOSE, 1)[0]
    return head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
