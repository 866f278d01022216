"""Benchmark: timelines, index and export of two versions of ehrr1 on one cohort, side by side.

Prints one JSON line. The cohort is generated once by the working tree; ``--rev`` (default: the commit
before the reference-fidelity rewrite) is extracted with ``git archive`` and both versions then build, in
fresh processes on the same input: timelines, the index of all their tasks, and the export of
``--per-task`` samples of every task and split (selection, prompts cut to 2,048 tokens with one shared
embedded tokenizer, JSONL). Each stage reports seconds, peak RSS (workers included) and its output size;
``after_over_before`` is the ratio of seconds (> 1: the working tree is slower).

    python experiments/benchmarks/before_after.py [--rev 820e04c] [--patients 2000] [--root data/bench/ab]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ("hosp", "icu", "ed", "note")

# runs inside each version: only APIs both versions share
STAGE = r"""
import json, resource, shutil, sys, time
from pathlib import Path

def peak():
    return max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024

stage, cohort, work, tokenizer, per_task, workers = sys.argv[1:7]
cohort, work = Path(cohort), Path(work)
start = time.perf_counter()
if stage == "timelines":
    from ehrr1.data.build import TimelineBuildSettings, build_timelines
    from ehrr1.data.reader import MimicReader
    shutil.rmtree(work / "timelines", ignore_errors=True)
    modules = {m: cohort / m for m in ("hosp", "icu", "ed", "note")}
    manifest = build_timelines(MimicReader(modules), work / "timelines", TimelineBuildSettings(), progress=False)
    size = {"events": manifest["n_events"]}
elif stage == "index":
    from ehrr1.tasks.index import build_index
    from ehrr1.tasks.registry import TaskRegistry
    shutil.rmtree(work / "index", ignore_errors=True)
    registry = TaskRegistry()
    counts = build_index(work / "timelines", work / "index", registry.tasks.values(), int(workers), progress=False)
    size = {"tasks": len(counts), "samples": sum(counts.values())}
else:
    from ehrr1.data.timeline import TimelineStore
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.tasks.export import export_samples
    from ehrr1.tasks.index import read_index
    from ehrr1.tasks.prompt import PromptBuilder
    from ehrr1.tasks.registry import TaskRegistry
    from ehrr1.tasks.select import SelectionSettings, select
    shutil.rmtree(work / "export", ignore_errors=True)
    registry = TaskRegistry()
    mix = {name: int(per_task) for name in registry.names}
    selected = select(read_index(work / "index", registry.names), mix, registry, SelectionSettings())
    builder = PromptBuilder(load_tokenizer(tokenizer), 2048)
    store = TimelineStore(work / "timelines")
    export_samples(selected, store, registry, builder, work / "export", list(mix), int(workers), progress=False)
    size = {"samples": selected.num_rows}
print(json.dumps({"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak()), **size}))
"""


def run_stage(source: Path, stage: str, args: argparse.Namespace, cohort: Path, work: Path, tokenizer: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, "-c", STAGE, stage, str(cohort), str(work), str(tokenizer), str(args.per_task),
               str(args.workers)]  # fmt: skip
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{stage} of {source} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extract(rev: str, dest: Path) -> str:
    commit = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True, text=True, check=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO, capture_output=True, check=True)
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return commit.stdout.strip()


def prepare(root: Path, patients: int) -> tuple[Path, Path]:
    """The cohort and one embedded tokenizer, made by the working tree in a process of its own."""
    code = (
        "import sys; from pathlib import Path\n"
        "from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort\n"
        "from ehrr1.data.timeline import TimelineStore\n"
        "from ehrr1.data.build import build_timelines\n"
        "from ehrr1.data.reader import MimicReader\n"
        "from ehrr1.data.markdown import render_events\n"
        "from ehrr1.models.tokenizer import build_embedded_tokenizer\n"
        "root, n = Path(sys.argv[1]), int(sys.argv[2])\n"
        "cohort = root / f'cohort_n{n}'\n"
        "generate_cohort(cohort, SyntheticCohortSettings(n_patients=n, seed=0), progress=False)\n"
        "build_timelines(MimicReader({m: cohort / m for m in ('hosp', 'icu', 'ed', 'note')}), root / 'tok_timelines',"
        " progress=False)\n"
        "texts = (render_events(t.events) for i, t in zip(range(200), TimelineStore(root / 'tok_timelines')))\n"
        "build_embedded_tokenizer(texts, root / 'tokenizer', 4096)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(root), str(patients)], cwd=REPO, check=True)
    return root / f"cohort_n{patients}", root / "tokenizer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="820e04c")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--per-task", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("data/bench/ab"))
    args = parser.parse_args()
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = extract(args.rev, root / "src-before")
    cohort, tokenizer = prepare(root, args.patients)
    report: dict = {
        "benchmark": "before_after",
        "patients": args.patients,
        "before": before[:12],
        "after": "working tree",
    }
    for stage in ("timelines", "index", "export"):
        figures = {}
        for side, source in (("before", root / "src-before"), ("after", REPO)):
            figures[side] = run_stage(source, stage, args, cohort, root / f"work-{side}", tokenizer)
        figures["after_over_before"] = round(figures["after"]["seconds"] / figures["before"]["seconds"], 2)
        report[stage] = figures
    print(json.dumps(report))


if __name__ == "__main__":
    main()
