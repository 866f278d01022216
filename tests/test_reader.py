"""Bad MIMIC-IV input gives one clear error naming the file, column, line and value."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import shutil
from pathlib import Path

import duckdb
import pytest

from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.reader import MimicReader, MimicSchemaError
from tests.support import modules_of


@pytest.fixture
def mimic(tiny_cohort, tmp_path) -> Path:
    root = tmp_path / "mimic"
    shutil.copytree(tiny_cohort, root)
    return root


def read_rows(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.reader(handle))


def write_rows(path: Path, rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    with gzip.open(path, "wt", newline="") as handle:
        handle.write(buffer.getvalue())


def set_cell(path: Path, column: str, value: str, row: int = 1) -> int:
    """Overwrite ``column`` in data row ``row``; return the file line number (header = line 1)."""
    rows = read_rows(path)
    rows[row][rows[0].index(column)] = value
    write_rows(path, rows)
    return row + 1


def register(root: Path, **kwargs) -> MimicReader:
    reader = MimicReader(modules_of(root), empty_tables="warn", **kwargs)  # the tiny cohort has no microbiology
    reader.register(duckdb.connect())
    return reader


def test_valid_cohort_registers(mimic):
    reader = register(mimic)
    assert {"patients", "labevents", "edstays", "discharge"} <= set(reader.tables)


def test_missing_required_module(mimic):
    shutil.rmtree(mimic / "hosp")
    with pytest.raises(
        MimicSchemaError, match=r"module 'hosp' not found: .*hosp is not a directory.*data\.modules\.hosp"
    ):
        register(mimic)


def test_missing_required_table(mimic):
    (mimic / "hosp" / "labevents.csv.gz").unlink()
    with pytest.raises(MimicSchemaError, match=r"table 'labevents' not found: expected .*hosp/labevents\.csv\.gz"):
        register(mimic)


def test_missing_column(mimic):
    path = mimic / "hosp" / "patients.csv.gz"
    rows = read_rows(path)
    drop = rows[0].index("anchor_age")
    write_rows(path, [[v for i, v in enumerate(r) if i != drop] for r in rows])
    with pytest.raises(MimicSchemaError, match=r"patients\.csv\.gz: missing column\(s\) 'anchor_age'"):
        register(mimic)


def test_empty_file(mimic):
    path = mimic / "hosp" / "omr.csv.gz"
    path.unlink()
    (mimic / "hosp" / "omr.csv").write_bytes(b"")
    with pytest.raises(MimicSchemaError, match=r"omr\.csv is empty: expected a CSV header"):
        register(mimic)


def test_corrupt_gzip(mimic):
    (mimic / "icu" / "icustays.csv.gz").write_bytes(b"\x1f\x8bthis is not gzip data at all")
    with pytest.raises(MimicSchemaError, match=r"icustays\.csv\.gz could not be read as CSV"):
        register(mimic)


def test_unparseable_timestamp(mimic):
    line = set_cell(mimic / "hosp" / "admissions.csv.gz", "admittime", "yesterday 5pm", row=2)
    with pytest.raises(
        MimicSchemaError,
        match=rf"admissions\.csv\.gz, column 'admittime', line {line}: "
        r"'yesterday 5pm' is not a timestamp",
    ):
        register(mimic)


def test_non_integer_id(mimic):
    set_cell(mimic / "hosp" / "labevents.csv.gz", "subject_id", "patient-7")
    with pytest.raises(MimicSchemaError, match=r"column 'subject_id', line 2: 'patient-7' is not an integer"):
        register(mimic)


def test_non_numeric_value(mimic):
    set_cell(mimic / "hosp" / "labevents.csv.gz", "valuenum", "high", row=3)
    with pytest.raises(
        MimicSchemaError, match=r"labevents\.csv\.gz, column 'valuenum', line 4: 'high' is not a number"
    ):
        register(mimic)


def test_invalid_gender(mimic):
    set_cell(mimic / "hosp" / "patients.csv.gz", "gender", "X")
    with pytest.raises(MimicSchemaError, match=r"column 'gender', line 2: 'X' is not one of M, F"):
        register(mimic)


def test_invalid_icd_version(mimic):
    set_cell(mimic / "hosp" / "diagnoses_icd.csv.gz", "icd_version", "11")
    with pytest.raises(
        MimicSchemaError,
        match=r"diagnoses_icd\.csv\.gz, column 'icd_version', line 2: '11' is not "
        r"one of 9, 10",
    ):
        register(mimic)


def test_empty_subject_id(mimic):
    set_cell(mimic / "hosp" / "labevents.csv.gz", "subject_id", "")
    with pytest.raises(MimicSchemaError, match=r"labevents\.csv\.gz, column 'subject_id', line 2: an empty subject_id"):
        register(mimic)


def test_ambiguous_csv_and_gz(mimic):
    shutil.copy(mimic / "hosp" / "services.csv.gz", mimic / "hosp" / "services.csv")
    with pytest.raises(MimicSchemaError, match=r"table 'services': both .* exist"):
        register(mimic)


def test_table_missing_in_present_optional_module(mimic):
    (mimic / "ed" / "triage.csv.gz").unlink()
    with pytest.raises(MimicSchemaError, match=r"table 'triage' not found: expected .*ed/triage\.csv\.gz"):
        register(mimic)


@pytest.mark.slow
def test_missing_optional_module_is_reported_once_and_skipped(mimic, tmp_path, caplog):
    shutil.rmtree(mimic / "note")
    with caplog.at_level(logging.WARNING):
        reader = register(mimic)
    warnings = [r for r in caplog.records if "module 'note' not found" in r.getMessage()]
    assert len(warnings) == 1 and "event types are skipped" in warnings[0].getMessage()
    assert reader.missing_modules == ["note"] and not reader.has("discharge")
    manifest = build_timelines(reader, tmp_path / "tl", TimelineBuildSettings(), progress=False)
    assert {"radiology", "discharge"} <= set(manifest["skipped_event_types"])
    assert "discharge" not in manifest["per_event_type"]


def test_bad_value_beyond_the_sample_is_explained_during_the_build(mimic, tmp_path):
    rows = read_rows(mimic / "hosp" / "poe.csv.gz")
    assert len(rows) > 40
    line = set_cell(mimic / "hosp" / "poe.csv.gz", "ordertime", "2150-13-45 99:00:00", row=len(rows) - 1)
    reader = MimicReader(modules_of(mimic), sample_rows=5, empty_tables="warn")
    with pytest.raises(
        MimicSchemaError, match=rf"poe\.csv\.gz, column 'ordertime', line {line}: '2150-13-45 99:00:00'"
    ):
        build_timelines(reader, tmp_path / "tl", TimelineBuildSettings(), progress=False)
