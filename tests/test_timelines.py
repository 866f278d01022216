"""Timelines: the reference's row order and events (runs of one table), the timestamp grouping, resumable builds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ehrr1.data.build import (
    MANIFEST,
    EventGrouping,
    TimelineBuildSettings,
    build_timelines,
    shard_path,
)
from ehrr1.data.markdown import render_events
from ehrr1.data.reader import MimicReader
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import ForeignOutputError
from ehrr1.utils import read_json
from tests.support import modules_of


@pytest.fixture(scope="module")
def store(timelines_root) -> TimelineStore:
    return TimelineStore(timelines_root)


@pytest.fixture(scope="module")
def timelines(store):
    return list(store)


def shard_tables(root: Path):
    manifest = read_json(root / MANIFEST)
    return [pq.read_table(shard_path(root, s)) for s in range(manifest["num_shards"])]


def test_every_patient_has_one_timeline_in_its_shard(store, timelines, cohort_root):
    assert store.num_shards == 3
    assert len(timelines) == 300 == len({t.subject_id for t in timelines})
    for shard in range(store.num_shards):
        assert all(t.subject_id % store.num_shards == shard for t in store.iter_shard(shard))


def test_events_are_runs_of_one_table_in_time_order(timelines):
    for timeline in timelines:
        assert timeline[0].event_type == "patients" and timeline[0].time is None
        timed = [e.time for e in timeline if e.time is not None]
        assert timed == sorted(timed)
        for before, after in zip(timeline.events, timeline.events[1:], strict=False):
            assert before.event_type != after.event_type  # consecutive rows of one table form one event
        for i, event in enumerate(timeline):
            if event.time is None and i:  # untimed diagnoses follow an event of their admission
                assert event.event_type in ("diagnoses_icd", "drgcodes")
                assert any(e.hadm_id == event.hadm_id for e in timeline.events[:i] if e.time is not None)
            if event.time is not None:
                assert event.endtime >= event.time


def test_every_row_is_in_exactly_one_event(timelines, cohort_root):
    records = Counter()
    for timeline in timelines:
        for event in timeline:
            records[event.event_type] += len(event.records)
    cohort = read_json(cohort_root / "cohort.json")["rows"]
    for table in (
        "chartevents",
        "emar",
        "prescriptions",
        "transfers",
        "diagnoses_icd",
        "vitalsign",
        "omr",
        "poe",
        "medrecon",
        "microbiologyevents",
        "discharge",
        "patients",
    ):
        assert records[table] == cohort[table], table
    lab_event = next(e for t in timelines for e in t if e.event_type == "labevents" and len(e.records) > 5)
    assert {"White Blood Cells", "Creatinine"} <= set(lab_event.values("item_name"))
    assert all(isinstance(v, str) for v in lab_event.values("valuenum"))  # the reference's text of each cell


@pytest.mark.slow
def test_timestamp_grouping_splits_runs_by_time(tiny_cohort, tmp_path):
    runs = list(TimelineStore(_build(tiny_cohort, tmp_path / "runs", EventGrouping.runs)))
    stamps = list(TimelineStore(_build(tiny_cohort, tmp_path / "stamps", EventGrouping.timestamp)))
    for by_run, by_time in zip(runs, stamps, strict=True):
        assert [r for e in by_run for r in e.records] == [r for e in by_time for r in e.records]
        assert len(by_time) >= len(by_run)
        for event in by_time:
            assert event.time == event.endtime
        for before, after in zip(by_time.events, by_time.events[1:], strict=False):
            assert before.event_type != after.event_type or before.time != after.time


def _build(cohort: Path, out: Path, grouping: EventGrouping) -> Path:
    reader = MimicReader(modules_of(cohort), empty_tables="warn")  # the tiny cohort has no microbiology
    build_timelines(reader, out, TimelineBuildSettings(grouping=grouping), progress=False)
    return out


def test_events_carry_their_stay(timelines):
    for timeline in timelines:
        for event in timeline:
            if event.event_type in ("triage", "vitalsign", "pyxis", "chartevents", "icustays"):
                assert event.stay_id is not None
            if event.event_type in ("labevents", "admissions", "diagnoses_icd", "chartevents"):
                assert event.hadm_id is not None or event.event_type == "labevents"


def test_load_and_window(store, timelines):
    timeline = timelines[17]
    assert store.load(timeline.subject_id) == timeline
    window = timeline.window(2, 6)
    assert len(window) == 4 and window[0] == timeline[2] and window.subject_id == timeline.subject_id
    with pytest.raises(IndexError, match="outside timeline"):
        timeline.window(3, len(timeline) + 1)
    with pytest.raises(KeyError, match="no timeline"):
        store.load(1)
    assert render_events(window).startswith("## ")


def test_excerpts_hold_exactly_the_asked_events(store, timelines):
    """An excerpt decodes only its positions, equal to the whole timeline's events there; others raise."""
    by_shard: dict[int, dict[int, set[int]]] = {}
    for timeline in timelines[:40:3]:
        positions = {0, len(timeline) - 1, *range(len(timeline) // 3, len(timeline) // 2)}
        by_shard.setdefault(store.shard_of(timeline.subject_id), {})[timeline.subject_id] = positions
    whole = {t.subject_id: t for t in timelines}
    seen = 0
    for shard, positions in by_shard.items():
        excerpts = list(store.excerpts(shard, positions))
        assert [e.subject_id for e in excerpts] == sorted(positions)
        for excerpt in excerpts:
            timeline, asked = whole[excerpt.subject_id], positions[excerpt.subject_id]
            assert set(excerpt.events) == asked
            assert all(excerpt[i] == timeline[i] for i in asked)
            begin, end = len(timeline) // 3, len(timeline) // 2
            assert excerpt.window(begin, end) == tuple(timeline.window(begin, end))
            missing = next(i for i in range(len(timeline)) if i not in asked)
            with pytest.raises(KeyError, match=f"event {missing} of subject {excerpt.subject_id} is not in"):
                excerpt[missing]
            seen += 1
    assert seen >= 10


@pytest.mark.slow
def test_rebuild_is_identical(cohort_root, timelines_root, tmp_path):
    again = tmp_path / "again"
    build_timelines(
        MimicReader(modules_of(cohort_root)), again, TimelineBuildSettings(patients_per_shard=100), progress=False
    )
    for a, b in zip(shard_tables(timelines_root), shard_tables(again), strict=True):
        assert a.equals(b)


@pytest.mark.slow
def test_changed_inputs_rebuild_and_foreign_directories_are_refused(tiny_cohort, tmp_path, caplog):
    root = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, root)
    out = tmp_path / "tl"
    first = build_timelines(MimicReader(modules_of(root), empty_tables="warn"), out, progress=False)
    assert (
        build_timelines(MimicReader(modules_of(root), empty_tables="warn"), out, progress=False) == first
    )  # reused as is
    labs = root / "hosp" / "labevents.csv.gz"
    os.utime(labs, (time.time() + 5, time.time() + 5))
    rebuilt = build_timelines(MimicReader(modules_of(root), empty_tables="warn"), out, progress=False)
    assert rebuilt["fingerprint"] != first["fingerprint"] and "changed: rebuilding" in caplog.text
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.csv").write_text("keep me")
    with pytest.raises(ForeignOutputError, match="holds no timeline build"):
        build_timelines(MimicReader(modules_of(root)), foreign, progress=False)
    assert (foreign / "results.csv").read_text() == "keep me"


BUILD_SCRIPT = """
import sys
from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.reader import MimicReader
root, out = sys.argv[1], sys.argv[2]
reader = MimicReader({m: f"{root}/{m}" for m in ("hosp", "icu", "ed", "note")})
build_timelines(reader, out, TimelineBuildSettings(patients_per_shard=int(sys.argv[3]), threads=1), progress=False)
"""


@pytest.mark.slow
def test_resume_after_kill_keeps_finished_shards_and_matches_a_clean_build(cohort_root, timelines_root, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(cohort_root), str(out), "10"])
    deadline = time.time() + 120
    while not shard_path(out, 2).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists(), "the build finished before it could be killed"
    finished = {p: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert finished, "no shard was finished before the kill"
    manifest = build_timelines(
        MimicReader(modules_of(cohort_root)), out, TimelineBuildSettings(patients_per_shard=10), progress=False
    )
    assert manifest["num_shards"] == 30
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished shards were kept, not rebuilt
    assert not list(out.rglob("*.tmp"))
    rebuilt = TimelineStore(out)
    reference = {t.subject_id: t for t in TimelineStore(timelines_root)}
    resumed = list(rebuilt)
    assert len(resumed) == len(reference)
    assert all(reference[t.subject_id] == t for t in resumed)
