"""Benchmark: how timelines, index, export and reasoning synthesis scale with their worker count.

The cohort (``--patients``, default 2,000: one timeline shard) and the embedded tokenizer are built once
under ``--root`` (``synthesize.py`` on its defaults), not timed. Then, for each ``--workers`` count, each
step runs as ``synthesize.py`` in a fresh process on its own copy of the artefacts, with that many workers:
timelines (``timelines.threads``, DuckDB's), index (``index.num_workers``), the export of the main task
mix (``export.num_workers``) and the thinking-graph reasoning (``synthesis.num_workers``). Each step
reports its seconds (start-up included, ~1 s) and the peak RSS of its largest process; each count, its
speed-up over the first. On a one-shard cohort the index splits by task and the export by units of
``export.unit_patients`` patients, so both use every worker. Prints one JSON line.

``--per-task N`` exports N samples of each task instead of the main mix (``selection.force_number``): a size
where the work that splits outweighs the fixed costs.

    python experiments/benchmarks/workers.py [--workers 1 2] [--patients 2000] [--per-task N] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STEPS = {  # step: (pipeline, the setting that takes the worker count)
    "timelines": ("timelines", "timelines.threads"),
    "index": ("index", "index.num_workers"),
    "export": ("instructions", "export.num_workers"),
    "reasoning": ("reasoning", "synthesis.num_workers"),
}


def synthesize(*overrides: str) -> tuple[float, float]:
    """Seconds and peak RSS (MiB, of its largest process) of one ``synthesize.py`` run in a fresh process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen([sys.executable, str(REPO / "synthesize.py"), *overrides], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
        _, status, usage = os.wait4(child.pid, 0)  # its rusage covers the workers it waited for
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"synthesize.py {' '.join(overrides)} failed:\n{stderr.read()[-4000:]}")
    return round(seconds, 1), round(usage.ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--per-task", type=int, default=None, help="samples per task (default: the main mix)")
    parser.add_argument("--root", type=Path, default=REPO / "data" / "bench" / "workers")
    args = parser.parse_args()
    root = args.root.resolve()
    shared = root / "shared"
    name = f"synthetic_n{args.patients}_seed0"
    data = [f"data.synthetic.n_patients={args.patients}", "progress=false"]
    data += [] if args.per_task is None else [f"selection.force_number={args.per_task}", "task_mix.name=bench"]
    prepared = time.perf_counter()
    synthesize(f"data_root={shared}", "pipeline=instructions", *data)
    prepare_s = round(time.perf_counter() - prepared, 1)
    report: dict = {"benchmark": "workers", "patients": args.patients, "per_task": args.per_task,
                    "cpus": os.cpu_count(), "prepare_s": prepare_s, "runs": {}}  # fmt: skip
    for workers in args.workers:
        work = root / f"w{workers}"
        subprocess.run(["rm", "-rf", str(work)], check=True)
        pinned = [f"data_root={work}", f"data.root={shared}/mimic-iv-synthetic/n{args.patients}_seed0",
                  f"model.embedded_dir={shared}/models/tiny/{name}", *data]  # fmt: skip
        run = {}
        for step, (pipeline, setting) in STEPS.items():
            seconds, rss = synthesize(*pinned, f"pipeline={pipeline}", f"{setting}={workers}")
            run[step] = {"seconds": seconds, "peak_rss_mb": rss}
            print(f"{workers} worker(s), {step}: {seconds} s", file=sys.stderr, flush=True)
        report["runs"][str(workers)] = run
    first = report["runs"][str(args.workers[0])]
    for run in report["runs"].values():
        for step, figures in run.items():
            figures["speedup"] = round(first[step]["seconds"] / figures["seconds"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
