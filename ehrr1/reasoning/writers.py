"""Reasoning chains from a sample's EHR, thinking graph and known answer, and the filter they must pass.

A chain has three sections, ``## Extraction`` (the evidence in the record), ``## Reasoning`` (how it leads
to the answer) and ``## Final Results`` (the answer); the training example's assistant turn is
``<think>\\n{chain}\\n</think>\\n\\n{answer}``. The template writer verbalises the graph deterministically (the
embedded default: no LLM needed); the LLM writer prompts a model through the shared generation backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ehrr1.backends import Backend, SamplingParams
from ehrr1.config import ChainFilter
from ehrr1.models.tokenizer import THINK_CLOSE, THINK_OPEN
from ehrr1.tasks.metrics import REASONING_SECTIONS as SECTIONS
from ehrr1.tasks.metrics import answer_lines, reasoning_format_problem, set_score, yes_no

Path_ = list[tuple[str, str, float]]


@dataclass(frozen=True)
class ChainRequest:
    id: str
    task: str
    kind: str  # decision or risk
    ehr: str  # the user turn: EHR markdown and the task's instruction
    target: list[str]
    paths: list[Path_]
    labels: dict[str, str]  # concept -> the name the record uses


def display(concept: str, labels: dict[str, str]) -> str:
    if concept in labels:
        return labels[concept]
    namespace, _, name = concept.partition(":")
    if namespace == "outcome":
        task, _, label = name.partition("=")
        return f"{task.replace('_', ' ')}: {label}"
    return f"{name} ({namespace.replace('_', ' ')})"


def verbalise(path: Path_, labels: dict[str, str]) -> str:
    """'A co-occurs with (lift 7.1) B, which is a C' read from the history end back to the target."""
    steps = list(reversed(path))
    text = display(steps[0][0], labels)
    if len(steps) == 1:
        return f"{text} was already recorded before"
    parts = [text]
    for (_, relation, weight), (node, _, _) in zip(steps[:-1], steps[1:], strict=True):
        lift = f" (lift {weight:g})" if relation == "co-occurs with" and weight else ""
        parts.append(f"{_inverse(relation)}{lift} {display(node, labels)}")
    return ", which ".join(parts)


def _inverse(relation: str) -> str:
    return {"is a": "includes", "includes": "is a"}.get(relation, relation.removeprefix("inverse of "))


def answer_of(request: ChainRequest) -> str:
    return "\n".join(request.target)


class TemplateWriter:
    """Deterministic chains from the graph: the evidence it reaches, each path in words, then the answer."""

    name = "template"

    def write(self, requests: list[ChainRequest]) -> list[str]:
        return [self.chain(r) for r in requests]

    @staticmethod
    def chain(request: ChainRequest) -> str:
        evidence = []
        for path in request.paths:
            name = display(path[-1][0], request.labels)
            if name not in evidence:
                evidence.append(name)
        reasoning = []
        for path in request.paths:
            line = f"- {verbalise(path, request.labels)}."
            if line not in reasoning:
                reasoning.append(line)
        if not reasoning:
            reasoning = ["- The record holds no concept linked to the answer; it rests on the overall picture."]
        verdict = (
            f"- Taken together, the answer is {request.target[0]}."
            if request.kind == "risk"
            else f"- Taken together, the expected items are {', '.join(request.target)}."
        )
        return "\n".join(
            [
                SECTIONS[0],
                "- " + ("; ".join(evidence) if evidence else "no linked findings") + ".",
                SECTIONS[1],
                *reasoning,
                verdict,
                SECTIONS[2],
                answer_of(request),
            ]
        )


WRITER_INSTRUCTIONS = """You are a clinician explaining a prediction from a patient's electronic health record.
Below are the record with the question, the known correct answer, and a graph of medical relations linking
concepts in the record to the answer. Write the reasoning that leads from the record to the answer, grounded
in the graph and the record, in exactly three sections:
## Extraction
(the findings in the record that matter, one per line)
## Reasoning
(how those findings lead to the answer, one step per line, no repeated lines)
## Final Results
(the answer, one item per line, exactly as given)"""


class LLMWriter:
    """Chains written by a model through a generation backend (hf, vllm or a local OpenAI-compatible server)."""

    name = "llm"

    def __init__(self, backend: Backend, sampling: SamplingParams):
        self.backend = backend
        self.sampling = sampling

    def prompt(self, request: ChainRequest) -> str:
        relations = "\n".join(f"- {verbalise(p, request.labels)}" for p in request.paths) or "- (none found)"
        content = (
            f"{WRITER_INSTRUCTIONS}\n\n# Record and question\n{request.ehr}\n\n# Correct answer\n"
            f"{answer_of(request)}\n\n# Relations\n{relations}"
        )
        return self.backend.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def write(self, requests: list[ChainRequest]) -> list[str]:
        if not requests:
            return []
        generations = self.backend.generate([self.prompt(r) for r in requests], self.sampling)
        return ["" if g.error else g.text.strip() for g in generations]


OLD_SECTIONS = ("Extraction and Analysis", "Reasoning and Summary")  # headers the reference's filter refuses


def reference_chain_problem(chain: str, target: list[str], min_label_share: float = 0.7) -> str | None:
    """The reference's filter (filter_reasoning.py): at least ``min_label_share`` of the labels appear (as
    written) after the last "Final Results", "ground truth" never appears, nor its old section headers."""
    final = chain.rsplit("Final Results")[-1]
    if target and sum(label in final for label in target) / len(target) < min_label_share:
        return "misses the answer"
    if "ground truth" in chain.lower():
        return "says ground truth"
    if any(header in chain for header in OLD_SECTIONS):
        return "format"
    return None


def check_chain(
    chain: str, request: ChainRequest, min_answer_recall: float, rule: ChainFilter = ChainFilter.ehrr1
) -> str | None:
    """Why a chain is dropped (None: kept). ``ehrr1``: a missing or misordered section, repeated lines, or
    final results that miss the answer (decision: recall below ``min_answer_recall``; risk: another
    yes/no). ``reference``: :func:`reference_chain_problem` with ``min_answer_recall`` as the label share."""
    if ChainFilter(rule) is ChainFilter.reference:
        return reference_chain_problem(chain, request.target, min_answer_recall)
    problem = reasoning_format_problem(chain)
    if problem:
        return problem
    final = chain[chain.find(SECTIONS[2]) + len(SECTIONS[2]) :]
    if request.kind == "risk":
        return None if yes_no(final) == request.target[0] else "misses the answer"
    if not answer_lines(final) or set_score(final, request.target).recall < min_answer_recall:
        return "misses the answer"
    return None


def assistant_turn(chain: str, request: ChainRequest) -> str:
    return f"{THINK_OPEN}\n{chain}\n{THINK_CLOSE}\n\n{answer_of(request)}"


def chain_record(record: dict[str, Any], chain: str, request: ChainRequest, paths: int) -> dict[str, Any]:
    """The reasoning SFT record: the instruction record with the assistant turn replaced."""
    messages = [m for m in record["messages"] if m["role"] != "assistant"]
    return {
        **record,
        "messages": [*messages, {"role": "assistant", "content": assistant_turn(chain, request)}],
        "graph_paths": paths,
    }
