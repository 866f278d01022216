"""Benchmark: sample-index build, ours vs a straightforward pandas per-patient loop.

Prints one JSON line. On a synthetic cohort's timelines: samples/s and peak RSS of ``build_index`` on all
46 tasks and on a subset of six (four decision, two risk), and of a pandas baseline on the same subset,
each in a fresh process. The baseline loads every timeline event into one DataFrame, groups it by
patient, and for each patient and anchor finds the context window with boolean masks and reads the
target from the anchor's records. It must produce exactly our samples, or the run fails.

    python experiments/benchmarks/sample_index.py [--patients 20000] [--root data/bench] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import measure, peak_rss_mb  # noqa: E402

SUBSET = ("labevents", "prescriptions", "transfers", "diagnoses_icd", "Inpatient_Mortality", "LengthOfStay_7day")
MODULES = ("hosp", "icu", "ed", "note")


def run_prepare(root: str, timelines: str, patients: str) -> dict:
    """Cohort and timelines (reused when present), in a process of their own: a forked child starts with
    its parent's peak RSS on Linux, so the measuring parent must stay small."""
    from ehrr1.data.build import build_timelines
    from ehrr1.data.reader import MimicReader
    from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort

    cohort = Path(root) / f"cohort_n{patients}"
    generate_cohort(cohort, SyntheticCohortSettings(n_patients=int(patients), seed=0), progress=False)
    build_timelines(MimicReader({m: cohort / m for m in MODULES}), timelines, progress=False)
    return {}


def run_ours(timelines: str, out: str, which: str, workers: str) -> dict:
    from ehrr1.tasks.index import build_index, read_index
    from ehrr1.tasks.registry import TaskRegistry

    registry = TaskRegistry()
    names = list(SUBSET) if which == "subset" else registry.names
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    counts = build_index(timelines, out, registry.select(names), num_workers=int(workers), progress=False)
    seconds = time.perf_counter() - start
    if which == "subset":
        rows = read_index(out, names).to_pylist()
        keys = sorted(
            (
                r["task"],
                r["subject_id"],
                r["event"],
                r["period_begin"],
                r["period_end"],
                r["admissions_id"],
                r["last_discharge_id"],
                tuple(r["target"]),
            )
            for r in rows
        )
        (Path(out) / "keys.json").write_text(json.dumps(keys))
    return {"seconds": seconds, "samples": sum(counts.values()), "peak_rss_mb": peak_rss_mb()}


TARGETS = {  # task: (target field, fallback field)
    "labevents": ("item_name", None),
    "prescriptions": ("drug", None),
    "transfers": ("careunit", "eventtype"),
    "diagnoses_icd": ("diagnoses", None),
}
MISSING = (None, "", "nan", "NaN", "None")


def _target(records: list[dict], field: str, fallback: str | None) -> tuple[str, ...]:
    if fallback:
        values = [r.get(field) if r.get(field) not in (None, "nan") else r.get(fallback) for r in records]
    else:
        values = [r.get(field) for r in records]
    values = [v.strip() for v in values if isinstance(v, str) and v not in MISSING and v.strip()]
    return tuple(dict.fromkeys(values))


def _patient_samples(subject: int, df) -> list[tuple]:
    """The subset's samples of one patient, computed with pandas / numpy masks."""
    import numpy as np
    import pandas as pd

    df = df.sort_values("event_idx").reset_index(drop=True)
    if len(df) > 1200:
        return []
    kinds = df["event_type"].to_numpy()
    start = df["time"].to_numpy(dtype="datetime64[s]")
    hadm = [None if pd.isna(h) else int(h) for h in df["hadm_id"]]
    hadm_codes = pd.factorize(pd.Series(hadm, dtype=object), use_na_sentinel=False)[0]
    diagnoses = kinds == "diagnoses_icd"
    lead = np.maximum.accumulate(np.where(diagnoses, 0, np.arange(len(df))))
    borrowed = start[lead]  # ICD diagnoses take the time of the event before them
    known = ~np.isnat(borrowed)
    day = np.timedelta64(24 * 3600, "s")
    dod_text = json.loads(df["records"].iloc[0])[0].get("dod")
    dod = None if dod_text in MISSING else pd.Timestamp(dod_text)
    is_admission, is_discharge = kinds == "admissions", kinds == "discharge"

    def prepends(a: int) -> tuple:
        admissions = np.flatnonzero(is_admission[: a + 1])
        discharges = np.flatnonzero(is_discharge[: a + 1])
        adm = (
            int(admissions[-1]) if len(admissions) and hadm[a] is not None and hadm[admissions[-1]] == hadm[a] else None
        )
        dis = int(discharges[-1]) if len(discharges) and hadm[discharges[-1]] != hadm[a] else None
        return adm, dis

    def window_begin(a: int) -> int | None:
        if not known[a]:
            return None
        positions = np.arange(1, a)
        valid = known[1:a]
        far = valid & (borrowed[a] - np.where(valid, borrowed[1:a], borrowed[a]) >= day)
        stop = positions[far].max() if far.any() else 0
        same = valid & (hadm_codes[1:a] == hadm_codes[a]) & (positions > stop)
        return int(positions[same].min()) if same.any() else None

    keys = []
    for task, (field, fallback) in TARGETS.items():
        for a in np.flatnonzero(kinds == task):
            begin = window_begin(int(a))
            target = _target(json.loads(df["records"].iloc[a]), field, fallback)
            if target and begin is not None:
                keys.append((task, subject, int(a), begin, int(a), *prepends(int(a)), target))
    for a in np.flatnonzero(is_admission):
        record = json.loads(df["records"].iloc[a])[0]
        if hadm[a] is None or np.isnat(start[a]) or record.get("admittime") in MISSING:
            continue
        admit, discharge = pd.Timestamp(record["admittime"]), pd.Timestamp(record["dischtime"])
        later = np.arange(a + 1, len(df))
        ahead = (~np.isnat(start[a + 1 :])) & (start[a + 1 :] - start[a] < day) & (hadm_codes[a + 1 :] == hadm_codes[a])
        if not ahead.any():
            continue
        end = int(later[ahead].max())
        died = dod is not None and not discharge < dod
        keys.append(
            ("Inpatient_Mortality", subject, int(a), int(a), end + 1, *prepends(int(a)), ("yes" if died else "no",))
        )
        if pd.Timestamp(start[end]) < discharge:
            longer = "yes" if discharge - admit > timedelta(hours=168) else "no"
            keys.append(("LengthOfStay_7day", subject, int(a), int(a), end + 1, *prepends(int(a)), (longer,)))
    return keys


def run_baseline(timelines: str, out: str, *_: str) -> dict:
    import pandas as pd

    from ehrr1.data.build import shard_path
    from ehrr1.utils import read_json

    start = time.perf_counter()
    shards = read_json(Path(timelines) / "manifest.json")["num_shards"]
    events = pd.concat([pd.read_parquet(shard_path(Path(timelines), s)) for s in range(shards)], ignore_index=True)
    keys = []
    for subject, df in events.groupby("subject_id", sort=True):
        keys += _patient_samples(int(subject), df)
    seconds = time.perf_counter() - start
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "keys.json").write_text(json.dumps(keys))
    return {"seconds": seconds, "samples": len(keys), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=20000)
    parser.add_argument("--root", type=Path, default=Path("data/bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--_measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._measure:
        kind, first, second, third = args._measure
        if kind == "prepare":
            result = run_prepare(first, second, third)
        else:
            result = (run_baseline if kind == "baseline" else run_ours)(first, second, kind, third)
        print(json.dumps(result))
        return
    timelines = str(args.root / f"timelines_n{args.patients}")
    measure(__file__, "prepare", str(args.root), timelines, str(args.patients))
    report = {"benchmark": "sample_index", "patients": args.patients, "workers": args.workers}
    for which in ("all", "subset"):
        result = measure(__file__, which, timelines, str(args.root / f"index_{which}"), str(args.workers))
        report[f"ours_{which}_tasks"] = {
            "seconds": round(result["seconds"], 2),
            "samples": result["samples"],
            "samples_per_s": round(result["samples"] / result["seconds"]),
            "peak_rss_mb": round(result["peak_rss_mb"]),
        }
    base = measure(__file__, "baseline", timelines, str(args.root / "index_baseline"), "1")
    ours_keys = json.loads((args.root / "index_subset" / "keys.json").read_text())
    base_keys = json.loads((args.root / "index_baseline" / "keys.json").read_text())
    if sorted(map(str, ours_keys)) != sorted(map(str, base_keys)):
        raise SystemExit(f"baseline samples differ from ours ({len(base_keys)} vs {len(ours_keys)}): not comparable")
    report["pandas_baseline_subset"] = {
        "seconds": round(base["seconds"], 2),
        "samples": base["samples"],
        "samples_per_s": round(base["samples"] / base["seconds"]),
        "peak_rss_mb": round(base["peak_rss_mb"]),
    }
    report["speedup_subset"] = round(base["seconds"] / report["ours_subset_tasks"]["seconds"], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
