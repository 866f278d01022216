"""The prompt builder, shared by SFT, RL, evaluation and synthesis.

system: "You are a helpful assistant."; user: markdown EHR + "\\n" + instruction. The EHR is the
demographics, the current admission and the previous discharge summary when the sample has them, then
the context window without the task's forbidden event types. When a tokenizer and a budget are given,
the oldest window events are dropped (whole events, never mid-event) until the prompt fits; the previous
discharge summary goes next if needed. Reasoning mode: models with a thinking switch take
``enable_thinking``; others get a closed think block appended (``closed_think``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ehrr1.data.events import DEMOGRAPHICS
from ehrr1.data.markdown import render_event
from ehrr1.data.timeline import Event, Timeline
from ehrr1.tasks.registry import TaskSpec
from ehrr1.tasks.samples import Sample

SYSTEM_PROMPT = "You are a helpful assistant."
CLOSED_THINK = "<think>\n\n</think>\n"  # appended by models without a thinking switch


class ThinkingSwitch(str, Enum):
    enable_thinking = "enable_thinking"  # the chat template takes enable_thinking (Qwen3, EHR-R1-1.7B/8B)
    closed_think = "closed_think"  # append an empty think block to turn reasoning off (EHR-R1-72B)


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, str]]  # system and user
    answer: str
    events_dropped: int  # oldest window events cut to fit the budget
    n_tokens: int | None  # prompt tokens with the chat template, when a tokenizer was given
    fits: bool


def answer_text(sample: Sample) -> str:
    return "\n".join(sample.target)


def _count(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
        return len(ids)
    return len(tokenizer(messages[-1]["content"])["input_ids"])


class PromptBuilder:
    def __init__(self, tokenizer: Any = None, max_input_tokens: int | None = None, system: str = SYSTEM_PROMPT):
        if max_input_tokens is not None and tokenizer is None:
            raise ValueError("a token budget (max_input_tokens) needs the model's tokenizer to measure it")
        self.tokenizer = tokenizer
        self.max_input_tokens = max_input_tokens
        self.system = system

    def parts(self, timeline: Timeline, sample: Sample, task: TaskSpec) -> tuple[list[Event], list[Event]]:
        """(fixed events: admission, previous discharge; window events without forbidden types)."""
        fixed = [timeline[i] for i in (sample.admissions_id, sample.last_discharge_id) if i is not None]
        window = timeline.window(sample.period_begin, sample.period_end)
        hidden = {*task.forbidden, DEMOGRAPHICS}
        return [e for e in fixed if e.event_type not in hidden], [e for e in window if e.event_type not in hidden]

    def _messages(
        self,
        timeline: Timeline,
        fixed: list[Event],
        window: list[Event],
        rendered: dict[int, str],
        task: TaskSpec,
        anchor_time,
    ) -> list[dict[str, str]]:
        shown = fixed + window
        demographics = dataclasses.replace(timeline[0], time=shown[0].time if shown else anchor_time)
        sections = [render_event(demographics)] + [rendered[id(e)] for e in shown]
        return self.messages_for("\n\n".join(sections), task)

    def messages_for(self, ehr_markdown: str, task: TaskSpec) -> list[dict[str, str]]:
        """system + user (the EHR markdown, a newline, the task's instruction): the one prompt format."""
        user = ehr_markdown + "\n" + task.prompt_instruction
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def build(self, timeline: Timeline, sample: Sample, task: TaskSpec) -> Prompt:
        fixed, window = self.parts(timeline, sample, task)
        rendered = {id(e): render_event(e) for e in fixed + window}
        anchor_time = timeline[sample.event].time

        def attempt(drop: int, keep_fixed: list[Event]) -> list[dict[str, str]]:
            return self._messages(timeline, keep_fixed, window[drop:], rendered, task, anchor_time)

        if self.tokenizer is None or self.max_input_tokens is None:
            messages = attempt(0, fixed)
            n = _count(self.tokenizer, messages) if self.tokenizer is not None else None
            return Prompt(messages, answer_text(sample), 0, n, True)
        budget = self.max_input_tokens
        for keep in (fixed, [e for e in fixed if e.event_type != "discharge"]):
            if _count(self.tokenizer, attempt(len(window), keep)) > budget:
                continue
            low, high = 0, len(window)  # the fewest drops that fit: counts fall as drops grow
            while low < high:
                middle = (low + high) // 2
                if _count(self.tokenizer, attempt(middle, keep)) <= budget:
                    high = middle
                else:
                    low = middle + 1
            messages = attempt(low, keep)
            return Prompt(messages, answer_text(sample), low, _count(self.tokenizer, messages), True)
        messages = attempt(len(window), [e for e in fixed if e.event_type != "discharge"])
        return Prompt(messages, answer_text(sample), len(window), _count(self.tokenizer, messages), False)


def generation_prompt(
    tokenizer: Any,
    messages: list[dict[str, str]],
    thinking: bool,
    switch: ThinkingSwitch = ThinkingSwitch.enable_thinking,
) -> str:
    """The text a model continues: chat template plus the model's way of turning reasoning on or off."""
    if switch is ThinkingSwitch.enable_thinking:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text if thinking else text + CLOSED_THINK
