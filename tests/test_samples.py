"""Samples are the EHR-R1 reference's (pinned by an oracle fixture) and never leak."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pyarrow.compute as pc
import pytest

from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort
from ehrr1.data.timeline import TimelineStore
from ehrr1.tasks.index import build_index, read_index
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.registry import ContextRule
from ehrr1.tasks.samples import MAX_EVENTS, PatientTimeline, Sample, patient_samples
from tests.support import modules_of

GOLDEN = Path(__file__).parent / "golden"


def _samples(index_root: Path, names: list[str]) -> dict[str, list[Sample]]:
    by_task = defaultdict(list)
    for row in read_index(index_root, names).to_pylist():
        by_task[row["task"]].append(Sample(**{**row, "target": tuple(row["target"])}))
    return by_task


@pytest.fixture(scope="module")
def oracle_cohort(tmp_path_factory, registry):
    """The cohort the oracle fixture was made from (60 patients, seed 7), its timelines and index."""
    root = tmp_path_factory.mktemp("oracle")
    generate_cohort(root / "cohort", SyntheticCohortSettings(n_patients=60, seed=7), progress=False)
    settings = TimelineBuildSettings(mapping_dir=str(GOLDEN / "oracle_mappings"))  # the tables the oracle read
    build_timelines(MimicReader(modules_of(root / "cohort")), root / "timelines", settings, progress=False)
    build_index(root / "timelines", root / "index", registry.tasks.values(), progress=False)
    return root


def test_all_46_reference_tasks_have_samples(registry, index_root):
    assert len(registry.names) == 46 and sum(registry[n].is_risk for n in registry.names) == 18
    samples = _samples(index_root, registry.names)
    assert not {n for n in registry.names if not samples[n]}


def test_samples_equal_the_reference_oracle(oracle_cohort, registry):
    """Every sample the reference builds for the fixture's patients: same window, prepends, label, input bytes."""
    from ehrr1.tasks.select import SelectionSettings, _filter

    with gzip.open(GOLDEN / "oracle_samples.jsonl.gz", "rt", encoding="utf-8") as handle:
        expected = [json.loads(line) for line in handle]
    subjects = {int(r["subject_id"]) for r in expected}
    index = read_index(oracle_cohort / "index", registry.names)
    ours = {(r["task"], r["subject_id"], r["event"]): r for r in index.to_pylist() if r["subject_id"] in subjects}
    passing = set()
    for task in registry.tasks.values():
        rows = _filter(task, index.filter(pc.equal(index.column("task"), task.name)), SelectionSettings()).to_pylist()
        passing |= {(r["task"], r["subject_id"], r["event"]) for r in rows}
    timelines = {t.subject_id: t for t in TimelineStore(oracle_cohort / "timelines") if t.subject_id in subjects}
    builder, matched, differ = PromptBuilder(), set(), 0
    for ref in expected:
        decision = ref["task_type"] == "decision_making"
        anchor = ref["context_end"] if decision else ref["context_begin"]
        if ref["event"] == "discharge" and not decision:
            anchor = ref["context_end"] - 1
        key = (ref["task"], int(ref["subject_id"]), anchor)
        assert key in ours, f"reference sample {key} missing"
        row = ours[key]
        matched.add(key)
        assert (row["period_begin"], row["period_end"]) == (ref["context_begin"], ref["context_end"]), key
        assert row["admissions_id"] == ref["admissions_id"] and row["last_discharge_id"] == ref["last_discharge_id"]
        label = ref["label_sorted"] if isinstance(ref["label_sorted"], list) else [ref["label_sorted"]]
        assert sorted(row["target"]) == sorted(label), key
        assert (key in passing) == ref["selected"], key
        sample = Sample(**{**row, "target": tuple(row["target"])})
        text = builder.build(timelines[key[1]], sample, registry[key[0]]).messages[1]["content"].rsplit("\n", 1)[0]
        if decision and ref["admissions_id"] == anchor and ref["task"] != "admissions":
            differ += 1  # deliberate: the reference shows the anchor admission itself (next_event)
            assert builder.parts(timelines[key[1]], sample, registry[key[0]])[0][1] is None
            continue
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == ref["input_sha256_16"], key
    assert matched == set(ours), "samples the reference does not build"
    assert len(expected) > 3000 and differ < 0.02 * len(expected)


@pytest.mark.slow
def test_no_leak_in_any_sample(registry, index_root, timelines_root):
    """No input holds its decision anchor, anything after the prediction time, a forbidden type, an
    admission inside an ED window, or a DRG / HCPCS section."""
    timelines = {t.subject_id: t for t in TimelineStore(timelines_root)}
    builder, checked = PromptBuilder(), 0
    for name, samples in _samples(index_root, registry.names).items():
        task = registry[name]
        for sample in samples:
            timeline = timelines[sample.subject_id]
            fixed, window = builder.parts(timeline, sample, task)
            shown = [e for e in fixed if e is not None] + window
            assert not {e.event_type for e in window} & set(task.forbidden), (name, sample)
            assert fixed[0] is None or fixed[0].hadm_id != sample.hadm_id  # an earlier stay's note, not this one's
            assert all(e.event_type != "admissions" for e in window)
            anchor = timeline[sample.event]
            if not task.is_risk:
                assert sample.period_end == sample.event and anchor not in shown
                # untimed anchors (ICD diagnoses, coded at the end of the stay) come after every earlier row
                limit = anchor.time or max(e.endtime for e in timeline.events[: sample.event] if e.endtime)
                assert all(e.endtime is None or e.endtime <= limit for e in shown), (name, sample)
                assert sample.admissions_id != sample.event or fixed[1] is None
            elif task.context is ContextRule.ed_stay:
                out = anchor.records[0]["outtime"]
                assert all(e.time is not None and str(e.time) < out for e in window), (name, sample)
            text = builder.build(timeline, sample, task).messages[1]["content"]
            assert "## Drgcodes" not in text and "## Hcpcs" not in text
            checked += 1
    assert checked > 10_000


# ---- the rules on hand-built patients ----------------------------------------------------------------------
H = 3600


def patient(*events: tuple[str, int | None, int | None, dict]) -> PatientTimeline:
    """(event type, start in hours or None, hadm_id, first record) per event, after the demographics."""
    demographics = ("patients", None, None, {"dod": "nan", "anchor_age": "50", "gender": "F"})
    rows = [demographics, *events]
    return PatientTimeline(
        1,
        [r[0] for r in rows],
        [None if r[1] is None else 1_000_000_000 + r[1] * H for r in rows],
        [r[2] for r in rows],
        [json.dumps([r[3]]) for r in rows],
    )


def _stamp(hours: float) -> str:
    from datetime import datetime, timedelta

    return (datetime(1970, 1, 1) + timedelta(seconds=1_000_000_000 + hours * H)).strftime("%Y-%m-%d %H:%M:%S")


def test_decision_window_starts_at_the_earliest_same_admission_event_within_24h(registry):
    p = patient(
        ("labevents", 0, 7, {"item_name": "old"}),  # 30 h before the anchor: outside
        ("labevents", None, 7, {}),
        ("poe", 10, 7, {"order_type": "Lab"}),  # first same-admission event < 24 h before: the begin
        ("omr", 12, None, {"result_name": "BMI"}),  # another admission in between: kept
        ("transfers", 20, 7, {"careunit": "nan", "eventtype": "transfer"}),
        ("labevents", 30, 7, {"item_name": " Sodium "}, ),
    )  # fmt: skip
    samples = patient_samples(p, registry.select(["labevents", "transfers", "next_event"]))
    lab = next(s for s in samples if s.task == "labevents" and s.event == 6)
    assert (lab.period_begin, lab.period_end, lab.target) == (3, 6, ("Sodium",))
    transfer = next(s for s in samples if s.task == "transfers")
    assert transfer.target == ("transfer",)  # care unit, else the event type
    assert {s.event for s in samples if s.task == "next_event"} == {
        3,
        5,
        6,
    }  # the omr at 12 h has no same-admission start
    assert next(s for s in samples if s.task == "next_event" and s.event == 6).target == ("labevents",)


def test_current_admission_and_previous_discharge_are_prepended(registry):
    p = patient(
        ("admissions", 0, 1, {"admission_type": "EW", "admittime": _stamp(0), "dischtime": _stamp(50)}),
        ("poe", 1, 1, {"order_type": "Lab"}),
        ("discharge", 50, 1, {"text": "note"}),
        ("transfers", 99, 2, {"careunit": "Emergency Department"}),
        ("admissions", 100, 2, {"admission_type": "URGENT", "admittime": _stamp(100), "dischtime": _stamp(150)}),
        ("poe", 101, 2, {"order_type": "Meds"}),
        ("labevents", 102, 2, {"item_name": "K"}),
    )  # fmt: skip
    samples = patient_samples(p, registry.select(["labevents", "admissions"]))
    lab = next(s for s in samples if s.task == "labevents")
    assert (lab.period_begin, lab.admissions_id, lab.last_discharge_id) == (4, 5, 3)
    second_admission = next(s for s in samples if s.task == "admissions" and s.event == 5)
    assert second_admission.admissions_id == 5  # indexed, but never rendered for the admissions task
    assert not any(s.task == "admissions" and s.event == 1 for s in samples)  # nothing of its stay before it


def test_ed_window_ends_strictly_before_ed_out_time_and_labels_follow_the_reference(registry):
    out = _stamp(5)
    p = patient(
        ("edstays", 0, 9, {"outtime": out}),
        ("triage", 0, None, {}),
        ("vitalsign", 2, None, {}),
        ("admissions", 4, 9, {"admittime": _stamp(4), "dischtime": _stamp(60)}),
        ("diagnosis", 5, None, {"icd_title": "Chest pain"}),  # at out-time: outside
        ("icustays", 10, 9, {"intime": _stamp(10), "outtime": _stamp(30)}),
        ("edstays", 80, None, {"outtime": _stamp(82)}),  # 75 h after out-time: no return within 72 h
    )  # fmt: skip
    names = ["ED_Hospitalization", "ED_ICU_Tranfer_12hour", "ED_Reattendance_3day", "ED_Inpatient_Mortality"]
    samples = {s.task: s for s in patient_samples(p, registry.select(names)) if s.event == 1}
    assert {(s.period_begin, s.period_end) for s in samples.values()} == {(1, 5)}
    assert {n: s.target[0] for n, s in samples.items()} == {
        "ED_Hospitalization": "yes", "ED_ICU_Tranfer_12hour": "yes", "ED_Reattendance_3day": "no",
        "ED_Inpatient_Mortality": "no",
    }  # fmt: skip


def test_icu_horizon_counts_from_the_last_context_event_and_short_stays_stay(registry):
    p = patient(
        ("icustays", 0, 3, {"intime": _stamp(0), "outtime": _stamp(10)}),  # 10 h stay: kept
        ("chartevents", 1, 3, {}),
        ("chartevents", None, 3, {}),
        ("outputevents", 20, 3, {}),  # last event < 24 h after in-time: the context end
        ("chartevents", 30, 3, {}),
    )  # fmt: skip
    p.records(0)[0]["dod"] = _stamp(40)[:10]
    names = ["ICU_Mortality_1day", "ICU_Mortality_2day", "ICU_Stay_7day"]
    samples = {s.task: s for s in patient_samples(p, registry.select(names))}
    assert {(s.period_begin, s.period_end) for s in samples.values()} == {(1, 5)}
    # death on the day of hour 40 (00:00 of that date, about 22 h): within a day of the context end (20 h)
    assert samples["ICU_Mortality_1day"].target == ("yes",) and samples["ICU_Stay_7day"].target == ("no",)


def test_patients_over_the_event_limit_are_not_indexed(registry):
    import pyarrow as pa

    from ehrr1.tasks.samples import shard_samples

    n = MAX_EVENTS + 1
    table = pa.table(
        {
            "subject_id": [5] * n,
            "event_type": ["patients"] + ["poe", "labevents"] * (n // 2),
            "hadm_id": [None] + [1] * (n - 1),
            "time": pa.array([None] + [1_000_000_000 + i for i in range(1, n)], pa.timestamp("s")),
            "records": ['[{"order_type": "x", "item_name": "y"}]'] * n,
        }
    )
    assert shard_samples(registry.select(["poe"]), table)["poe"] == []
    assert shard_samples(registry.select(["poe"]), table.slice(0, MAX_EVENTS))["poe"]


def test_window_search_equals_the_walk_back_of_the_reference():
    """The binary search gives the reference's walk-back window on every anchor of random timelines."""
    import random

    rng = random.Random(5)
    for trial in range(200):
        n, moment, events = rng.randint(2, 60), 0, []
        for _ in range(n):
            moment += rng.choice([0, 0, 1, 3, 10, 30])
            kind = rng.choice(["labevents", "labevents", "diagnoses_icd", "emar", "drgcodes"])
            hours = None if kind == "drgcodes" or (trial % 7 == 0 and rng.random() < 0.1) else moment
            events.append((kind, hours, rng.choice([None, 1, 2]), {}))
        p = patient(*events)
        for anchor in range(1, p.n):
            now = p.borrowed[anchor]
            for hours in (1.0, 24.0):
                walked = None if now is None else p._walk_back(anchor, now, hours)
                assert p.window_back(anchor, hours) == walked, (trial, anchor, hours)
    shuffled = patient(("labevents", 10, 1, {}), ("labevents", 2, 1, {}), ("emar", 11, 1, {}))
    assert shuffled._timed_positions() is None and shuffled.window_back(3) == 1  # out of order: the walk
