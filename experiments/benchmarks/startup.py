"""Benchmark: start-up of the entry points (``--help``, ``--cfg job``) and of ``import ehrr1.config``.

Each is timed in fresh processes (the best of ``--repeat``), for the working tree and, side by side, for an
earlier commit (``--rev``, extracted with ``git archive``). Prints one JSON line.

    python experiments/benchmarks/startup.py [--rev e53f6a8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before_after import REPO, extract  # noqa: E402

COMMANDS = {
    "import_config": ["-c", "import ehrr1.config"],
    **{f"{entry}_help": [f"{entry}.py", "--help"] for entry in ("synthesize", "train", "evaluate")},
    **{f"{entry}_cfg_job": [f"{entry}.py", "--cfg", "job"] for entry in ("synthesize", "train", "evaluate")},
}


def best_seconds(source: Path, args: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(source)}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=source, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(min(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="e53f6a8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("data/bench/startup"))
    args = parser.parse_args()
    before = extract(args.rev, args.root.resolve() / "src-before")
    report: dict = {"benchmark": "startup", "before": before[:12], "after": "working tree"}
    for name, command in COMMANDS.items():
        old = best_seconds(args.root.resolve() / "src-before", command, args.repeat)
        new = best_seconds(REPO, command, args.repeat)
        report[name] = {"before_s": old, "after_s": new, "speedup": round(old / new, 1)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
