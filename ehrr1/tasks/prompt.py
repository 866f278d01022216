"""The prompt builder, shared by SFT, RL, evaluation and synthesis.

system: "You are a helpful assistant."; user: markdown EHR + "\\n" + instruction. The EHR is, as the
reference builds it (``mimiciv.py`` ``process_cases``): the demographics, the previous discharge note and
the current admission when the sample has them (never when the admission is a decision sample's own anchor),
then the context window without admission events and the task's forbidden event types. When a tokenizer
and a budget are given, the oldest window events are dropped (whole events, never mid-event) until the
prompt fits; the previous discharge note goes next if needed. Byte-level BPE tokenizers with a known split
count the prompt exactly from its sections' counts (``token_count``: each event tokenised once per patient);
others estimate from the sections and count whole prompts around the cut. Reasoning mode: models with a
thinking switch take ``enable_thinking``; others get a closed think block appended (``closed_think``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ehrr1.config import ThinkingSwitch
from ehrr1.data.events import DEMOGRAPHICS
from ehrr1.data.markdown import MarkdownStyle, join_sections, render_event
from ehrr1.data.timeline import Event, Timeline, TimelineExcerpt
from ehrr1.tasks.records import Message
from ehrr1.tasks.registry import TaskSpec
from ehrr1.tasks.samples import Sample
from ehrr1.tasks.token_count import PieceCounter
from ehrr1.think import CLOSED_THINK

SYSTEM_PROMPT = "You are a helpful assistant."
MERGE_SLACK = 2  # tokens an event's own count can exceed what it adds to a prompt (merged boundaries)


@dataclass(frozen=True)
class Prompt:
    messages: list[Message]  # system and user
    answer: str
    events_dropped: int  # oldest window events cut to fit the budget
    n_tokens: int | None  # prompt tokens with the chat template, when a tokenizer was given
    fits: bool


def answer_text(sample: Sample) -> str:
    return "\n".join(sample.target)


def _count(tokenizer: Any, messages: list[Message]) -> int:
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
        return len(ids)
    return len(tokenizer(messages[-1]["content"])["input_ids"])


class PromptBuilder:
    def __init__(
        self,
        tokenizer: Any = None,
        max_input_tokens: int | None = None,
        system: str = SYSTEM_PROMPT,
        style: MarkdownStyle = MarkdownStyle.reference,
    ):
        if max_input_tokens is not None and tokenizer is None:
            raise ValueError("a token budget (max_input_tokens) needs the model's tokenizer to measure it")
        self.tokenizer = tokenizer
        self.max_input_tokens = max_input_tokens
        self.system = system
        self.style = MarkdownStyle(style)
        self._cache: _EventCache | None = None
        # exact counts from the sections' own (the clean style's age line changes with the events shown)
        additive = max_input_tokens is not None and self.style is MarkdownStyle.reference
        self._pieces = PieceCounter.for_tokenizer(tokenizer, system) if additive else None

    def parts(
        self, timeline: Timeline | TimelineExcerpt, sample: Sample, task: TaskSpec
    ) -> tuple[list[Event | None], list[Event]]:
        """(fixed parts: previous discharge, current admission, None where absent; window events shown)."""
        discharge = None if sample.last_discharge_id is None else timeline[sample.last_discharge_id]
        # a decision anchor is never input: the reference prepends it when it is the admission itself
        # (next_event at an admission), which we do not
        own_answer = not task.is_risk and sample.admissions_id == sample.event
        admission = None if sample.admissions_id is None or own_answer else timeline[sample.admissions_id]
        window = timeline.window(sample.period_begin, sample.period_end)
        hidden = {*task.forbidden, DEMOGRAPHICS, "admissions"}
        return [discharge, admission], [e for e in window if e.event_type not in hidden]

    def _messages(
        self,
        timeline: Timeline | TimelineExcerpt,
        fixed: list[Event | None],
        window: list[Event],
        rendered: dict[int, str],
        task: TaskSpec,
        anchor_time,
    ) -> list[Message]:
        demographics = timeline[0]
        if self.style is MarkdownStyle.clean:  # the age at the first event shown
            shown = [e for e in (*fixed, *window) if e is not None and e.time is not None]
            demographics = dataclasses.replace(demographics, time=shown[0].time if shown else anchor_time)
        sections = [render_event(demographics, self.style)]
        sections += ["" if e is None else rendered[id(e)] for e in fixed] + [rendered[id(e)] for e in window]
        return self.messages_for(join_sections(sections, self.style), task)

    def messages_for(self, ehr_markdown: str, task: TaskSpec) -> list[Message]:
        """system + user (the EHR markdown, a newline, the task's instruction): the one prompt format."""
        user = ehr_markdown + "\n" + task.prompt_instruction
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def build(self, timeline: Timeline | TimelineExcerpt, sample: Sample, task: TaskSpec) -> Prompt:
        fixed, window = self.parts(timeline, sample, task)
        anchor_time = timeline[sample.event].time
        cache = self._event_cache(timeline)

        def attempt(drop: int, keep_fixed: list[Event | None]) -> list[Message]:
            shown = [*(e for e in keep_fixed if e is not None), *window[drop:]]
            rendered = {id(e): cache.text(e) for e in shown}
            return self._messages(timeline, keep_fixed, window[drop:], rendered, task, anchor_time)

        if self.tokenizer is None or self.max_input_tokens is None:
            messages = attempt(0, fixed)
            n = _count(self.tokenizer, messages) if self.tokenizer is not None else None
            return Prompt(messages, answer_text(sample), 0, n, True)
        if self._pieces is not None:
            with contextlib.suppress(_NotCuttable):  # then counted whole, below
                drop, keep, n, fits = self._fit_by_pieces(timeline, fixed, window, task, cache)
                return Prompt(attempt(drop, keep), answer_text(sample), drop, n, fits)
        budget = self.max_input_tokens
        skeleton = _count(self.tokenizer, attempt(len(window), [None, None]))  # demographics, instruction
        for keep in (fixed, [None, fixed[1]]):  # then without the previous discharge note
            # The estimate: the pieces' own token counts added, each event's newest first; then exact
            # counts of the prompt. Where a tokenizer merges tokens across a piece's boundary the estimate
            # is a token or two off: events are dropped while the prompt does not fit, and one more is
            # tried while the exact count leaves room for it, give or take MERGE_SLACK tokens.
            base = skeleton + sum(cache.tokens([e for e in keep if e is not None]))
            if base - MERGE_SLACK > budget:
                continue
            drop, n = _newest_that_fit(window, base, budget, cache.tokens)
            n = _count(self.tokenizer, attempt(drop, keep))
            while n > budget and drop < len(window):
                drop += 1
                n = _count(self.tokenizer, attempt(drop, keep))
            if n > budget:
                continue
            while drop > 0 and n + cache.tokens([window[drop - 1]])[0] - MERGE_SLACK <= budget:
                more = _count(self.tokenizer, attempt(drop - 1, keep))
                if more > budget:
                    break
                drop, n = drop - 1, more
            return Prompt(attempt(drop, keep), answer_text(sample), drop, n, True)
        messages = attempt(len(window), [None, fixed[1]])
        return Prompt(messages, answer_text(sample), len(window), _count(self.tokenizer, messages), False)

    def _fit_by_pieces(
        self,
        timeline: Timeline | TimelineExcerpt,
        fixed: list[Event | None],
        window: list[Event],
        task: TaskSpec,
        cache: _EventCache,
    ) -> tuple[int, list[Event | None], int, bool]:
        """(events dropped, fixed parts kept, exact tokens, fits) from the sections' counts; raises
        ``_NotCuttable`` where a section is empty or starts with a space."""
        pieces, budget = self._pieces, self.max_input_tokens
        assert pieces is not None and budget is not None
        tail = "\n" + task.prompt_instruction + pieces.suffix

        def texts(events: list[Event]) -> list[str]:
            found = [cache.text(e) for e in events]
            if any(not t or t[0].isspace() for t in found):
                raise _NotCuttable
            return found

        def followed(events: list[Event]) -> list[int]:  # window events with a newer one after them
            return pieces.counts([t + "\n\n" for t in texts(events)])

        newest = texts(window[-1:])
        for keep in (fixed, [None, fixed[1]]):
            head = [cache.text(timeline[0]), *("" if e is None else cache.text(e) for e in keep)]
            if any(s[:1].isspace() for s in head[1:]):
                raise _NotCuttable
            *inner, last = _joined_pieces(pieces.prefix, head)
            before = sum(pieces.counts([p + "\n\n" for p in inner]))
            if window:
                n = before + pieces.counts([last + "\n\n"])[0] + pieces.counts([newest[0] + tail], last=True)[0]
                if n <= budget:
                    drop, n = _newest_that_fit(window[:-1], n, budget, followed)
                    return drop, keep, n, True
            without_events = before + pieces.counts([last + tail], last=True)[0]
            if without_events <= budget:
                return len(window), keep, without_events, True
        return len(window), [None, fixed[1]], without_events, False

    def _event_cache(self, timeline: Timeline | TimelineExcerpt) -> _EventCache:
        """Each event of this timeline rendered and tokenised once, however many samples show it."""
        if self._cache is None or self._cache.timeline is not timeline:
            self._cache = _EventCache(timeline, self.style, self.tokenizer)
            if self._pieces is not None:
                self._pieces.clear()
        return self._cache


class _NotCuttable(Exception):
    """A section is empty or starts with a space: the prompt cannot be cut before it, so it is counted whole."""


class _EventCache:
    """Rendered text and token count per event of one timeline (the samples of a patient share events)."""

    def __init__(self, timeline: Timeline | TimelineExcerpt, style: MarkdownStyle, tokenizer: Any):
        self.timeline, self.style, self.tokenizer = timeline, style, tokenizer
        self._texts: dict[int, str] = {}
        self._tokens: dict[int, int] = {}

    def text(self, event: Event) -> str:
        key = id(event)
        if key not in self._texts:
            self._texts[key] = render_event(event, self.style)
        return self._texts[key]

    def tokens(self, events: list[Event]) -> list[int]:
        """Tokens each event adds to a prompt (its section and the blank line before it), in one call."""
        missing = [e for e in events if id(e) not in self._tokens]
        if missing:
            encoded = self.tokenizer(["\n\n" + self.text(e) for e in missing], add_special_tokens=False)
            self._tokens.update((id(e), len(ids)) for e, ids in zip(missing, encoded["input_ids"], strict=True))
        return [self._tokens[id(e)] for e in events]


def _joined_pieces(prefix: str, sections: list[str]) -> list[str]:
    """The sections as the prompt joins them (blank lines between), cut before each non-empty one after the
    first: an empty section's blank line stays with the piece before it. The first piece starts with ``prefix``."""
    pieces = [prefix + sections[0]]
    for section in sections[1:]:
        if section:
            pieces.append(section)
        else:
            pieces[-1] += "\n\n"
    return pieces


def _newest_that_fit(
    window: list[Event], base: int, budget: int, counts: Callable[[list[Event]], list[int]], chunk: int = 8
) -> tuple[int, int]:
    """(events dropped, tokens) keeping the newest events whose ``counts`` add up, from ``base``, within
    budget; the events are counted ``chunk`` at a time, newest first, only as far as they are needed."""
    drop, n = len(window), base
    while drop > 0:
        older = window[max(0, drop - chunk) : drop]
        for tokens in reversed(counts(older)):
            if n + tokens > budget:
                return drop, n
            drop, n = drop - 1, n + tokens
    return drop, n


def _with_thinking_suffix(messages: list[Message], thinking: bool) -> list[Message]:
    """The messages with Qwen3's soft switch, ``/think`` or ``/no_think``, after the last turn's text."""
    *head, last = messages
    return [*head, {**last, "content": last["content"] + ("\n/think" if thinking else "\n/no_think")}]


def generation_prompt(
    tokenizer: Any,
    messages: list[Message],
    thinking: bool,
    switch: ThinkingSwitch = ThinkingSwitch.enable_thinking,
) -> str:
    """The text a model continues: chat template plus the model's way of turning reasoning on or off. The one
    prompt of a record: SFT trains on it, RL samples from it and evaluation asks it, each with ``thinking`` as
    the record is answered there (a reasoning chain: on; a direct answer, a one-token risk answer: off)."""
    if switch is ThinkingSwitch.suffix:
        return tokenizer.apply_chat_template(
            _with_thinking_suffix(messages, thinking), tokenize=False, add_generation_prompt=True
        )
    if switch is ThinkingSwitch.enable_thinking:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text if thinking else text + CLOSED_THINK
