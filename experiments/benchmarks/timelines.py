"""Benchmark: timeline building on synthetic cohorts, ours vs a naive pandas per-patient loop.

Prints one JSON line. For each cohort size: seconds and peak RSS of the cohort generation (when it ran),
events/s and peak RSS of ``build_timelines`` and of the baseline, each measured in a fresh subprocess,
plus the speed ratio. The baseline materialises every
event type's table in full as a pandas DataFrame (through the same SQL, so joins are not charged to
it), groups it by subject, then loops over patients in Python to build, order and serialise events.

    python experiments/benchmarks/timelines.py [--sizes 2000 20000] [--root data/bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import measure, peak_rss_mb  # noqa: E402

MODULES = ("hosp", "icu", "ed", "note")


def run_generate(cohort: Path, n_patients: str) -> dict:
    from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort

    start = time.perf_counter()
    manifest = generate_cohort(cohort, SyntheticCohortSettings(n_patients=int(n_patients), seed=0), progress=False)
    seconds = time.perf_counter() - start
    rows = sum(v for k, v in manifest["rows"].items() if not k.startswith("d_"))
    return {"seconds": seconds, "rows": rows, "peak_rss_mb": peak_rss_mb()}


def run_ours(cohort: Path, out: Path) -> dict:
    from ehrr1.data.build import TimelineBuildSettings, build_timelines
    from ehrr1.data.reader import MimicReader

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = build_timelines(
        MimicReader({m: cohort / m for m in MODULES}),
        out,
        TimelineBuildSettings(patients_per_shard=2000),
        progress=False,
    )
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "events": manifest["n_events"], "peak_rss_mb": peak_rss_mb()}


def run_baseline(cohort: Path, out: Path) -> dict:
    import duckdb
    import pandas as pd

    from ehrr1.data.events import DEMOGRAPHIC_FIELDS, EVENT_RANK, EVENT_SOURCES
    from ehrr1.data.reader import MimicReader

    start = time.perf_counter()
    reader = MimicReader({m: cohort / m for m in MODULES})
    con = duckdb.connect()
    reader.register(con, validate=False)
    grouped = {}
    for source in EVENT_SOURCES:
        if all(reader.has(t) for t in source.tables):
            frame = con.execute(source.query).df()  # the whole table in memory
            frame = frame[frame["time"].notna()]
            grouped[source.event_type] = (source.fields, dict(tuple(frame.groupby("subject_id"))))
    patients = con.execute(reader.typed_select("patients")).df().set_index("subject_id")
    rows = []
    for subject_id, patient in patients.iterrows():
        events = []
        for event_type, (fields, by_subject) in grouped.items():
            frame = by_subject.get(subject_id)
            if frame is None:
                continue
            for moment, group in frame.groupby("time"):
                records = group[list(fields)].sort_values(list(fields)).to_dict("records")
                events.append((moment, EVENT_RANK[event_type], event_type, json.dumps(records, default=str)))
        if not events:
            continue
        first = min(e[0] for e in events)
        demographics = json.dumps([{f: patient[f] for f in DEMOGRAPHIC_FIELDS}], default=str)
        events.append((first, 0, "patients", demographics))
        events.sort(key=lambda e: (e[0], e[1]))
        rows += [(subject_id, i, *e) for i, e in enumerate(events)]
    result = pd.DataFrame(rows, columns=["subject_id", "event_idx", "time", "rank", "event_type", "records"])
    out.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out / "timelines.parquet")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "events": len(result), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--root", type=Path, default=Path("data/bench"))
    parser.add_argument(
        "--skip-baseline-above", type=int, default=10**9, help="measure the baseline only on cohorts up to this size"
    )
    parser.add_argument("--_measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        kind, cohort, out = args._measure
        run = {"generate": run_generate, "ours": run_ours, "baseline": run_baseline}[kind]
        result = run(Path(cohort), out if kind == "generate" else Path(out))
        print(json.dumps(result))
        return

    report = {"benchmark": "timelines", "sizes": {}}
    for n in args.sizes:
        cohort = args.root / f"cohort_n{n}"
        fresh = not cohort.exists()
        generated = measure(__file__, "generate", str(cohort), str(n))
        ours = measure(__file__, "ours", str(cohort), str(args.root / f"ours_n{n}"))
        entry = {
            "raw_rows": generated["rows"],
            "generation": {"seconds": round(generated["seconds"], 2), "peak_rss_mb": round(generated["peak_rss_mb"])}
            if fresh
            else "reused",
            "events": ours["events"],
            "ours": {
                "seconds": round(ours["seconds"], 2),
                "events_per_s": round(ours["events"] / ours["seconds"]),
                "peak_rss_mb": round(ours["peak_rss_mb"]),
            },
        }
        if n <= args.skip_baseline_above:
            base = measure(__file__, "baseline", str(cohort), str(args.root / f"baseline_n{n}"))
            if base["events"] != ours["events"]:
                raise SystemExit(f"baseline built {base['events']} events, ours {ours['events']}: not comparable")
            entry["pandas_baseline"] = {
                "seconds": round(base["seconds"], 2),
                "events_per_s": round(base["events"] / base["seconds"]),
                "peak_rss_mb": round(base["peak_rss_mb"]),
            }
            entry["speedup"] = round(base["seconds"] / ours["seconds"], 2)
        report["sizes"][str(n)] = entry
    print(json.dumps(report))


if __name__ == "__main__":
    main()
