"""Learning curve: the main job's stage 1 at several training-set sizes, LLM vs the tabular baseline.

For each size (``task_mix.split_factor.train``, the training samples per task relative to the test
count) one ``train.py`` run in a fresh process trains the embedded model (``stage=domain_adaptation``)
and evaluates it on the same test split; the tabular baseline is fitted on that run's training split.
Writes ``curve.json`` and ``curve.png`` (macro risk AUROC and macro decision score against the training
tokens seen, the tabular baseline as a line) and prints one JSON line.

    python experiments/learning_curve/run.py [--factors 0.5 1 2 4] [--out outputs/learning_curve] [train.py overrides]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_size(factor: float, out: Path, overrides: list[str]) -> dict:
    run_dir = out / f"train_x{factor:g}"
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "stage=domain_adaptation",
        f"task_mix.split_factor.train={factor}",
        f"export.dir={out / 'data' / f'x{factor:g}'}",  # one instruction set per size
        f"run_dir={run_dir}",
        "progress=false",
        *overrides,
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"train.py failed for factor {factor}:\n{done.stderr[-3000:]}")
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    stages = [json.loads(p.read_text()) for p in sorted(run_dir.glob("stages/*/summary.json"))]
    macro = report["macro"]
    stats = json.loads((out / "data" / f"x{factor:g}" / "stats.json").read_text())
    return {
        "factor": factor,
        "train_samples": stats["totals"].get("train"),
        "train_tokens": sum(s.get("tokens", 0) for s in stages),
        "seconds": round(time.perf_counter() - started, 1),
        **{
            f"{kind}_{side}": macro.get(kind, {}).get(key)
            for kind in ("risk", "decision")
            for side, key in (("llm", "value"), ("tabular", "tabular"), ("most_frequent", "baseline"))
        },
        "risk_llm_ci": [macro.get("risk", {}).get("ci_low"), macro.get("risk", {}).get("ci_high")],
    }


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    tokens = [p["train_tokens"] for p in points]
    for ax, kind, label in ((axes[0], "risk", "macro AUROC (risk)"), (axes[1], "decision", "macro score (decision)")):
        ax.plot(tokens, [p[f"{kind}_llm"] for p in points], "o-", label="LLM (stage 1)")
        ax.plot(tokens, [p[f"{kind}_tabular"] for p in points], "s--", label="tabular baseline")
        ax.plot(tokens, [p[f"{kind}_most_frequent"] for p in points], ":", color="grey", label="most frequent")
        ax.set_xscale("log")
        ax.set_xlabel("training tokens seen")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--out", type=Path, default=Path("outputs/learning_curve"))
    args, overrides = parser.parse_known_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    points = [run_size(f, out, overrides) for f in args.factors]
    (out / "curve.json").write_text(json.dumps(points, indent=2))
    plot(points, out / "curve.png")
    print(json.dumps({"experiment": "learning_curve", "points": points, "plot": str(out / "curve.png")}))


if __name__ == "__main__":
    main()
