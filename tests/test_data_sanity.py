"""Rows that cannot be true are counted per table, named with file and line, and refused, left out or kept.

Each family (``data.sanity.<family>``: end before start, events after death, ages out of range, repeated rows,
timestamps with a UTC offset, over-long text) is injected into a copy of the tiny synthetic cohort with pandas;
the build is run under each policy and its manifest and timelines are checked against the clean cohort's.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ehrr1.config import settings_of, validate
from ehrr1.config.data import DataSanity, OnImplausibleRows
from ehrr1.data.build import MANIFEST, TimelineBuilder, build_timelines
from ehrr1.data.reader import MimicReader, MimicSchemaError
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import ConfigError
from tests.support import compose_config, modules_of, run_entry_point


def line_of(row: int) -> int:
    """The file line of data row ``row`` (0-based; the header is line 1)."""
    return row + 2


def edit(path: Path, change) -> pd.DataFrame:
    """Rewrite a table through pandas, every cell kept as its text; ``change`` edits the frame (or returns one)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = change(frame) if change is not None else frame
    frame.to_csv(path, index=False, compression="gzip")
    return frame


def shifted(stamp: str, **delta: float) -> str:
    return (datetime.fromisoformat(stamp) + pd.Timedelta(**delta)).strftime("%Y-%m-%d %H:%M:%S")


def build(root: Path, out: Path, **policies):
    sanity = DataSanity(**{k: OnImplausibleRows(v) if isinstance(v, str) else v for k, v in policies.items()})
    reader = MimicReader(modules_of(root), empty_tables="warn", sanity=sanity)  # the tiny cohort has empty tables
    return build_timelines(reader, out, progress=False)


def events(out: Path) -> list[tuple]:
    return [
        (t.subject_id, e.event_type, e.time, e.hadm_id, e.records, e.endtime) for t in TimelineStore(out) for e in t
    ]


def lab_times(out: Path, subject: int) -> set[datetime]:
    """The first and last row times of the patient's lab events (a run of lab rows is one event)."""
    return {t for e in events(out) if e[0] == subject and e[1] == "labevents" for t in (e[2], e[5])}


def records(manifest: dict, event_type: str) -> int:
    return manifest["per_event_type"].get(event_type, {}).get("records", 0)


@pytest.fixture(scope="module")
def clean(tiny_cohort, tmp_path_factory) -> tuple[dict, Path]:
    """The tiny cohort's timelines under the default policies: its manifest and directory."""
    out = tmp_path_factory.mktemp("sanity") / "clean"
    return build(tiny_cohort, out), out


@pytest.fixture
def cohort(tiny_cohort, tmp_path) -> Path:
    root = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, root)
    return root


def refused(root: Path, out: Path, **policies) -> str:
    """The one-line message of the build's MimicSchemaError; the output holds no finished build."""
    with pytest.raises(MimicSchemaError) as caught:
        build(root, out, **policies)
    message = str(caught.value)
    assert "\n" not in message and not (out / MANIFEST).exists() and not list(out.glob("shard-*"))
    return message


# ---- a valid cohort ---------------------------------------------------------------------------------------
def test_a_valid_cohort_has_nothing_to_report_and_the_manifest_says_so(clean):
    manifest, _ = clean
    assert manifest["sanity"] == {
        "end_before_start": {"policy": "drop", "rows": {}, "first_lines": {}},
        "after_death": {"policy": "keep", "tolerance_hours": 24, "rows": {}, "first_lines": {}},
        "age_out_of_range": {"policy": "error", "max_age": 120, "rows": {}, "first_lines": {}},
        "repeated_rows": {"policy": "keep", "rows": {}, "first_lines": {}},
        "timestamp_offset": {"policy": "error", "rows": {}, "first_lines": {}},
        "long_text": {"policy": "error", "max_text_chars": 1_000_000, "rows": {}, "first_lines": {}},
    }


# ---- (a) end before start ---------------------------------------------------------------------------------
def end_before_start(root: Path) -> tuple[str, str]:
    """Admission 20000012 (data row 3) discharged an hour before its admission, a prescription (data row 2)
    stopping before it starts; returns the admission's admittime and new dischtime."""
    admissions = edit(root / "hosp" / "admissions.csv.gz", None)
    admit = admissions.loc[3, "admittime"]
    assert admissions.loc[3, "hadm_id"] == "20000012"

    def admission(frame):
        frame.loc[3, "dischtime"] = shifted(admit, hours=-1)
        return frame

    def prescription(frame):
        frame.loc[2, "stoptime"] = shifted(frame.loc[2, "starttime"], minutes=-10)
        return frame

    edit(root / "hosp" / "admissions.csv.gz", admission)
    edit(root / "hosp" / "prescriptions.csv.gz", prescription)
    return admit, shifted(admit, hours=-1)


def test_an_end_before_its_start_is_left_out_by_default_counted_and_warned(cohort, clean, tmp_path, caplog):
    end_before_start(cohort)
    with caplog.at_level(logging.WARNING):
        manifest = build(cohort, tmp_path / "out")
    assert manifest["sanity"]["end_before_start"] == {
        "policy": "drop",
        "rows": {"admissions": 1, "prescriptions": 1},
        "first_lines": {"admissions": [line_of(3)], "prescriptions": [line_of(2)]},
    }
    assert records(manifest, "admissions") == records(clean[0], "admissions") - 1
    assert records(manifest, "prescriptions") == records(clean[0], "prescriptions") - 1
    admissions = {e[3] for e in events(tmp_path / "out") if e[1] == "admissions"}
    assert 20000012 not in admissions and len(admissions) == 8  # of the cohort's 9
    warned = [r.getMessage() for r in caplog.records if "end before they start" in r.getMessage()]
    assert len(warned) == 2 and warned[0].startswith(
        f"file {cohort / 'hosp' / 'admissions.csv.gz'}: 1 row(s) of table 'admissions' end before they start "
        f"(lines 5), e.g. column 'dischtime', line 5: "
    )
    assert warned[0].endswith("left out of the timelines (data.sanity.end_before_start=drop)")


@pytest.mark.slow  # a build per policy; the default policy's test stays in the quick suite
def test_an_end_before_its_start_is_kept_or_refused_when_asked(cohort, clean, tmp_path):
    admit, discharge = end_before_start(cohort)
    kept = build(cohort, tmp_path / "kept", end_before_start="keep")
    assert kept["sanity"]["end_before_start"]["policy"] == "keep"
    assert kept["sanity"]["end_before_start"]["rows"] == {"admissions": 1, "prescriptions": 1}
    assert kept["per_event_type"] == clean[0]["per_event_type"]  # the rows as they are: same events
    assert 20000012 in {e[3] for e in events(tmp_path / "kept") if e[1] == "admissions"}
    message = refused(cohort, tmp_path / "refused", end_before_start="error")
    assert message == (
        f"file {cohort / 'hosp' / 'admissions.csv.gz'}, column 'dischtime', line 5: '{discharge}' is before its "
        f"admittime '{admit}'; 1 row(s) of table 'admissions' end before they start (lines 5). Fix the file, or set "
        "data.sanity.end_before_start=drop (leave them out of the timelines) or data.sanity.end_before_start=keep "
        "(use them as they are)"
    )


# ---- (b) after death --------------------------------------------------------------------------------------
DOD = "2151-01-29"  # given to patient 10000001: the day after their last record in the tiny cohort (an ED visit)


def after_death(root: Path) -> int:
    """Patient 10000001 dead on ``DOD``: a lab row four days after death, one 20 h after (within the tolerance),
    and their last admission made the death admission, discharged three days after its deathtime; returns the
    late lab row's line."""

    def death(frame):
        assert frame.loc[1, "subject_id"] == "10000001" and frame.loc[1, "dod"] == ""
        frame.loc[1, "dod"] = DOD
        return frame

    def admission(frame):
        assert frame.loc[3, "hadm_id"] == "20000012" and frame.loc[3, "deathtime"] == ""
        assert frame.loc[3, "dischtime"] < DOD  # the cohort's last admission of the patient ends before the death
        frame.loc[3, "deathtime"], frame.loc[3, "dischtime"] = "2151-01-29 11:23:23", "2151-02-01 11:23:23"
        return frame

    def labs(frame):
        row = frame[frame["subject_id"] == "10000001"].iloc[-1]
        late = [row.copy(), row.copy()]
        late[0]["charttime"], late[1]["charttime"] = "2151-01-29 20:00:00", "2151-02-02 10:00:00"
        return pd.concat([frame, pd.DataFrame(late)], ignore_index=True)

    edit(root / "hosp" / "patients.csv.gz", death)
    edit(root / "hosp" / "admissions.csv.gz", admission)
    return line_of(len(edit(root / "hosp" / "labevents.csv.gz", labs)) - 1)


def test_events_after_death_are_kept_by_default_counted_and_warned(cohort, clean, tmp_path, caplog):
    late = after_death(cohort)
    with caplog.at_level(logging.WARNING):
        manifest = build(cohort, tmp_path / "out")
    assert manifest["sanity"]["after_death"] == {
        "policy": "keep",
        "tolerance_hours": 24,
        "rows": {"admissions": 1, "labevents": 1},  # the row 20 h after the date of death is within the tolerance
        "first_lines": {"admissions": [line_of(3)], "labevents": [late]},
    }
    assert records(manifest, "labevents") == records(clean[0], "labevents") + 2
    assert datetime(2151, 2, 2, 10) in lab_times(tmp_path / "out", 10000001)
    assert 20000012 in {e[3] for e in events(tmp_path / "out") if e[1] == "admissions"}
    warned = [r.getMessage() for r in caplog.records if "after the patient's death" in r.getMessage()]
    assert any(
        f"labevents.csv.gz: 1 row(s) of table 'labevents' are dated more than 24 h after the patient's death (lines "
        f"{late}), e.g. column 'charttime', line {late}: '2151-02-02 10:00:00' is more than 24 h after the patient's "
        "death (2151-01-29 00:00:00): kept (data.sanity.after_death=keep)" in w
        for w in warned
    )


@pytest.mark.slow  # a build per policy; the default policy's test stays in the quick suite
def test_events_after_death_are_left_out_or_refused_when_asked(cohort, clean, tmp_path):
    late = after_death(cohort)
    dropped = build(cohort, tmp_path / "dropped", after_death="drop")
    assert dropped["sanity"]["after_death"]["rows"] == {"admissions": 1, "labevents": 1}
    assert dropped["sanity"]["after_death"]["first_lines"]["labevents"] == [late]
    assert records(dropped, "labevents") == records(clean[0], "labevents") + 1  # the one within the tolerance
    times = lab_times(tmp_path / "dropped", 10000001)
    assert datetime(2151, 2, 2, 10) not in times and max(times) == datetime(2151, 1, 29, 20)
    assert 20000012 not in {e[3] for e in events(tmp_path / "dropped") if e[1] == "admissions"}
    message = refused(cohort, tmp_path / "refused", after_death="error")
    assert message.startswith(
        f"file {cohort / 'hosp' / 'admissions.csv.gz'}, column 'dischtime', line 5: '2151-02-01 11:23:23' is more "
        "than 24 h after its deathtime '2151-01-29 11:23:23'; 1 row(s) of table 'admissions' are dated more than "
        "24 h after the patient's death (lines 5). Fix the file, or set data.sanity.after_death=drop"
    )
    assert message.endswith(", or widen data.sanity.death_tolerance_hours")
    reader = MimicReader(modules_of(cohort), empty_tables="warn", sanity=DataSanity(death_tolerance_hours=120))
    reader.register(duckdb.connect())  # 4 days 10 h after the date of death: within 120 h
    assert reader.sanity_report()["after_death"]["rows"] == {}


# ---- (c) ages out of range --------------------------------------------------------------------------------
def impossible_ages(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[1, "anchor_age"], frame.loc[4, "anchor_age"] = "-3", "130"  # patients 10000001 and 10000004
    return frame


def test_an_age_out_of_range_is_refused_by_default_naming_file_line_and_setting(cohort, tmp_path):
    edit(cohort / "hosp" / "patients.csv.gz", impossible_ages)
    assert refused(cohort, tmp_path / "out") == (
        f"file {cohort / 'hosp' / 'patients.csv.gz'}, column 'anchor_age', line 3: '-3' is not an age from 0 to 120; "
        "2 row(s) of table 'patients' have an anchor_age outside 0 to 120 (lines 3, 6). Fix the file, or set "
        "data.sanity.age_out_of_range=drop (leave them out of the timelines) or data.sanity.age_out_of_range=keep "
        "(use them as they are), or raise data.sanity.max_age"
    )


@pytest.mark.slow  # a build per policy; the default policy's test stays in the quick suite
@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_an_age_out_of_range_is_left_out_or_kept_when_asked(cohort, tmp_path, policy):
    edit(cohort / "hosp" / "patients.csv.gz", impossible_ages)
    manifest = build(cohort, tmp_path / "out", age_out_of_range=policy)
    assert manifest["sanity"]["age_out_of_range"] == {
        "policy": policy,
        "max_age": 120,
        "rows": {"patients": 2},
        "first_lines": {"patients": [3, 6]},
    }
    timelines = {t.subject_id: t for t in TimelineStore(tmp_path / "out")}
    if policy == "drop":  # the patient's demographics are gone, and with them the timeline
        assert manifest["n_patients"] == 4 and not {10000001, 10000004} & set(timelines)
    else:
        assert manifest["n_patients"] == 6 and timelines[10000001][0].records[0]["anchor_age"] == "-3"


# ---- (d) repeated rows ------------------------------------------------------------------------------------
def repeat_rows(root: Path) -> list[int]:
    """Lab data row 0 twice more and row 5 once more, at the end; returns the repeats' lines."""
    frame = edit(root / "hosp" / "labevents.csv.gz", lambda f: pd.concat([f, f.iloc[[0, 0, 5]]], ignore_index=True))
    return [line_of(len(frame) - 3 + i) for i in range(3)]


def test_repeated_rows_are_kept_by_default_counted_and_warned(cohort, clean, tmp_path, caplog):
    lines = repeat_rows(cohort)
    with caplog.at_level(logging.WARNING):
        manifest = build(cohort, tmp_path / "out")
    assert manifest["sanity"]["repeated_rows"] == {"policy": "keep", "rows": {"labevents": 3},
                                                   "first_lines": {"labevents": lines}}  # fmt: skip
    assert records(manifest, "labevents") == records(clean[0], "labevents") + 3  # the reference keeps them
    assert any(
        f"3 row(s) of table 'labevents' repeat an earlier row in every column (lines {', '.join(map(str, lines))}), "
        f"e.g. line {lines[0]}: the row repeats line 2 in every column: kept (data.sanity.repeated_rows=keep)" in r
        for r in (r.getMessage() for r in caplog.records)
    )


@pytest.mark.slow  # a build per policy; the default policy's test stays in the quick suite
def test_repeated_rows_are_left_out_or_refused_when_asked(cohort, clean, tmp_path):
    lines = repeat_rows(cohort)
    dropped = build(cohort, tmp_path / "dropped", repeated_rows="drop")
    assert dropped["sanity"]["repeated_rows"]["rows"] == {"labevents": 3}
    assert dropped["per_event_type"] == clean[0]["per_event_type"]
    assert events(tmp_path / "dropped") == events(clean[1])  # the first of each is kept, in its place
    assert refused(cohort, tmp_path / "refused", repeated_rows="error").startswith(
        f"file {cohort / 'hosp' / 'labevents.csv.gz'}, line {lines[0]}: the row repeats line 2 in every column; 3 "
        f"row(s) of table 'labevents' repeat an earlier row in every column (lines {', '.join(map(str, lines))}). "
        "Fix the file, or set data.sanity.repeated_rows=drop"
    )


@pytest.mark.slow
def test_two_million_identical_rows_are_counted_in_bounded_memory(cohort):
    """The tester's table of two million identical rows: counted by DuckDB under a 256 MB limit, no row in Python."""
    path = cohort / "hosp" / "labevents.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        header, first = handle.readline(), handle.readline()
    path.unlink()
    with open(cohort / "hosp" / "labevents.csv", "w", encoding="utf-8") as handle:
        handle.write(header + first * 2_000_001)
    con = duckdb.connect()
    con.execute("SET memory_limit = '256MB'")
    con.execute("SET threads = 2")
    sanity = DataSanity(repeated_rows=OnImplausibleRows.error)
    reader = MimicReader(modules_of(cohort), empty_tables="warn", sanity=sanity)
    expected = (
        r"labevents.csv, line 3: the row repeats line 2 in every column; 2000000 row\(s\) of table 'labevents' "
        r"repeat an earlier row in every column \(lines 3, 4, 5, 6, 7, \.\.\.\)"
    )
    with pytest.raises(MimicSchemaError, match=expected):
        reader.register(con)


# ---- (e) timestamps with a UTC offset ---------------------------------------------------------------------
def offsets(root: Path) -> str:
    """Lab data row 4's charttime with +02:00 and poe data row 1's ordertime with Z; returns the lab value."""
    labs = edit(root / "hosp" / "labevents.csv.gz", None)
    value = labs.loc[4, "charttime"] + "+02:00"

    def lab(frame):
        frame.loc[4, "charttime"] = value
        return frame

    def order(frame):
        frame.loc[1, "ordertime"] = frame.loc[1, "ordertime"] + "Z"
        return frame

    edit(root / "hosp" / "labevents.csv.gz", lab)
    edit(root / "hosp" / "poe.csv.gz", order)
    return value


def test_a_timestamp_with_an_offset_is_refused_by_default(cohort, tmp_path):
    value = offsets(cohort)
    assert refused(cohort, tmp_path / "out") == (
        f"file {cohort / 'hosp' / 'labevents.csv.gz'}, column 'charttime', line 6: '{value}' carries a UTC offset; "
        "ehrr1 orders MIMIC-IV's naive local times and cannot place it among them; 1 row(s) of table 'labevents' "
        "hold a timestamp with a UTC offset (lines 6). Fix the file, or set data.sanity.timestamp_offset=drop (leave "
        "them out of the timelines) or data.sanity.timestamp_offset=keep (use them as they are)"
    )


@pytest.mark.slow  # a build per policy; the default policy's test stays in the quick suite
@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_a_timestamp_with_an_offset_is_left_out_or_kept_when_asked(cohort, clean, tmp_path, policy):
    offsets(cohort)
    manifest = build(cohort, tmp_path / "out", timestamp_offset=policy)
    assert manifest["sanity"]["timestamp_offset"] == {
        "policy": policy,
        "rows": {"labevents": 1, "poe": 1},
        "first_lines": {"labevents": [6], "poe": [3]},
    }
    less = 1 if policy == "drop" else 0
    for table in ("labevents", "poe"):
        assert records(manifest, table) == records(clean[0], table) - less
    if policy == "keep":  # ordered at its wall-clock time, the offset ignored: what the reader did before
        assert events(tmp_path / "out") == events(clean[1])
    else:  # as if the rows were not in the files: same ties in the same file order
        deleted = tmp_path / "deleted"
        shutil.copytree(cohort, deleted)
        edit(deleted / "hosp" / "labevents.csv.gz", lambda f: f.drop(index=4))
        edit(deleted / "hosp" / "poe.csv.gz", lambda f: f.drop(index=1))
        build(deleted, tmp_path / "without")
        assert events(tmp_path / "out") == events(tmp_path / "without")


# ---- (f) over-long text -----------------------------------------------------------------------------------
def long_report(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[0, "text"] = "x" * 1_000_001
    return frame


def test_an_over_long_text_is_refused_by_default_naming_the_limit_setting(cohort, tmp_path):
    edit(cohort / "note" / "radiology.csv.gz", long_report)
    assert refused(cohort, tmp_path / "out") == (
        f"file {cohort / 'note' / 'radiology.csv.gz'}, column 'text', line 2: a value of 1000001 characters "
        f"('{'x' * 40}'...) is over data.sanity.max_text_chars=1000000; 1 row(s) of table 'radiology' hold a text "
        "value over 1000000 characters (lines 2). Fix the file, or set data.sanity.long_text=drop (leave them out of "
        "the timelines) or data.sanity.long_text=keep (use them as they are), or raise data.sanity.max_text_chars"
    )


@pytest.mark.slow  # a build per policy; the default policy's test stays in the quick suite
@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_an_over_long_text_is_left_out_or_kept_when_asked(cohort, clean, tmp_path, policy):
    edit(cohort / "note" / "radiology.csv.gz", long_report)
    manifest = build(cohort, tmp_path / "out", long_text=policy)
    assert manifest["sanity"]["long_text"]["rows"] == {"radiology": 1}
    assert manifest["sanity"]["long_text"]["policy"] == policy
    texts = [len(r["text"]) for e in events(tmp_path / "out") if e[1] == "radiology" for r in e[4]]
    assert len(texts) == records(clean[0], "radiology") - (policy == "drop")
    assert (1_000_001 in texts) == (policy == "keep")


# ---- DuckDB's reason for a file it cannot read -------------------------------------------------------------
def replace_with_bytes(path: Path, tail: bytes) -> Path:
    """``path`` (a .csv.gz) replaced by a plain .csv of its first lines and ``tail``."""
    with gzip.open(path, "rb") as handle:
        head = b"".join(handle.readlines()[:3])
    path.unlink()
    plain = path.with_suffix("")
    plain.write_bytes(head + tail)
    return plain


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"10000001,2151-01-01,1,Weight,\xff\xfe70\n", ("Invalid unicode", "not utf-8 encoded")),
        (b"10000001,2151-01-01,1,Weight," + b"7" * 2_100_000 + b"\n", ("Maximum line size of", "exceeded")),
    ],
    ids=["invalid-utf8", "over-long-line"],
)
def test_duckdbs_reason_for_an_unreadable_csv_is_in_the_one_line_message(cohort, tail, reason):
    omr = replace_with_bytes(cohort / "hosp" / "omr.csv.gz", tail)
    with pytest.raises(MimicSchemaError) as caught:
        MimicReader(modules_of(cohort), empty_tables="warn").register(duckdb.connect())
    message = str(caught.value)
    assert message.startswith(f"file {omr} could not be read as CSV: ") and all(r in message for r in reason)
    assert "\n" not in message and len(message) < 1000 and "Original Line" not in message


# ---- settings and fingerprint -----------------------------------------------------------------------------
def test_the_policies_are_typed_checked_settings_and_part_of_the_fingerprint(tiny_cohort, tmp_path):
    cfg = compose_config("synthesize", "data.sanity.after_death=drop", "data.sanity.death_tolerance_hours=48")
    sanity = settings_of(DataSanity, cfg.data.sanity)
    assert sanity.after_death is OnImplausibleRows.drop and sanity.death_tolerance_hours == 48
    assert sanity.end_before_start is OnImplausibleRows.drop and sanity.age_out_of_range is OnImplausibleRows.error
    with pytest.raises(ConfigError, match="data.sanity.max_text_chars must be >= 1, got 0"):
        validate(compose_config("synthesize", "data.sanity.max_text_chars=0"))

    def fingerprint(**policies) -> str:
        reader = MimicReader(modules_of(tiny_cohort), sanity=DataSanity(**policies))
        return TimelineBuilder(reader, tmp_path / "out").fingerprint()

    assert fingerprint() == fingerprint()
    assert len({fingerprint(), fingerprint(after_death=OnImplausibleRows.drop), fingerprint(max_age=100)}) == 3


# ---- through the entry point ------------------------------------------------------------------------------
@pytest.mark.slow
def test_each_refusal_ends_synthesize_with_one_message_and_no_finished_build(tiny_cohort, tmp_path):
    cases = []
    for name, inject, overrides, message in [
        ("ends", end_before_start, ["data.sanity.end_before_start=error"],
         "admissions.csv.gz, column 'dischtime', line 5: "),
        ("ages", lambda r: edit(r / "hosp" / "patients.csv.gz", impossible_ages), [],
         "patients.csv.gz, column 'anchor_age', line 3: '-3' is not an age from 0 to 120"),
        ("offsets", offsets, [], "labevents.csv.gz, column 'charttime', line 6: "),
        ("utf8", lambda r: replace_with_bytes(r / "hosp" / "omr.csv.gz", b"1,2151-01-01,1,W,\xff\n"), [],
         "omr.csv could not be read as CSV: "),
    ]:  # fmt: skip
        root = tmp_path / name
        shutil.copytree(tiny_cohort, root)
        inject(root)
        cases.append((root, overrides, message))

    def run(case):
        root, overrides, _ = case
        args = [f"data_root={root}-data", "data=mimic_iv", f"data.root={root}", "data.empty_tables=warn"]
        return run_entry_point("synthesize.py", *args, "pipeline=timelines", "progress=false", *overrides,
                               cwd=tmp_path, timeout=300)  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, cases))
    keys = ["data.sanity.end_before_start=drop", "data.sanity.age_out_of_range=drop",
            "data.sanity.timestamp_offset=drop", "Invalid unicode"]  # fmt: skip
    for (root, _, message), result, key in zip(cases, results, keys, strict=True):
        assert result.returncode == 1, result.stderr[-2000:]
        assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: file {root}/") and message in last and key in last, last
        assert result.stderr.count("error:") == 1
        built = Path(f"{root}-data")
        assert not list(built.rglob(MANIFEST)) and not list(built.rglob("shard-*.parquet"))
