"""Reasoning chains from a sample's EHR, thinking graph and known answer, and the filter they must pass.

A chain has three sections, ``## Extraction`` (the evidence in the record), ``## Reasoning`` (how it leads
to the answer) and ``## Final Results`` (the answer); the training example's assistant turn is
``<think>\\n{chain}\\n</think>\\n\\n{answer}``. The template writer verbalises the graph deterministically (the
embedded default: no LLM needed); the LLM writer prompts a model through the shared generation backends,
with our short prompt or the reference's (``writer.prompt=reference``), one or several chains per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ehrr1.backends import Backend, SamplingParams
from ehrr1.config import ChainFilter, ChainPrompt
from ehrr1.tasks.metrics import REASONING_SECTIONS as SECTIONS
from ehrr1.tasks.metrics import answer_lines, reasoning_format_problem, set_score, yes_no
from ehrr1.tasks.records import InstructionRecord, Message, prompt_messages
from ehrr1.think import with_reasoning

Path_ = list[tuple[str, str, float]]


@dataclass(frozen=True)
class ChainRequest:
    id: str
    task: str
    kind: str  # decision or risk
    ehr: str  # the user turn: EHR markdown and the task's instruction
    instruction: str  # the task's instruction (the end of ``ehr``)
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

    def write(self, requests: list[ChainRequest]) -> list[list[str]]:
        return [[self.chain(r)] for r in requests]

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
    """Chains written by a model through a generation backend (hf, vllm or a local OpenAI-compatible server):
    ``chains`` per sample, drawn with seeds ``sampling.seed``, ``+ 1``, ... so each draw is reproducible."""

    name = "llm"

    def __init__(
        self, backend: Backend, sampling: SamplingParams, prompt: ChainPrompt = ChainPrompt.ehrr1, chains: int = 1
    ):
        self.backend = backend
        self.sampling = sampling
        self.style = ChainPrompt(prompt)
        self.chains = chains

    def prompt(self, request: ChainRequest) -> str:
        if self.style is ChainPrompt.reference:
            content = reference_prompt(request)
        else:
            relations = "\n".join(f"- {verbalise(p, request.labels)}" for p in request.paths) or "- (none found)"
            content = (
                f"{WRITER_INSTRUCTIONS}\n\n# Record and question\n{request.ehr}\n\n# Correct answer\n"
                f"{answer_of(request)}\n\n# Relations\n{relations}"
            )
        return self.backend.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def write(self, requests: list[ChainRequest]) -> list[list[str]]:
        if not requests:
            return []
        prompts = [self.prompt(r) for r in requests]
        draws = [
            self.backend.generate(prompts, replace(self.sampling, seed=self.sampling.seed + k))
            for k in range(self.chains)
        ]
        return [["" if g.error else g.text.strip() for g in per_request] for per_request in zip(*draws, strict=True)]


REFERENCE_PROMPT = """
========================================
# Patient EHR Context #
{context}

========================================
# Retrieved Medical Knowledge #
{knowledge}

========================================
# Ground Truth #
{ground_truth}

========================================
# Task #
{task}
========================================

# Data Description
- # Patient EHR Context #: every event and its content along the patient's stay.
- # Retrieved Medical Knowledge #: elements of the context and the relations that may link them to the \
ground truth.
- # Ground Truth #: the correct answers of the task; your result must match them exactly.
- # Task #: what to predict from the # Patient EHR Context #.

# Instructions
Write a rigorous medical reasoning that derives the # Ground Truth # from the # Patient EHR Context # and \
the # Task #.

# Requirements
Three stages: Extraction, Reasoning and Final Results.

## Extraction
- Pick out each piece of key information in the # Patient EHR Context #, guided by the # Retrieved \
Medical Knowledge #.
- Leave out information that does not help the reasoning.
- Write each step of the Extraction stage as below; **give the event name and time of each extracted item**:
    **Event Name [Event Time]**: the information extracted from the event and how it may relate to the \
ground truth.

## Reasoning
- Analyse the relationship between the context and each item in # Ground Truth # specifically and \
professionally, with detailed reasoning steps.
- Cover as many items of # Ground Truth # as you can; items that cannot be inferred from the context may be \
left out.
- Do not use the words "maybe", "possible" or "though"; find all the supporting information you can so the \
reasoning is correct.
- Keep the reasoning concise and rigorous; each step states the medical knowledge it uses.
- Reason only forward, from the context to the items in the ground truth, never backwards.

## Final Results
- Give the final result of the task: **only the items of # Ground Truth # correctly inferred in the \
## Reasoning stage.**
- Write each item of ## Final Results exactly as it is written in # Ground Truth #.

# Important Notes!!!
- **For each piece of # Retrieved Medical Knowledge # relevant to the # Task #, find where its first item \
appears in the # Patient EHR Context # and point to it in the Extraction stage.**
- **In the ## Reasoning stage, analyse very carefully how each item in # Ground Truth # is inferred.**
- **Above all, use # Ground Truth # and # Retrieved Medical Knowledge # implicitly: never write phrases \
such as "according to the medical knowledge above", "as shown in ground truth" or anything that reveals \
that you know the underlying medical knowledge or the ground truth.**

# Output Format
## Extraction
[YOUR OUTPUT]

## Reasoning
[YOUR OUTPUT]

## Final Results
[YOUR OUTPUT]
"""


def reference_prompt(request: ChainRequest) -> str:
    """The reference's knowledge-grounded request (reasoning_generation_new.py, in our words, same structure):
    the EHR without the instruction, one graph path per line, the answer as a Python list, the instruction."""
    context = request.ehr.removesuffix(request.instruction).removesuffix("\n")
    knowledge = "\n".join(verbalise(p, request.labels) for p in request.paths)
    return REFERENCE_PROMPT.format(
        context=context, knowledge=knowledge, ground_truth=str(list(request.target)), task=request.instruction
    )


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
    return with_reasoning(chain, answer_of(request))


def chain_record(record: InstructionRecord, chain: str, request: ChainRequest, paths: int) -> InstructionRecord:
    """The reasoning SFT record: the instruction record with the assistant turn replaced."""
    answer: Message = {"role": "assistant", "content": assistant_turn(chain, request)}
    return {**record, "messages": [*prompt_messages(record), answer], "graph_paths": paths}
