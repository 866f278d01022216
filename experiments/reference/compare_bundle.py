"""Render a release bundle (the PhysioNet layout) with ehrr1 and compare every input with the reference's own.

    PYTHONPATH=. python experiments/reference/compare_bundle.py --oracle <oracle out dir> \
        --work <oracle work dir> --bundle <new folder> [--subjects N] [--json figures.json]

The reforacle tool (shared/tools/reforacle, ``run.sh ... --keep-work --work W``) runs the reference's
preprocessing and dataset class on a MIMIC-IV-layout folder: its work dir holds the release's
``patients_ehr/`` and ``index_mapping/``, and its ``samples.jsonl`` every index row with the input the
reference's ``MIMICIV.process_cases`` made of it. This script lays out a release folder from them (links
to the trajectories and dictionaries, ``ehr_bench/oracle.csv`` with the index rows in the release's
columns, the first ``--subjects`` patients only when given), reads it with ``bench.path=<bundle>`` as
``evaluate.py`` does, and compares each record's user turn with the reference's ``input + "\\n" +
instruction`` byte for byte. It prints the figures per task and in total as one JSON line; a next_event
sample anchored at an admission is counted apart (ehrr1 never shows a decision sample its own anchor).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

from ehrr1.evaluation.released import iter_released
from ehrr1.tasks.registry import TaskRegistry

COLUMNS = ("subject_id", "hadm_id", "task", "event", "period_begin", "period_end", "admissions_id",
           "last_discharge_id", "target")  # fmt: skip


def _cell(value) -> str:
    return "" if value is None else str(value)


def lay_out(oracle: Path, work: Path, bundle: Path, subjects: int | None) -> list[dict]:
    """The release folder (links and one index CSV); the oracle samples it holds, in its row order."""
    samples = [json.loads(line) for line in (oracle / "samples.jsonl").open(encoding="utf-8")]
    samples = [s for s in samples if s["rendered"]]
    if subjects is not None:
        keep = sorted({s["subject_id"] for s in samples})[:subjects]
        samples = [s for s in samples if s["subject_id"] in keep]
    (bundle / "ehr_bench").mkdir(parents=True, exist_ok=True)
    for name in ("patients_ehr", "index_mapping"):
        link = bundle / name
        if not link.exists():
            os.symlink((work / "datas" / name).resolve(), link)
    with (bundle / "ehr_bench" / "oracle.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for s in samples:
            writer.writerow([s["subject_id"], _cell(s["hadm_id"]), s["task"], s["event"], s["context_begin"],
                             s["context_end"], _cell(s["admissions_id"]), _cell(s["last_discharge_id"]),
                             s["target_index"]])  # fmt: skip
    return samples


def _values(subjects: list[Path]) -> set[str]:
    """Every cell text of these trajectories, and each NDC padded as the dictionary lookup pads it."""
    import pyarrow.parquet as pq

    from ehrr1.data.mappings import pad_ndc

    found: set[str] = set()
    for path in subjects:
        for items in pq.read_table(path, columns=["items"]).column(0).to_pylist():
            for item in json.loads(items):
                found.update(str(v) for v in item.values())
                if item.get("ndc") not in (None, "nan"):
                    found.add(pad_ndc(str(item["ndc"])))
    return found


def cut(bundle: Path, samples: list[dict], out: Path) -> None:
    """A copy of the release small enough for the tests: the trajectories, the dictionaries' rows these
    patients name (by key text), the index CSV, and ``expected.jsonl`` (per index row: the task and the
    SHA-256 of the reference's user turn)."""
    import hashlib
    import shutil

    subjects = sorted({s["subject_id"] for s in samples})
    (out / "patients_ehr").mkdir(parents=True, exist_ok=True)
    paths = [bundle / "patients_ehr" / f"{s}.parquet" for s in subjects]
    for path in paths:
        shutil.copyfile(path, out / "patients_ehr" / path.name)
    values = _values(paths)
    keys = {"itemid", "icd_code", "ndc_code", "note_id"}
    for table in sorted((bundle / "index_mapping").rglob("*.csv")):
        target = out / "index_mapping" / table.relative_to(bundle / "index_mapping")
        target.parent.mkdir(parents=True, exist_ok=True)
        with table.open(encoding="utf-8", newline="") as src, target.open("w", encoding="utf-8", newline="") as dst:
            reader, writer = csv.DictReader(src), None
            for row in reader:
                if writer is None:
                    writer = csv.DictWriter(dst, fieldnames=list(reader.fieldnames or []))
                    writer.writeheader()
                key = next(c for c in reader.fieldnames or [] if c in keys)
                if row[key] in values or (key == "ndc_code" and row[key].split(".")[0].zfill(11) in values):
                    writer.writerow(row)
    (out / "ehr_bench").mkdir(exist_ok=True)
    shutil.copyfile(bundle / "ehr_bench" / "oracle.csv", out / "ehr_bench" / "ehr_bench_oracle.csv")
    with (out / "expected.jsonl").open("w", encoding="utf-8") as handle:
        for s in samples:
            user = s["input"] + "\n" + s["instruction"]
            own = s["task"] == "next_event" and s["anchor_file_name"] == "admissions"
            handle.write(json.dumps({"task": s["task"], "sha256": hashlib.sha256(user.encode()).hexdigest(),
                                     "own_anchor": own}) + "\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--oracle", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cut", type=Path, default=None, help="also copy the release folder here (a fixture)")
    args = parser.parse_args()
    samples = lay_out(args.oracle, args.work, args.bundle, args.subjects)
    if args.cut:
        cut(args.bundle, samples, args.cut)
    figures: dict[str, Counter] = defaultdict(Counter)
    for record in iter_released(args.bundle, TaskRegistry()):
        row = int(record["source"].rsplit(" ", 1)[1])
        sample = samples[row - 1]
        counts = figures[record["task"]]
        counts["samples"] += 1
        label = sample["label"] if isinstance(sample["label"], list) else [sample["label"]]
        counts["equal_targets"] += sorted(record["target"]) == sorted(label)
        if record["messages"][1]["content"] == sample["input"] + "\n" + sample["instruction"]:
            counts["equal_inputs"] += 1
        elif record["task"] == "next_event" and sample["anchor_file_name"] == "admissions":
            counts["own_anchor_not_shown"] += 1
        else:
            counts["different"] += 1
    total = sum(figures.values(), Counter())
    result = {"rows": len(samples), "total": dict(total), "tasks": {t: dict(c) for t, c in sorted(figures.items())}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps({"rows": len(samples), **total}))


if __name__ == "__main__":
    main()
