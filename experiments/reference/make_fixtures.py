"""Write the test fixtures that pin ehrr1 to the EHR-R1 reference, from a reforacle dump (see README).

    python synthesize.py pipeline=timelines data.synthetic.n_patients=60 data.synthetic.seed=7 \
        data_root=D progress=false
    bash ../shared/tools/reforacle/run.sh D/mimic-iv-synthetic/n60_seed7 ORACLE --keep-work --work W
    python experiments/reference/compare_oracle.py --oracle ORACLE --mimic D/mimic-iv-synthetic/n60_seed7 \
        --mapping-dir W/datas/index_mapping/hosp --work C
    python experiments/reference/make_fixtures.py --oracle ORACLE --timelines C/timelines \
        --mapping-dir W/datas/index_mapping/hosp

(the timelines must be built with the mapping tables the oracle read, as compare_oracle.py does).

Writes under tests/golden/: ``events.json`` (one single-row and one multi-row event per event type, as
ehrr1 stores them), ``reference/<name>.md`` (the reference's own rendering of each, from the oracle),
``clean/<name>.md`` (ehrr1's clean style) and ``oracle_samples.jsonl.gz`` (the oracle's samples of the
first ``--patients`` patients: window, prepends, label and a digest of the input) and ``oracle_mappings/``
(the CCS / ATC stand-in tables that reference run read, cut to the codes the synthetic cohort can write).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
from datetime import datetime
from pathlib import Path

from ehrr1.data.mappings import MAPPING_COLUMNS
from ehrr1.data.markdown import render_clean
from ehrr1.data.synthetic.cohort import mapping_rows
from ehrr1.data.timeline import TimelineStore

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "golden"
HAND_MADE = {  # tables the synthetic cohort lacks
    "pharmacy": {
        "medication": "Heparin",
        "proc_type": "Unit Dose",
        "status": "Discontinued",
        "route": "SC",
        "frequency": "Q8H",
    },
    "hcpcsevents": {"hcpcs_cd": "99285", "short_description": "Emergency dept visit"},
    "drgcodes": {"drg_type": "HCFA", "drg_code": "871", "description": "SEPTICEMIA W MV >96 HOURS"},
}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _event_json(event) -> dict:
    return {
        "event_type": event.event_type,
        "time": None if event.time is None else event.time.isoformat(sep=" "),
        "endtime": None if event.endtime is None else event.endtime.isoformat(sep=" "),
        "hadm_id": event.hadm_id,
        "stay_id": event.stay_id,
        "records": list(event.records),
    }


def copy_mappings(source: Path, dest: Path) -> None:
    """The oracle's mapping tables, only the rows of codes the synthetic cohort can write."""
    codes = {str(row[0]) for rows in mapping_rows().values() for row in rows}
    dest.mkdir(parents=True, exist_ok=True)
    for table, columns in MAPPING_COLUMNS.items():
        with open(source / f"{table}.csv", newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if r[columns[0]] in codes]
        with open(dest / f"{table}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", type=Path, required=True)
    parser.add_argument("--timelines", type=Path, required=True)
    parser.add_argument("--mapping-dir", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=15)
    args = parser.parse_args()
    copy_mappings(args.mapping_dir, GOLDEN / "oracle_mappings")
    reference = {}
    with open(args.oracle / "events.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            reference[(row["subject_id"], row["index"])] = row["text"]
    chosen: dict[str, tuple] = {}
    for timeline in TimelineStore(args.timelines):
        for i, event in enumerate(timeline):
            name = event.event_type + ("-rows" if len(event.records) > 1 else "")
            chosen.setdefault(name, (event, reference[(str(timeline.subject_id), i)]))
    for style in ("reference", "clean"):  # a cohort without an event of some shape leaves no stale file behind
        (GOLDEN / style).mkdir(parents=True, exist_ok=True)
        for old in (GOLDEN / style).glob("*.md"):
            old.unlink()
    events = {}
    for name, (event, text) in sorted(chosen.items()):
        events[name] = _event_json(event)
        (GOLDEN / "reference" / f"{name}.md").write_text(text, encoding="utf-8")
    for name, record in HAND_MADE.items():
        events[name] = {
            "event_type": name,
            "time": "2180-05-07 10:00:00",
            "endtime": "2180-05-07 10:00:00",
            "hadm_id": 20000001,
            "stay_id": None,
            "records": [record],
        }
    from ehrr1.data.timeline import Event

    for name, e in events.items():
        event = Event(
            e["event_type"],
            None if e["time"] is None else datetime.fromisoformat(e["time"]),
            e["hadm_id"],
            e["stay_id"],
            tuple(e["records"]),
        )
        (GOLDEN / "clean" / f"{name}.md").write_text(render_clean(event), encoding="utf-8")
    (GOLDEN / "events.json").write_text(json.dumps(events, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    subjects = sorted({s for s, _ in reference}, key=int)[: args.patients]
    with gzip.open(GOLDEN / "oracle_samples.jsonl.gz", "wt", encoding="utf-8") as out, \
            open(args.oracle / "samples.jsonl", encoding="utf-8") as handle:  # fmt: skip
        for line in handle:
            row = json.loads(line)
            if row["subject_id"] not in subjects:
                continue
            keep = {
                k: row[k]
                for k in (
                    "task",
                    "subject_id",
                    "event",
                    "task_type",
                    "context_begin",
                    "context_end",
                    "admissions_id",
                    "last_discharge_id",
                    "selected",
                    "label_sorted",
                )
            }
            keep["input_sha256_16"] = digest(row["input"])
            out.write(json.dumps(keep, sort_keys=True) + "\n")
    print(f"{len(events)} golden events; oracle samples of {len(subjects)} patients")


if __name__ == "__main__":
    main()
