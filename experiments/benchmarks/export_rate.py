"""Benchmark: the export's rate (samples/s on one core) of this tree and an earlier one, side by side.

The cohort, its timelines and the sample index are built once by the working tree; the earlier version
(``--rev``, default: the last commit whose context cut was a binary search of full prompt encodings) is
extracted with ``git archive``. Both then export the same selection (``--per-task`` samples of every task
and split, drawn once by the working tree and read from Parquet), in fresh processes with one worker,
with two tokenizers: the embedded one (4,096 tokens, GPT-2 split) and a Qwen-sized one (a byte-level BPE
of ``--qwen-vocab`` tokens with Qwen2's split, trained here on the cohort's markdown and, to reach that
size, on random words; nothing is downloaded).
Prints one JSON line: seconds, samples/s, the speed-up, and whether the two outputs are byte-identical.

    python experiments/benchmarks/export_rate.py [--patients 2000] [--per-task 20] [--budget 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from before_after import REPO, extract  # noqa: E402

EXPORT = r"""
import hashlib, json, shutil, sys, time
from pathlib import Path
import pyarrow.parquet as pq
from ehrr1.data.timeline import TimelineStore
from ehrr1.models.tokenizer import load_tokenizer
from ehrr1.tasks.export import export_samples
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.registry import TaskRegistry

work, out, tokenizer = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
per_task, budget = int(sys.argv[4]), int(sys.argv[5])
registry = TaskRegistry()
mix = {name: per_task for name in registry.names}
selected = pq.read_table(work / f"selection-{per_task}.parquet")
builder = PromptBuilder(load_tokenizer(tokenizer), budget)
shutil.rmtree(out, ignore_errors=True)
start = time.perf_counter()
export_samples(selected, TimelineStore(work / "timelines"), registry, builder, out, list(mix), 1, progress=False)
seconds = time.perf_counter() - start
digest = hashlib.sha256()
for split in sorted(out.glob("*.jsonl")):
    digest.update(split.read_bytes())
print(json.dumps({"seconds": round(seconds, 2), "samples": selected.num_rows, "sha256": digest.hexdigest()}))
"""

PREPARE = r"""
import itertools, random, sys
from pathlib import Path
import pyarrow.parquet as pq
from ehrr1.data.build import build_timelines
from ehrr1.data.markdown import render_events
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort
from ehrr1.data.timeline import TimelineStore
from ehrr1.models.tokenizer import build_embedded_tokenizer, train_tokenizer
from ehrr1.tasks.index import build_index, read_index
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.select import SelectionSettings, select

work, patients, qwen_vocab, per_task = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cohort = work / "cohort"
if not (work / "index").exists():
    generate_cohort(cohort, SyntheticCohortSettings(n_patients=patients, seed=0), progress=False)
    reader = MimicReader({m: cohort / m for m in ("hosp", "icu", "ed", "note")})
    build_timelines(reader, work / "timelines", progress=False)
    build_index(work / "timelines", work / "index", TaskRegistry().tasks.values(), 2, progress=False)
texts = lambda n: [render_events(t) for t in itertools.islice(TimelineStore(work / "timelines"), n)]
build_embedded_tokenizer(iter(texts(200)), work / "tok-embedded", 4096)
if not (work / "tok-qwen" / "tokenizer.json").exists():
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    noise = [" ".join("".join(rng.choices(letters, k=rng.randint(4, 12))) for _ in range(2000)) for _ in range(800)]
    train_tokenizer(texts(500) + noise, qwen_vocab, "qwen2").save_pretrained(work / "tok-qwen")
registry = TaskRegistry()
mix = {name: per_task for name in registry.names}
selected = select(read_index(work / "index", registry.names), mix, registry, SelectionSettings())
pq.write_table(selected, work / f"selection-{per_task}.parquet")
print("{}")
"""


def run(source: Path, code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=source, env={**os.environ, "PYTHONPATH": str(source)},
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{source} failed:\n{done.stderr[-4000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="e53f6a8")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--per-task", type=int, default=20)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--qwen-vocab", type=int, default=150_000)
    parser.add_argument("--root", type=Path, default=Path("data/bench/export_rate"))
    args = parser.parse_args()
    root = args.root.resolve()
    work = root / f"n{args.patients}"
    work.mkdir(parents=True, exist_ok=True)
    before = extract(args.rev, root / "src-before")
    run(REPO, PREPARE, str(work), str(args.patients), str(args.qwen_vocab), str(args.per_task))
    vocab = json.loads((work / "tok-qwen" / "tokenizer.json").read_text())["model"]["vocab"]
    report: dict = {"benchmark": "export_rate", "patients": args.patients, "budget": args.budget,
                    "before": before[:12], "after": "working tree", "qwen_sized_vocab": len(vocab)}  # fmt: skip
    for name in ("embedded", "qwen"):
        figures = {}
        for side, source in (("before", root / "src-before"), ("after", REPO)):
            out = work / f"export-{name}-{side}"
            tokenizer = str(work / f"tok-{name}")
            got = run(source, EXPORT, str(work), str(out), tokenizer, str(args.per_task), str(args.budget))
            got["samples_per_s"] = round(got["samples"] / got["seconds"], 1)
            figures[side] = got
        figures["speedup"] = round(figures["before"]["seconds"] / figures["after"]["seconds"], 2)
        figures["identical"] = figures["before"].pop("sha256") == figures["after"].pop("sha256")
        report[f"tokenizer_{name}"] = figures
    print(json.dumps(report))


if __name__ == "__main__":
    main()
