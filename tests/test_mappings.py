"""Code mappings: the licence-free CCS / ATC defaults, a user's mapping tables, and their errors."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.mappings import MAPPING_COLUMNS, MappingError, default_ccs, mapping_file, pad_ndc
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import MAPPINGS
from ehrr1.data.timeline import TimelineStore
from tests.support import modules_of, run_entry_point


def test_default_ccs_covers_icd9_and_icd10_diagnoses_and_icd10_procedures():
    diagnoses = {(code, version): category for code, version, category in default_ccs("d_ccs_diagnoses")}
    procedures = {(code, version) for code, version, _ in default_ccs("d_ccs_procedures")}
    assert diagnoses["0389", "9"] == diagnoses["A419", "10"] == "Septicemia (except in labor)"
    assert diagnoses["4280", "9"] == diagnoses["I5022", "10"] == "Congestive heart failure; nonhypertensive"
    assert {version for _, version in procedures} == {"10"}  # no licence-free ICD-9 procedure table
    assert len(diagnoses) == len(default_ccs("d_ccs_diagnoses"))  # one category per code


def test_ndc_keys_are_eleven_digits():
    assert pad_ndc("409490234.0") == "00409490234" and pad_ndc("63323026201") == "63323026201"


def _coded(root: Path, event_type: str) -> Counter:
    """(ICD version, whether a CCS / ATC type was joined) over every record of ``event_type``."""
    field = "ATC Type" if event_type in ("prescriptions", "medrecon") else "CCS Type"
    seen: Counter = Counter()
    for timeline in TimelineStore(root):
        for event in timeline.events:
            if event.event_type == event_type:
                seen.update((r.get("icd_version"), r.get(field) not in (None, "None")) for r in event.records)
    return seen


@pytest.fixture(scope="module")
def mapped_timelines(cohort_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mapped") / "timelines"
    settings = TimelineBuildSettings(patients_per_shard=100, mapping_dir=str(cohort_root / MAPPINGS))
    build_timelines(MimicReader(modules_of(cohort_root)), out, settings, progress=False)
    return out


def test_cohort_mixes_icd9_and_icd10_and_writes_ndcs(timelines_root):
    versions = {version for version, _ in _coded(timelines_root, "diagnoses_icd")}
    assert versions == {"9", "10"}
    assert all(mapped for _, mapped in _coded(timelines_root, "medrecon"))  # every home med has an ATC class


def test_defaults_map_every_diagnosis_and_icd10_procedure_but_no_icd9_procedure(timelines_root):
    for event_type in ("diagnoses_icd", "diagnosis"):
        assert all(mapped for _, mapped in _coded(timelines_root, event_type)), event_type
    procedures = _coded(timelines_root, "procedures_icd")
    assert procedures[("10", True)] and procedures[("9", False)]
    assert not procedures[("10", False)] and not procedures[("9", True)]


@pytest.mark.slow
def test_the_cohorts_own_mapping_tables_map_every_code(mapped_timelines):
    for event_type in ("diagnoses_icd", "procedures_icd", "diagnosis", "medrecon"):
        coded = _coded(mapped_timelines, event_type)
        assert coded and all(mapped for _, mapped in coded), event_type
    manifest = TimelineStore(mapped_timelines).manifest["mappings"]
    assert manifest["d_ccs_procedures"].endswith("d_ccs_procedures.csv")


@pytest.mark.parametrize("table", list(MAPPING_COLUMNS))
def test_a_missing_mapping_table_is_named_with_its_columns(cohort_root, tmp_path, table):
    shutil.copytree(cohort_root / MAPPINGS, tmp_path / "maps")
    (tmp_path / "maps" / f"{table}.csv").unlink()
    with pytest.raises(MappingError, match=f"{table}.csv not found; expected {table}.csv with columns"):
        mapping_file(tmp_path / "maps", table)
    with pytest.raises(MappingError, match=f"{table}.csv"):  # before anything is built
        build_timelines(
            MimicReader(modules_of(cohort_root)),
            tmp_path / "timelines",
            TimelineBuildSettings(mapping_dir=str(tmp_path / "maps")),
            progress=False,
        )
    assert not (tmp_path / "timelines").exists()


def test_a_mapping_table_without_a_column_names_the_column(tmp_path):
    path = tmp_path / "d_atc_prescriptions.csv"
    path.write_text("ndc,atc_name\n00409490234,ANTIBIOTICS\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"d_atc_prescriptions.csv: missing column\(s\) ndc_code; expected"):
        mapping_file(tmp_path, "d_atc_prescriptions")


@pytest.mark.slow
def test_a_bad_mapping_dir_ends_the_cli_with_one_message_and_exit_code_1(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    for table, columns in MAPPING_COLUMNS.items():
        with open(maps / f"{table}.csv", "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(columns if table != "d_ccs_procedures" else ("code", "long_title"))
    result = run_entry_point(
        "synthesize.py",
        "pipeline=timelines",
        "data.synthetic.n_patients=3",
        f"data_root={tmp_path / 'data'}",
        f"timelines.mapping_dir={maps}",
        "progress=false",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: mapping table {maps / 'd_ccs_procedures.csv'}: missing column(s) icd_code, icd_version; expected "
        "icd_code, icd_version, long_title (found code, long_title)"
    ]
