"""Benchmark: timeline building on synthetic cohorts, ours vs a naive pandas per-patient loop.

Prints one JSON line. For each cohort size: seconds and peak RSS of the cohort generation (when it ran),
events/s and peak RSS of ``build_timelines`` and of the baseline, each measured in a fresh subprocess,
plus the speed ratio. The baseline materialises every table's rows in full as one pandas DataFrame
(through the same SQL, so reading, text conversion and joins are not charged to it), groups it by
subject, then orders, places, groups (runs of one table) and serialises each patient's events in Python;
it must build exactly as many events and records as ours.

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
    return {
        "seconds": seconds,
        "events": manifest["n_events"],
        "records": manifest["n_records"],
        "peak_rss_mb": peak_rss_mb(),
    }


def run_baseline(cohort: Path, out: Path) -> dict:
    import duckdb
    import pandas as pd

    from ehrr1.data.build import TimelineBuilder, _register_mappings, _Tables, demographics_query, source_query
    from ehrr1.data.events import UNTIMED
    from ehrr1.data.reader import MimicReader

    start = time.perf_counter()
    reader = MimicReader({m: cohort / m for m in MODULES})
    con = duckdb.connect()
    reader.register(con)
    tables = _Tables(con, reader)
    mapped = set(_register_mappings(con, tables, None))
    queries = [demographics_query(tables)]
    queries += [source_query(s, tables, mapped) for s in TimelineBuilder(reader, out).sources]
    frame = pd.concat([con.execute(q).df() for q in queries], ignore_index=True)  # every row in memory
    order = ["time", "module_rank", "k1", "k2", "k3", "table_rank", "file_row"]
    rows, records = [], 0
    for subject_id, patient in frame.groupby("subject_id", sort=True):
        demographics = patient[patient["event_type"] == "patients"]
        timed = patient[patient["time"].notna() & (patient["event_type"] != "patients")].sort_values(order)
        timed = timed.assign(pos=range(len(timed)), after=0)
        last = timed[timed["hadm_id"].notna()].groupby("hadm_id")["pos"].max()
        untimed = patient[patient["time"].isna() & patient["event_type"].isin(UNTIMED)]
        untimed = untimed.assign(pos=untimed["hadm_id"].map(last).fillna(2**62), after=1)
        placed = pd.concat([demographics.assign(pos=-1, after=0), timed, untimed])
        placed = placed.sort_values(["pos", "after", "table_rank", "file_row"], kind="stable")
        records += len(placed)
        events: list[list] = []
        for row in placed.itertuples(index=False):
            if events and events[-1][0] == row.event_type:
                events[-1][3].append(row.record)
                events[-1][2] = row.time if pd.isna(events[-1][2]) else max(events[-1][2], row.time)
            else:
                events.append([row.event_type, row.time, row.time, [row.record]])
        rows += [(subject_id, i, t, end, kind, "[" + ",".join(r) + "]") for i, (kind, t, end, r) in enumerate(events)]
    result = pd.DataFrame(rows, columns=["subject_id", "event_idx", "time", "endtime", "event_type", "records"])
    out.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out / "timelines.parquet")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "events": len(result), "records": records, "peak_rss_mb": peak_rss_mb()}


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
            if (base["events"], base["records"]) != (ours["events"], ours["records"]):
                raise SystemExit(
                    f"baseline built {base['events']}/{base['records']} events/records, ours "
                    f"{ours['events']}/{ours['records']}: not comparable"
                )
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
