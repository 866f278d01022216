"""Benchmark: the main job from nothing, and whether it meets its goals.

Runs ``python train.py`` (the embedded default) in a fresh process on an empty data root, then reads the
evaluation report and prints one JSON line: wall time, training tokens, the decision tasks scoring above
0, the macro risk AUROC with its 95 % interval, the smallest risk test count, both baselines' macro
averages, and each goal (15 minutes; macro risk AUROC above the most-frequent baseline with the
interval's low end above 0.5; at least 40 test samples per risk task; at least 20 of 27 decision tasks
above 0) as true / false.

    python experiments/benchmarks/main_job.py [--root /tmp/main_job] [train.py overrides]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/ehrr1_main_job"))
    args, overrides = parser.parse_known_args()
    shutil.rmtree(args.root, ignore_errors=True)
    run_dir = args.root / "run"
    command = [sys.executable, str(REPO / "train.py"), f"data_root={args.root / 'data'}", f"run_dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run([*command, "progress=false", *overrides], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"train.py failed:\n{done.stderr[-3000:]}")
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    stages = [json.loads(p.read_text()) for p in sorted(run_dir.glob("stages/*/summary.json"))]
    decision = [t for t in report["tasks"] if t["kind"] == "decision"]
    risk = [t for t in report["tasks"] if t["kind"] == "risk"]
    macro_risk, macro_decision = report["macro"]["risk"], report["macro"]["decision"]
    above_zero = sum(t["value"] is not None and t["value"] > 0 for t in decision)
    figures = {
        "benchmark": "main_job",
        "seconds": round(seconds, 1),
        "train_tokens": sum(s.get("tokens", 0) for s in stages),
        "decision_tasks_above_0": above_zero,
        "decision_tasks": len(decision),
        "decision_macro": macro_decision["value"],
        "decision_macro_ci": [macro_decision["ci_low"], macro_decision["ci_high"]],
        "decision_most_frequent": macro_decision["baseline"],
        "decision_tabular": macro_decision["tabular"],
        "risk_macro_auroc": macro_risk["value"],
        "risk_macro_ci": [macro_risk["ci_low"], macro_risk["ci_high"]],
        "risk_most_frequent": macro_risk["baseline"],
        "risk_tabular": macro_risk["tabular"],
        "risk_min_test_samples": min(t["n"] for t in risk),
    }
    figures["goals"] = {
        "within_15_min": seconds <= 15 * 60,
        "risk_beats_most_frequent": macro_risk["value"] > (macro_risk["baseline"] or 0.5)
        and (macro_risk["ci_low"] or 0) > 0.5,
        "risk_40_test_samples": figures["risk_min_test_samples"] >= 40,
        "decision_20_of_27_above_0": above_zero >= 20,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
