"""Ask a model one task about one patient: ``Predictor`` in Python, ``python -m ehrr1.inference`` on the CLI.

A task is asked exactly as evaluation asks it: the prompt from the one prompt builder (a patient's timeline,
events before ``until``, the task's forbidden event types left out, cut from the oldest events to the token
budget; or EHR markdown the caller rendered), templated with the model's thinking switch, and put to the model
through the evaluation's requests: a risk task answered with one token among yes / no and its P(yes), a
decision task generated. The backend is built as ``evaluate.py backend=<name>`` builds it, and a training
stage's weights (``<run>/stages/<k>_<stage>/hf``) load and are prompted as that run's config says.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ehrr1.backends import SamplingParams, backend_config, build_backend
from ehrr1.config import MarkdownStyle, ModelConfig, ThinkingSwitch, settings_of
from ehrr1.data.timeline import Timeline, TimelineStore
from ehrr1.errors import UserError
from ehrr1.evaluation.harness import build_requests, generate_answers
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.samples import Sample
from ehrr1.think import split_reasoning

DEFAULT_INPUT_TOKENS = 8192  # the prompt budget of weights that no ehrr1 run describes


@dataclass(frozen=True)
class Prediction:
    task: str
    answer: str  # the final answer: the text after the reasoning (risk tasks: yes or no)
    reasoning: str  # the text before </think> (empty with thinking off)
    p_yes: float | None  # risk tasks: P(yes) / (P(yes) + P(no)) at the answer
    events_dropped: int  # oldest events cut to fit the model's context


def model_settings(model_path: str, **given: Any) -> tuple[ModelConfig, MarkdownStyle]:
    """How ``model_path`` loads and is prompted, and the markdown its prompts use: a training stage's weights
    (``<stage dir>/hf``) as the stage's stored config says (dtype, attention, thinking switch, prompt budget);
    other weights by the schema's defaults. ``given`` model settings win over either."""
    path = Path(model_path)
    stored = path.parent / "config.yaml"
    if path.name == "hf" and stored.exists():
        run = OmegaConf.load(stored)
        base, style = run.model, MarkdownStyle(run.markdown.style)
    else:
        base = OmegaConf.create({"name": path.name or model_path, "max_input_tokens": DEFAULT_INPUT_TOKENS})
        style = MarkdownStyle.reference
    node = cast(
        DictConfig, OmegaConf.merge(base, {"path": model_path}, {k: v for k, v in given.items() if v is not None})
    )
    if "context_length" not in node or OmegaConf.is_missing(node, "context_length"):
        node.context_length = node.max_input_tokens
    return settings_of(ModelConfig, node), style


class Predictor:
    def __init__(
        self,
        model: str,
        backend: str = "hf",
        thinking: bool = False,
        max_tokens: int = 1024,
        seed: int = 0,
        model_config: dict[str, Any] | None = None,
        **backend_settings: Any,
    ):
        """``model_config``: model settings over those of the weights (e.g. ``max_input_tokens``,
        ``thinking_switch``); ``backend_settings``: the ``backend=<backend>`` option's settings (``device`` for
        hf, ``base_url`` for openai, ``max_model_len`` for vllm)."""
        self.model_id = model
        self.model, style = model_settings(model, **(model_config or {}))
        self.backend = build_backend(backend_config(backend, **backend_settings), model, self.model, seed)
        self.builder = PromptBuilder(self.backend.tokenizer, self.model.max_input_tokens, style=style)
        self.registry = TaskRegistry()
        self.thinking = thinking
        self.sampling = SamplingParams(max_tokens=max_tokens, seed=seed)

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
        record: InstructionRecord = {
            "id": task,
            "messages": messages,
            "task": task,
            "kind": spec.kind.value,
            "metric": spec.metric.value,
            "subject_id": timeline.subject_id if timeline is not None else None,
            "hadm_id": None,
            "target": [],
            "split": "",
        }
        requests = build_requests(
            [record], self.backend.tokenizer, self.model_id, self.sampling, self.thinking, self.model.thinking_switch
        )
        out = generate_answers(self.backend, requests, self.sampling)[0]
        if out.error:
            raise UserError(f"{self.model_id}: the backend could not answer ({out.error})")
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
    parser.add_argument(
        "--max-input-tokens", type=int, help=f"prompt budget (default: the run's, else {DEFAULT_INPUT_TOKENS})"
    )
    parser.add_argument(
        "--thinking-switch", choices=[s.value for s in ThinkingSwitch], help="default: the run's, else enable_thinking"
    )
    parser.add_argument("--dtype", help="float32, bfloat16, float16 (default: the run's, else float32)")
    parser.add_argument("--device", default="auto", help="hf backend: auto, cpu, cuda, ...")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm", "openai"])
    parser.add_argument("--base-url", help="openai backend: the server, e.g. http://localhost:8000/v1")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = {"base_url": args.base_url} if args.base_url else {}
    if args.backend == "hf":
        settings["device"] = args.device
    given = {"max_input_tokens": args.max_input_tokens, "thinking_switch": args.thinking_switch, "dtype": args.dtype}
    predictor = Predictor(
        args.model,
        backend=args.backend,
        thinking=args.thinking,
        max_tokens=args.max_tokens,
        model_config=given,
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
