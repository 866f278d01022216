"""Benchmark: the data preparation end to end at cohort scale, and its projection to MIMIC-IV.

For each ``--patients`` size, in fresh processes (so each step's peak RSS is its own): synthetic cohort
generation, timelines, the index of all 46 tasks, the embedded tokenizer, then selection and export of an
EHR-Ins-shaped mix (the ``task_mix=ehr_ins`` counts scaled to ``--samples-per-patient`` x patients; a task
takes what exists when fewer are available) with ``--workers`` processes. Each step reports seconds, its
size (rows, events, samples) and peak RSS: the step's own process and its largest worker process. The
timelines' DuckDB holds up to its memory limit (``--timelines-memory-limit``) and spills beyond it.

The projection takes the largest size's rates to MIMIC-IV (the row counts of ``shared/design.md``:
≈ 300k patients, ≈ 618 M rows over the tables ehrr1 reads; EHR-Ins ≈ 3.5 M samples) on a 32-core
machine: timelines and index scale with rows, the export with samples, all with cores (linear scaling
assumed: an upper bound on speed). Prints one JSON line.

    python experiments/benchmarks/end_to_end.py --patients 20000 100000 [--workers 2] [--root DIR]
        [--samples-per-patient 3] [--timelines-memory-limit 1GB]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MIMIC_IV = {"patients": 300_000, "rows": 618_000_000, "samples": 3_500_000}

STEP = r"""
import json, math, resource, sys, time
from pathlib import Path

def rss(who):
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)

step, work, patients, workers, per_patient, budget, mix_file, memory_limit = sys.argv[1:9]
work, patients, workers = Path(work), int(patients), int(workers)
start = time.perf_counter()
if step == "generate":
    from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort
    manifest = generate_cohort(work / "cohort", SyntheticCohortSettings(n_patients=patients, seed=0), progress=False)
    size = {"rows": sum(manifest["rows"].values())}
elif step == "timelines":
    from ehrr1.data.build import TimelineBuildSettings, build_timelines
    from ehrr1.data.reader import MimicReader
    reader = MimicReader({m: work / "cohort" / m for m in ("hosp", "icu", "ed", "note")})
    settings = TimelineBuildSettings(memory_limit=memory_limit) if memory_limit else TimelineBuildSettings()
    manifest = build_timelines(reader, work / "timelines", settings, progress=False)
    size = {"events": manifest["n_events"], "shards": manifest["num_shards"]}
elif step == "index":
    from ehrr1.tasks.index import build_index
    from ehrr1.tasks.registry import TaskRegistry
    counts = build_index(work / "timelines", work / "index", TaskRegistry().tasks.values(), workers, progress=False)
    size = {"tasks": len(counts), "samples": sum(counts.values())}
elif step == "tokenizer":
    import itertools
    from ehrr1.data.markdown import render_events
    from ehrr1.data.timeline import TimelineStore
    from ehrr1.models.tokenizer import build_embedded_tokenizer
    texts = (render_events(t) for t in itertools.islice(TimelineStore(work / "timelines"), 200))
    build_embedded_tokenizer(texts, work / "tokenizer", 4096)
    size = {}
else:
    from omegaconf import OmegaConf
    from ehrr1.data.timeline import TimelineStore
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.tasks.export import export_samples
    from ehrr1.tasks.index import iter_index
    from ehrr1.tasks.prompt import PromptBuilder
    from ehrr1.tasks.registry import TaskRegistry
    from ehrr1.tasks.select import SelectionSettings, select
    mix = OmegaConf.load(mix_file)
    counts = dict(mix.tasks)
    scale = float(per_patient) * patients / (sum(counts.values()) * len(mix.splits))  # counts are per split
    counts = {name: max(1, math.ceil(n * scale)) for name, n in counts.items()}
    registry = TaskRegistry()
    selecting = time.perf_counter()
    selected = select(lambda name: iter_index(work / "index", name), counts, registry, SelectionSettings(),
                      tuple(mix.splits))
    chose, chose_rss = time.perf_counter() - selecting, rss(resource.RUSAGE_SELF)
    builder = PromptBuilder(load_tokenizer(work / "tokenizer"), int(budget))
    report = export_samples(selected, TimelineStore(work / "timelines"), registry, builder, work / "export",
                            list(counts), workers, progress=False)
    size = {"requested": sum(counts.values()) * len(mix.splits), "selected": selected.num_rows,
            "exported": sum(report["totals"].values()), "selection_seconds": round(chose, 1),
            "selection_peak_rss_mb": chose_rss}
seconds = time.perf_counter() - start
print(json.dumps({"seconds": round(seconds, 1), **size, "peak_rss_mb": rss(resource.RUSAGE_SELF),
                  "largest_worker_rss_mb": rss(resource.RUSAGE_CHILDREN)}))
"""

STEPS = ("generate", "timelines", "index", "tokenizer", "export")


def run_step(step: str, work: Path, args: argparse.Namespace, patients: int) -> dict:
    command = [
        sys.executable, "-c", STEP, step, str(work), str(patients), str(args.workers),
        str(args.samples_per_patient), str(args.budget), str(REPO / "conf" / "task_mix" / "ehr_ins.yaml"),
        args.timelines_memory_limit,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"step {step} at {patients} patients failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def projection(figures: dict, workers: int, cores: int = 32) -> dict:
    """Seconds of each step on MIMIC-IV with ``cores`` cores, from one size's measured rates."""
    speedup = cores / workers
    rows, export = figures["generate"]["rows"], figures["export"]
    per_row = MIMIC_IV["rows"] / rows
    return {
        "cores": cores,
        "timelines_s": round(figures["timelines"]["seconds"] * per_row / speedup),
        "index_s": round(figures["index"]["seconds"] * per_row / speedup),
        "export_s": round(export["seconds"] * MIMIC_IV["samples"] / export["exported"] / speedup),
        "export_samples_per_s_per_worker": round(export["exported"] / export["seconds"] / workers, 1),
        "synthetic_rows_per_patient": round(rows / figures["patients"]),
        "mimic_rows_per_patient": round(MIMIC_IV["rows"] / MIMIC_IV["patients"]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--samples-per-patient", type=float, default=2.0, help="EHR-Ins-shaped mix size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget", type=int, default=2048, help="prompt tokens")
    parser.add_argument("--root", type=Path, default=REPO / "data" / "bench" / "end_to_end")
    parser.add_argument("--timelines-memory-limit", default="", help="DuckDB's limit (default: timelines.memory_limit)")
    args = parser.parse_args()
    report: dict = {"benchmark": "end_to_end", "workers": args.workers, "budget": args.budget,
                    "timelines_memory_limit": args.timelines_memory_limit or "default", "sizes": {}}  # fmt: skip
    for patients in args.patients:
        work = args.root.resolve() / f"n{patients}"
        work.mkdir(parents=True, exist_ok=True)
        figures: dict = {"patients": patients}
        started = time.perf_counter()
        for step in STEPS:
            figures[step] = run_step(step, work, args, patients)
            print(f"{patients} patients, {step}: {json.dumps(figures[step])}", file=sys.stderr, flush=True)
        figures["total_s"] = round(time.perf_counter() - started, 1)
        figures["peak_rss_mb"] = max(max(f["peak_rss_mb"], f["largest_worker_rss_mb"]) for f in figures.values()
                                     if isinstance(f, dict))  # fmt: skip
        report["sizes"][str(patients)] = figures
    largest = report["sizes"][str(max(args.patients))]
    report["projection_mimic_iv"] = projection(largest, args.workers)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
