"""The MIMIC-IV tables ehrr1 reads: module, file name, and the columns it needs with their types.

Only the columns listed here are read (projection pushdown), so the same schema serves MIMIC-IV v2.2
and v3.x, which differ in columns we do not use. ``hosp`` and ``icu`` form the main release and are
required; ``ed`` and ``note`` are released separately and are optional as whole modules. A few hosp
tables that no task needs (pharmacy, hcpcsevents, drgcodes) are optional on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

# Column types and the DuckDB type each is cast to. Dates are cast through TIMESTAMP because MIMIC-IV
# writes some date columns as "2180-05-06" and others as "2180-05-06 00:00:00".
DUCKDB_TYPES = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR", "timestamp": "TIMESTAMP", "date": "TIMESTAMP"}

REQUIRED_MODULES = ("hosp", "icu")
OPTIONAL_MODULES = ("ed", "note")
MODULES = REQUIRED_MODULES + OPTIONAL_MODULES


@dataclass(frozen=True)
class TableSchema:
    name: str
    module: str
    columns: dict[str, str]
    optional: bool = False


def _table(module: str, name: str, /, optional: bool = False, **columns: str) -> TableSchema:
    unknown = {t for t in columns.values()} - DUCKDB_TYPES.keys()
    if unknown:
        raise ValueError(f"table {name}: unknown column types {sorted(unknown)}")
    return TableSchema(name=name, module=module, columns=columns, optional=optional)


TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in [
        # hosp
        _table("hosp", "patients", subject_id="int", gender="str", anchor_age="int", anchor_year="int", dod="date"),
        _table(
            "hosp",
            "admissions",
            subject_id="int",
            hadm_id="int",
            admittime="timestamp",
            dischtime="timestamp",
            deathtime="timestamp",
            admission_type="str",
            admission_location="str",
            discharge_location="str",
            insurance="str",
            language="str",
            marital_status="str",
            race="str",
            hospital_expire_flag="int",
        ),
        _table(
            "hosp",
            "transfers",
            subject_id="int",
            hadm_id="int",
            transfer_id="int",
            eventtype="str",
            careunit="str",
            intime="timestamp",
            outtime="timestamp",
        ),
        _table(
            "hosp",
            "services",
            subject_id="int",
            hadm_id="int",
            transfertime="timestamp",
            prev_service="str",
            curr_service="str",
        ),
        _table(
            "hosp",
            "labevents",
            subject_id="int",
            hadm_id="int",
            itemid="int",
            charttime="timestamp",
            value="str",
            valuenum="float",
            valueuom="str",
            ref_range_lower="float",
            ref_range_upper="float",
            flag="str",
            comments="str",
        ),
        _table("hosp", "d_labitems", itemid="int", label="str", fluid="str", category="str"),
        _table(
            "hosp",
            "microbiologyevents",
            subject_id="int",
            hadm_id="int",
            chartdate="date",
            charttime="timestamp",
            spec_type_desc="str",
            test_name="str",
            org_name="str",
            ab_name="str",
            interpretation="str",
            comments="str",
        ),
        _table(
            "hosp",
            "prescriptions",
            subject_id="int",
            hadm_id="int",
            starttime="timestamp",
            stoptime="timestamp",
            drug="str",
            prod_strength="str",
            dose_val_rx="str",
            dose_unit_rx="str",
            route="str",
        ),
        _table(
            "hosp", "emar", subject_id="int", hadm_id="int", charttime="timestamp", medication="str", event_txt="str"
        ),
        _table(
            "hosp", "poe", subject_id="int", hadm_id="int", ordertime="timestamp", order_type="str", order_subtype="str"
        ),
        _table("hosp", "omr", subject_id="int", chartdate="date", result_name="str", result_value="str"),
        _table(
            "hosp",
            "procedures_icd",
            subject_id="int",
            hadm_id="int",
            chartdate="date",
            icd_code="str",
            icd_version="int",
        ),
        _table(
            "hosp", "diagnoses_icd", subject_id="int", hadm_id="int", seq_num="int", icd_code="str", icd_version="int"
        ),
        _table("hosp", "d_icd_diagnoses", icd_code="str", icd_version="int", long_title="str"),
        _table("hosp", "d_icd_procedures", icd_code="str", icd_version="int", long_title="str"),
        _table(
            "hosp",
            "pharmacy",
            optional=True,
            subject_id="int",
            hadm_id="int",
            entertime="timestamp",
            medication="str",
            route="str",
            frequency="str",
        ),
        _table(
            "hosp",
            "hcpcsevents",
            optional=True,
            subject_id="int",
            hadm_id="int",
            chartdate="date",
            hcpcs_cd="str",
            short_description="str",
        ),
        _table(
            "hosp",
            "drgcodes",
            optional=True,
            subject_id="int",
            hadm_id="int",
            drg_type="str",
            drg_code="str",
            description="str",
        ),
        # icu
        _table(
            "icu",
            "icustays",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            first_careunit="str",
            last_careunit="str",
            intime="timestamp",
            outtime="timestamp",
            los="float",
        ),
        _table("icu", "d_items", itemid="int", label="str", category="str", unitname="str"),
        _table(
            "icu",
            "chartevents",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            charttime="timestamp",
            itemid="int",
            value="str",
            valuenum="float",
            valueuom="str",
        ),
        _table(
            "icu",
            "inputevents",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            starttime="timestamp",
            endtime="timestamp",
            itemid="int",
            amount="float",
            amountuom="str",
            rate="float",
            rateuom="str",
        ),
        _table(
            "icu",
            "ingredientevents",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            starttime="timestamp",
            itemid="int",
            amount="float",
            amountuom="str",
            rate="float",
            rateuom="str",
        ),
        _table(
            "icu",
            "outputevents",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            charttime="timestamp",
            itemid="int",
            value="float",
            valueuom="str",
        ),
        _table(
            "icu",
            "procedureevents",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            starttime="timestamp",
            endtime="timestamp",
            itemid="int",
            value="float",
            valueuom="str",
        ),
        _table(
            "icu",
            "datetimeevents",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            charttime="timestamp",
            itemid="int",
            value="timestamp",
            valueuom="str",
        ),
        # ed (MIMIC-IV-ED, a separate release)
        _table(
            "ed",
            "edstays",
            subject_id="int",
            hadm_id="int",
            stay_id="int",
            intime="timestamp",
            outtime="timestamp",
            arrival_transport="str",
            disposition="str",
        ),
        _table(
            "ed",
            "triage",
            subject_id="int",
            stay_id="int",
            temperature="float",
            heartrate="float",
            resprate="float",
            o2sat="float",
            sbp="float",
            dbp="float",
            pain="str",
            acuity="float",
            chiefcomplaint="str",
        ),
        _table(
            "ed",
            "vitalsign",
            subject_id="int",
            stay_id="int",
            charttime="timestamp",
            temperature="float",
            heartrate="float",
            resprate="float",
            o2sat="float",
            sbp="float",
            dbp="float",
            rhythm="str",
            pain="str",
        ),
        _table(
            "ed", "medrecon", subject_id="int", stay_id="int", charttime="timestamp", name="str", etcdescription="str"
        ),
        _table("ed", "pyxis", subject_id="int", stay_id="int", charttime="timestamp", name="str"),
        _table(
            "ed",
            "diagnosis",
            subject_id="int",
            stay_id="int",
            seq_num="int",
            icd_code="str",
            icd_version="int",
            icd_title="str",
        ),
        # note (MIMIC-IV-Note, a separate release)
        _table("note", "radiology", subject_id="int", hadm_id="int", note_id="str", charttime="timestamp", text="str"),
        _table("note", "radiology_detail", note_id="str", field_name="str", field_value="str"),
        _table("note", "discharge", subject_id="int", hadm_id="int", note_id="str", charttime="timestamp", text="str"),
    ]
}
