"""The evaluation harness: EHR-Bench records -> prompts -> generations -> per-sample scores, resumable.

Each finished sample is appended (and flushed) to ``results.jsonl`` under a key hashed from what produced its
answer: the sample id, the model (a fingerprint of its weights, the backend and dtype it runs with), the
prompt and the sampling settings. A re-run skips every key already there, so a killed evaluation resumes
without duplicates, and re-scores the stored answers against the targets and metrics of now. A sample whose
generation failed (a server error after retries) is stored as a failure and asked again by the next run.
Requests are generated in prompt order, so samples sharing a patient context run together (prefix caches see
them back to back); results come back in request order.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ehrr1.backends import ONE_TOKEN_YES_NO, Backend, Generation, SamplingParams
from ehrr1.errors import DataError, MissingInputError
from ehrr1.resumable import Ledger
from ehrr1.tasks.metrics import final_answer, score, to_text
from ehrr1.tasks.prompt import ThinkingSwitch, generation_prompt
from ehrr1.tasks.records import InstructionRecord, prompt_messages
from ehrr1.utils import digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    key: str
    id: str
    task: str
    kind: str  # decision or risk
    metric: str
    target: list[str]
    prompt: str
    one_token: bool = False  # answered with one token among yes / no (thinking off), not generated
    tokens_cut: int = 0  # prompt tokens cut from the left to fit ``max_prompt_tokens``


def iter_bench(
    path: str | Path, tasks: list[str] | None = None, limit: int | None = None
) -> Iterator[InstructionRecord]:
    """Records of an exported split, a line at a time, optionally only some tasks and at most ``limit``
    per task (file order)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"no benchmark data at {path}: run synthesize.py for this task mix first")
    taken: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                task = record["task"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise DataError(f"{path}, line {n}: expected an exported record with 'task' ({exc})") from exc
            if (tasks and task not in tasks) or (limit is not None and taken.get(task, 0) >= limit):
                continue
            taken[task] = taken.get(task, 0) + 1
            yield record


def read_bench(path: str | Path, tasks: list[str] | None = None, limit: int | None = None) -> list[InstructionRecord]:
    return list(iter_bench(path, tasks, limit))


def build_requests(
    records: list[InstructionRecord],
    tokenizer: Any,
    model_id: str,
    sampling: SamplingParams,
    thinking: bool,
    switch: ThinkingSwitch,
    risk_one_token: bool = True,
    max_prompt_tokens: int | None = None,
) -> list[Request]:
    """One request per record (in record order), prompted as training saw it, without the assistant's answer.
    ``model_id`` names the model as it generates (its weights, and where it matters how they load and run).

    With ``risk_one_token`` (the reference's protocol) risk tasks are asked with thinking off and answered
    with one token among yes / no; otherwise they are generated like the decision tasks. A prompt longer
    than ``max_prompt_tokens`` keeps its last tokens, as the reference cuts (chat template included).
    """
    out = []
    for r in records:
        messages = prompt_messages(r)
        one_token = risk_one_token and r["kind"] == "risk"
        prompt = generation_prompt(tokenizer, messages, thinking and not one_token, switch)
        prompt, cut = cut_left(tokenizer, prompt, max_prompt_tokens)
        settings = asdict(ONE_TOKEN_YES_NO if one_token else sampling)
        # the resume key: what decides the answer (the sample, the model as loaded, the prompt, the sampling);
        # the score is recomputed from the stored answer, so a corrected target or metric needs no generation
        key = digest([r["id"], model_id, prompt, settings])
        target = list(r["target"])
        out.append(Request(key, r["id"], r["task"], r["kind"], r["metric"], target, prompt, one_token, cut))
    return out


def cut_left(tokenizer: Any, prompt: str, max_tokens: int | None) -> tuple[str, int]:
    """``prompt`` cut to its last ``max_tokens`` tokens (None: whole), and how many tokens were cut."""
    if max_tokens is None:
        return prompt, 0
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return prompt, 0
    return tokenizer.decode(ids[len(ids) - max_tokens :]), len(ids) - max_tokens


def score_row(request: Request, text: str | None, finish_reason: str, p_yes: float | None, error: str = "") -> dict:
    """The stored result of one sample: output, parsed answer, score (0 for garbage) and risk score."""
    decoded = to_text(text)
    answer = final_answer(text)
    nonfinite = p_yes is not None and not math.isfinite(p_yes)  # a broken model: counted by the report, not scored
    valid = decoded is not None and bool((answer or "").strip())
    return {
        "key": request.key,
        "id": request.id,
        "task": request.task,
        "kind": request.kind,
        "metric": request.metric,
        "target": request.target,
        "output": decoded if decoded is not None else "",
        "answer": (answer or "").strip(),
        "score": score(request.metric, text, request.target),
        "p_yes": None if nonfinite else p_yes,
        "nonfinite": nonfinite,
        "finish_reason": finish_reason,
        "prompt_tokens_cut": request.tokens_cut,
        "valid": valid,
        "error": error,
    }


def rescored(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    """A stored row scored again as ``request`` is scored now (its target and metric), from its stored answer."""
    p_yes = math.nan if row.get("nonfinite") else row.get("p_yes")
    return score_row(request, row.get("output") or None, row["finish_reason"], p_yes, row.get("error", ""))


def failed(row: dict[str, Any]) -> bool:
    """A row whose generation failed (no answer to score): asked again when the evaluation runs again."""
    return bool(row.get("error"))


def batches(items: list[Request], size: int) -> Iterator[list[Request]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_answers(backend: Backend, batch: list[Request], sampling: SamplingParams) -> list[Generation]:
    """The batch's generations in its order: one-token requests (yes / no) and generated ones in a call each."""
    out: dict[int, Generation] = {}
    for one_token, params in ((True, ONE_TOKEN_YES_NO), (False, sampling)):
        part = [i for i, q in enumerate(batch) if q.one_token is one_token]
        if part:
            answers = backend.generate([batch[i].prompt for i in part], params, [batch[i].kind == "risk" for i in part])
            out.update(zip(part, answers, strict=True))
    return [out[i] for i in range(len(batch))]


def run(
    requests: list[Request],
    backend: Backend,
    sampling: SamplingParams,
    results: str | Path,
    batch_size: int = 8,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Generate and score every request not yet answered in ``results`` (failed ones again); returns all rows
    of these requests, the stored ones scored again."""
    ledger = Ledger(results, key="key")
    done = ledger.rows()
    retried = sum(q.key in done and failed(done[q.key]) for q in requests)
    pending = sorted(  # shared contexts adjacent
        (q for q in requests if q.key not in done or failed(done[q.key])), key=lambda q: q.prompt
    )
    if len(pending) < len(requests) or retried:
        log.info(
            "%s: %d of %d samples already answered; %d to go%s",
            results,
            len(requests) - len(pending),
            len(requests),
            len(pending),
            f", {retried} of them failed before and asked again" if retried else "",
        )
    with (
        ledger.appending() as append,
        tqdm(total=len(pending), desc="evaluate", unit="sample", disable=not progress) as bar,
    ):
        for batch in batches(pending, batch_size):
            try:
                generations = generate_answers(backend, batch, sampling)
                rows = [
                    score_row(q, g.text if not g.error else None, g.finish_reason, g.p_yes, g.error)
                    for q, g in zip(batch, generations, strict=True)
                ]
            except Exception as exc:  # a failed batch is scored 0 and reported per sample, never stops the run
                log.warning("generation failed for %d samples: %s", len(batch), exc)
                rows = [score_row(q, None, "error", None, error=f"{type(exc).__name__}: {exc}") for q in batch]
            append(rows)
            done.update((row["key"], row) for row in rows)
            bar.update(len(batch))
    return [rescored(q, done[q.key]) for q in requests]
