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


def reached_answer(prompt: str, text: str) -> bool:
    """Whether the reasoning is closed (in the prompt or the generation), so the next words are the answer."""
    return THINK_CLOSE in text or prompt.rstrip().endswith(THINK_CLOSE)


def answer_prefix(text: str) -> str:
    """What precedes the answer in a generation: the reasoning up to ``</think>`` and the blank after it."""
    if THINK_CLOSE not in text:
        return ""
    head, tail = text.rsplit(THINK_CLOSE, 1)
    return head + THINK_CLOSE + tail[: len(tail) - len(tail.lstrip())]
