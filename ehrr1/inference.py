"""Ask a model one task about one patient: ``Predictor`` in Python, ``python -m ehrr1.inference`` on the CLI.

The prompt is built exactly as for training and evaluation (one prompt builder): from a patient's timeline
(events before ``until``, the task's forbidden event types left out, cut from the oldest events to the
token budget) or from EHR markdown the caller rendered. Generation goes through a shared backend.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ehrr1.backends import SamplingParams, load_backend
from ehrr1.data.timeline import Timeline, TimelineStore
from ehrr1.tasks.prompt import PromptBuilder, ThinkingSwitch, generation_prompt
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.samples import Sample
from ehrr1.think import split_reasoning


@dataclass(frozen=True)
class Prediction:
    task: str
    answer: str  # the final answer: the text after the reasoning
    reasoning: str  # the text before </think> (empty with thinking off)
    p_yes: float | None  # risk tasks: P(yes) / (P(yes) + P(no)) at the answer
    events_dropped: int  # oldest events cut to fit the model's context


class Predictor:
    def __init__(
        self,
        model: str,
        backend: str = "hf",
        device: str = "auto",
        thinking: bool = False,
        max_tokens: int = 1024,
        max_input_tokens: int = 8192,
        switch: ThinkingSwitch = ThinkingSwitch.enable_thinking,
        **backend_settings: Any,
    ):
        """``backend_settings`` go to the backend (e.g. ``base_url`` for openai, ``max_model_len`` for vllm)."""
        if backend == "hf":
            backend_settings.setdefault("device", device)
        self.backend = load_backend(backend, model_path=model, **backend_settings)
        self.builder = PromptBuilder(self.backend.tokenizer, max_input_tokens)
        self.registry = TaskRegistry()
        self.thinking = thinking
        self.switch = switch
        self.sampling = SamplingParams(max_tokens=max_tokens)

    def predict(
        self, task: str, timeline: Timeline | None = None, markdown: str | None = None, until: int | None = None
    ) -> Prediction:
        """The model's answer to ``task`` for a timeline (events before ``until``, default all) or markdown."""
        spec = self.registry[task]  # an unknown name fails listing the tasks
        if (timeline is None) == (markdown is None):
            raise ValueError("give either a timeline or EHR markdown")
        dropped = 0
        if timeline is not None:
            end = len(timeline) if until is None else until
            if not 1 < end <= len(timeline):
                raise ValueError(
                    f"until={until}: the timeline of subject {timeline.subject_id} has {len(timeline)} events"
                )
            now = Sample(timeline.subject_id, None, task, end - 1, 1, end, None, None, ())
            prompt = self.builder.build(timeline, now, spec)
            messages, dropped = prompt.messages, prompt.events_dropped
        else:
            assert markdown is not None  # one of the two, checked above
            messages = self.builder.messages_for(markdown, spec)
        text = generation_prompt(self.backend.tokenizer, messages, self.thinking, self.switch)
        out = self.backend.generate([text], self.sampling, [spec.is_risk])[0]
        reasoning, answer = split_reasoning(out.text)
        return Prediction(task, answer.strip(), reasoning.strip(), out.p_yes, dropped)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ehrr1.inference", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model directory (e.g. a stage's hf/) or hub id")
    parser.add_argument("--task", required=True, help="a task name, e.g. labevents or Inpatient_Mortality")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--markdown", help="a file with the patient's EHR markdown")
    source.add_argument("--timelines", help="a timeline store directory (with --subject)")
    parser.add_argument("--subject", type=int, help="subject_id of the patient in --timelines")
    parser.add_argument("--until", type=int, default=None, help="use events before this index (default: all)")
    parser.add_argument("--thinking", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--max-input-tokens", type=int, default=8192)
    parser.add_argument("--device", default="auto", help="hf backend: auto, cpu, cuda, ...")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"])
    parser.add_argument("--base-url", help="openai backend: the server, e.g. http://localhost:8000/v1")
    args = parser.parse_args(argv)
    settings = {"base_url": args.base_url} if args.base_url else {}
    predictor = Predictor(
        args.model,
        backend=args.backend,
        device=args.device,
        thinking=args.thinking,
        max_tokens=args.max_tokens,
        max_input_tokens=args.max_input_tokens,
        **settings,
    )
    if args.markdown:
        prediction = predictor.predict(args.task, markdown=Path(args.markdown).read_text(encoding="utf-8"))
    else:
        if args.subject is None:
            parser.error("--timelines needs --subject")
        timeline = TimelineStore(args.timelines).load(args.subject)
        prediction = predictor.predict(args.task, timeline=timeline, until=args.until)
    json.dump(asdict(prediction), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
