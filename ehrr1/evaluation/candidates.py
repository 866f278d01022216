"""The reference's prompt for baseline models (``test.py --prompt``): a candidate list and answer rules.

The user turn becomes ``input``, ``instruction``, the candidate list and the answer rules, one per line,
as the reference writes it. Candidates: a released item's own; risk tasks yes / no; otherwise the
task's answers in the training split, the most frequent first, up to 100 with the sample's own answers
always among them (the reference draws from similar-item files that are not public), in a seeded order.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from ehrr1.tasks.records import InstructionRecord, Message

DECISION_MAKING_PROMPT = (
    "Note that you should directly output the answer without any other information. If there are several items "
    "in the prediction, please separate them by `\\n`. For all predicted items, please use the item name instead "
    "of the item code. Do not output the code like ICD10 or ICD9."
)
RISK_PREDICTION_PROMPT = (
    "Note that you should directly output the answer without any other information. You can only choose one "
    "answer from the Candidate List."
)
CANDIDATE_PROMPT = "You should choose the item from the candidate list below. Candidate List: {candidates}."
MAX_CANDIDATES = 100


def candidate_pools(train_records: Iterable[InstructionRecord]) -> dict[str, list[str]]:
    """Per task, its answer lines in the training records, the most frequent first (ties alphabetical)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in train_records:
        counts[r["task"]].update(r["target"])
    return {task: sorted(c, key=lambda v: (-c[v], v)) for task, c in counts.items()}


def candidates_for(record: InstructionRecord, pools: dict[str, list[str]], seed: int = 0) -> list[str] | None:
    """The candidate list shown with ``record`` (None: the task has no pool, the rules are shown alone)."""
    if record.get("candidates"):
        return list(record["candidates"])
    if record["kind"] == "risk":
        return ["yes", "no"]
    pool = pools.get(record["task"])
    if not pool:
        return None
    own = list(dict.fromkeys(record["target"]))
    others = [v for v in pool if v not in own][: max(0, MAX_CANDIDATES - len(own))]
    chosen = others + own
    random.Random(f"{seed}:{record['id']}").shuffle(chosen)
    return chosen


def with_candidates(record: InstructionRecord, candidates: list[str] | None) -> InstructionRecord:
    """``record`` with the reference's candidate list and answer rules after its user turn."""
    rules = RISK_PREDICTION_PROMPT if record["kind"] == "risk" else DECISION_MAKING_PROMPT
    extra = [CANDIDATE_PROMPT.format(candidates=candidates)] if candidates else []
    messages: list[Message] = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    user = next(i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user")
    messages[user]["content"] = "\n".join([messages[user]["content"], *extra, rules])
    return {**record, "messages": messages, "candidates": candidates}
