"""Probe: does a trained model's representation carry the risk signal, and does its answer read it?

For each risk task of an instruction set, logistic regressions fitted on the model's final hidden states
over the training split's prompts (asked as evaluation asks them: thinking off) and scored by AUROC on
the test split: the state at the answer position, and the states mean-pooled over the prompt. Beside
them the model's own P(yes) and the tabular baseline (bag of concepts), on the same samples. A probe
well above the model's P(yes) says the signal is in the representation but the answer does not read it.
Prints one JSON line of macro AUROCs (per task with ``--per-task``).

    python experiments/probes/risk_probe.py --model <run>/stages/1_domain_adaptation/hf \
        --data <data_root>/instructions/<cohort>/main/tiny [--C 0.01 0.1 1] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ehrr1.backends.hf import HFBackend, answer_p_yes
from ehrr1.evaluation.tabular import TabularBaseline
from ehrr1.tasks.metrics import auroc
from ehrr1.tasks.prompt import ThinkingSwitch, generation_prompt
from ehrr1.tasks.records import InstructionRecord, prompt_messages


def risk_records(data: Path, split: str) -> list[InstructionRecord]:
    lines = (data / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "risk"]


@torch.no_grad()
def hidden_states(backend: HFBackend, records: list[InstructionRecord], switch: ThinkingSwitch, batch_size: int):
    """[N, H] final hidden state at the answer position, [N, H] mean over the prompt, [N] P(yes)."""
    last, mean, p_yes = [], [], []
    for start in range(0, len(records), batch_size):
        prompts = [
            generation_prompt(backend.tokenizer, prompt_messages(r), False, switch)
            for r in records[start : start + batch_size]
        ]
        encoded = backend.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = backend.model(**encoded, output_hidden_states=True)
        states = out.hidden_states[-1].float()  # [B, T, H], left padded: the answer position is the last
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        last.append(states[:, -1].numpy())
        mean.append(((states * mask).sum(1) / mask.sum(1)).numpy())
        p_yes.append(np.array(answer_p_yes(out.logits[:, -1], backend.answer_ids), dtype=float))
    return np.concatenate(last), np.concatenate(mean), np.concatenate(p_yes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a Hugging Face model directory")
    parser.add_argument("--data", type=Path, required=True, help="an export directory (train/test.jsonl)")
    parser.add_argument("--C", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="inverse L2 strengths")
    parser.add_argument("--switch", default="enable_thinking", choices=[s.value for s in ThinkingSwitch])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--per-task", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    backend = HFBackend(str(args.model), device="cpu")
    train, test = risk_records(args.data, "train"), risk_records(args.data, "test")
    switch = ThinkingSwitch(args.switch)
    features = {"train": hidden_states(backend, train, switch, args.batch_size),
                "test": hidden_states(backend, test, switch, args.batch_size)}  # fmt: skip
    tabular = {row["id"]: row["p_yes"] for row in TabularBaseline().fit(train).predict(test)}
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    for task in sorted({r["task"] for r in test}):
        fit = [i for i, r in enumerate(train) if r["task"] == task]
        held = [i for i, r in enumerate(test) if r["task"] == task]
        labels = [test[i]["target"][0] for i in held]
        if len(set(labels)) < 2 or len({train[i]["target"][0] for i in fit}) < 2:
            continue  # one label only: no AUROC, or nothing to fit
        scores[task]["model_p_yes"] = auroc(labels, features["test"][2][held])
        scores[task]["tabular"] = auroc(labels, [tabular[test[i]["id"]] for i in held])
        y = [train[i]["target"][0] == "yes" for i in fit]
        for position, k in (("answer_position", 0), ("mean_pooled", 1)):
            for c in args.C:
                probe = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
                probe.fit(features["train"][k][fit], y)
                scores[task][f"{position}_C{c:g}"] = auroc(labels, probe.predict_proba(features["test"][k][held])[:, 1])
    columns = sorted({c for s in scores.values() for c in s})
    report = {
        "probe": "risk",
        "model": str(args.model),
        "tasks": len(scores),
        "train_samples": len(train),
        "test_samples": len(test),
        "macro_auroc": {c: round(float(np.mean([s[c] for s in scores.values()])), 4) for c in columns},
    }
    if args.per_task:
        report["per_task"] = {t: {c: round(v, 3) for c, v in s.items()} for t, s in scores.items()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
