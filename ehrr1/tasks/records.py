"""The instruction record: one line of EHR-Ins / EHR-Bench JSONL, as the export writes it and every reader
(training, reasoning synthesis, evaluation, the tabular baseline) takes it."""

from __future__ import annotations

from typing import Any, TypedDict

from typing_extensions import NotRequired  # typing has it from Python 3.11; we support 3.10


class Message(TypedDict):
    role: str  # system, user, assistant
    content: str


class InstructionRecord(TypedDict):
    id: str  # <task>/<subject_id>/<anchor event>
    messages: list[Message]  # system, user (EHR markdown + instruction), assistant (the answer)
    task: str
    kind: str  # decision or risk
    metric: str
    subject_id: int | None
    hadm_id: int | None
    target: list[str]  # the answer's lines
    split: str
    events_dropped: NotRequired[int]  # built records: the oldest window events cut to fit the budget
    prompt_tokens: NotRequired[int | None]  # built records: the prompt's tokens with the chat template
    candidates: NotRequired[Any]  # released records: the reference's candidate answers
    reasoning: NotRequired[bool]  # released records: the assistant turn reasons first
    source: NotRequired[str]  # released records: the file and line the item came from
    graph_paths: NotRequired[int]  # reasoning records: the thinking-graph paths behind the chain
    chain: NotRequired[int]  # reasoning records, several chains per sample: which one


def prompt_messages(record: InstructionRecord) -> list[Message]:
    """The turns a model is prompted with: the record's messages without the assistant's answer."""
    return [m for m in record["messages"] if m["role"] != "assistant"]


def user_text(record: InstructionRecord) -> str:
    """The user turn: the EHR markdown, a newline, the task's instruction."""
    return next(m["content"] for m in record["messages"] if m["role"] == "user")
