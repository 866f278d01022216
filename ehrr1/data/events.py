"""Event sources: which MIMIC-IV rows enter a patient timeline, at what time, with which fields.

The timeline follows the EHR-R1 reference (``preprocess/rank.py``, ``combination.py``): every row of every
event table goes into one time-ordered list per patient, and an event is then either a **run** of
consecutive rows of one table (``grouping=runs``, the reference's events, possibly spanning several
timestamps) or the rows of one table at one timestamp (``grouping=timestamp``).

Row times are the reference's: each table's own time column; triage takes its ED stay's arrival plus one
second and ED diagnoses its ED stay's out-time; dates (omr, procedures_icd) count as 00:00. Diagnoses
and DRG codes carry no time: they are placed right after the last timed row of their admission.

Ties (rows at the same second) are ordered as the reference's stable sort leaves them, deterministically:
hosp rows, then notes, then ED rows, then ICU rows; hosp tables in alphabetical order and file order;
notes by ``note_seq``; ED rows by stay, then stay / triage, timed ED rows, ED diagnoses, then the
reference's ED table rank; ICU rows by admission, stay, ICU stay first, table. File order breaks what
remains (the reference's listing order of the files, sorted here).

Record values are text exactly as the reference writes them: pandas' reading of the CSV column
(``99`` for an integer column, ``99.0`` for a float column or an integer column with gaps, ``nan`` for a
missing value). Mapped fields (item names, ICD titles, CCS and ATC classes, exam names) are joined from
the dictionaries at build time and are null when the code is not in the dictionary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEMOGRAPHICS = "patients"
MODULE_ORDER = ("hosp", "note", "ed", "icu")
# the reference's rank of ED tables at one time (rank.py sort_ed)
ED_RANK = {"edstays": 0, "triage": 1, "medrecon": 2, "pyxis": 3, "vitalsign": 4, "diagnosis": 5}
UNTIMED = ("diagnoses_icd", "drgcodes")  # placed after the last timed row of their admission


@dataclass(frozen=True)
class Mapping:
    """A field looked up in a dictionary table.

    ``kind``: ``item`` (itemid -> label), ``icd`` (icd_version + icd_code -> long_title; CCS tables share
    the layout), ``ndc`` (11-digit zero-padded NDC -> atc_name), ``exam_names`` (note_id -> the sorted
    list of radiology exam names).
    """

    output: str
    kind: str
    table: str


@dataclass(frozen=True)
class EventSource:
    event_type: str
    module: str
    time: str | None  # the time column (None: untimed, or derived from the ED stay)
    fields: tuple[str, ...]  # columns kept as text in the records
    mappings: tuple[Mapping, ...] = ()
    optional_fields: tuple[str, ...] = ()  # kept when the file has them, else missing ("nan")
    label_fields: tuple[str, ...] = field(default=())  # read for labels, not rendered

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.fields, *self.label_fields)


def _src(event_type: str, module: str, time: str | None, fields: str, *mappings: Mapping, **kw) -> EventSource:
    names = tuple(f.strip() for f in fields.split(",") if f.strip())
    extra = {k: tuple(v.split(", ")) if isinstance(v, str) else v for k, v in kw.items()}
    return EventSource(event_type, module, time, names, tuple(mappings), **extra)


_LAB_ITEM = Mapping("item_name", "item", "d_labitems")
_ICU_ITEM = Mapping("item_name", "item", "d_items")
_ATC = Mapping("ATC Type", "ndc", "d_atc_prescriptions")
_VITALS = "temperature, heartrate, resprate, o2sat, sbp, dbp, pain"

EVENT_SOURCES: list[EventSource] = [
    # hosp (alphabetical: the reference's listing order)
    _src(
        "admissions",
        "hosp",
        "admittime",
        "admission_type, admission_location, admittime, dischtime",
        label_fields="deathtime, hospital_expire_flag, discharge_location, insurance, language, marital_status, race",
    ),
    _src(
        "diagnoses_icd",
        "hosp",
        None,
        "seq_num, icd_code, icd_version",
        Mapping("diagnoses", "icd", "d_icd_diagnoses"),
        Mapping("CCS Type", "icd", "d_ccs_diagnoses"),
    ),
    _src("drgcodes", "hosp", None, "drg_type, drg_code, description"),
    _src("emar", "hosp", "charttime", "medication, event_txt"),
    _src("hcpcsevents", "hosp", "chartdate", "hcpcs_cd, short_description"),
    _src(
        "labevents",
        "hosp",
        "charttime",
        "itemid, value, valuenum, valueuom, ref_range_lower, ref_range_upper, flag, comments",
        _LAB_ITEM,
    ),
    _src(
        "microbiologyevents",
        "hosp",
        "charttime",
        "spec_type_desc, test_name, org_name, ab_name, interpretation, comments",
        optional_fields=("dilution_text",),
    ),
    _src("omr", "hosp", "chartdate", "result_name, result_value"),
    _src("pharmacy", "hosp", "entertime", "medication, route, frequency", optional_fields=("proc_type", "status")),
    _src("poe", "hosp", "ordertime", "order_type, order_subtype"),
    _src(
        "prescriptions",
        "hosp",
        "starttime",
        "drug, prod_strength, dose_val_rx, dose_unit_rx, route, stoptime",
        _ATC,
        optional_fields=("ndc",),
    ),
    _src(
        "procedures_icd",
        "hosp",
        "chartdate",
        "icd_code, icd_version",
        Mapping("procedures", "icd", "d_icd_procedures"),
        Mapping("CCS Type", "icd", "d_ccs_procedures"),
    ),
    _src("services", "hosp", "transfertime", "prev_service, curr_service"),
    _src("transfers", "hosp", "intime", "eventtype, careunit, outtime"),
    # note
    _src("discharge", "note", "charttime", "note_seq, text", optional_fields=("note_type",)),
    _src(
        "radiology",
        "note",
        "charttime",
        "note_id, note_seq, text",
        Mapping("exam_name", "exam_names", "radiology_detail"),
        optional_fields=("note_type",),
    ),
    # ed
    _src(
        "diagnosis",
        "ed",
        None,
        "seq_num, icd_code, icd_version, icd_title",
        Mapping("CCS Type", "icd", "d_ccs_diagnoses"),
    ),
    _src(
        "edstays", "ed", "intime", "intime, outtime, arrival_transport, disposition", optional_fields=("gender", "race")
    ),
    _src("medrecon", "ed", "charttime", "name, etcdescription", _ATC, optional_fields=("ndc",)),
    _src("pyxis", "ed", "charttime", "name"),
    _src("triage", "ed", None, f"{_VITALS}, acuity, chiefcomplaint"),
    _src("vitalsign", "ed", "charttime", f"{_VITALS}, rhythm"),
    # icu
    _src(
        "chartevents", "icu", "charttime", "itemid, value, valuenum, valueuom", _ICU_ITEM, optional_fields=("warning",)
    ),
    _src("datetimeevents", "icu", "charttime", "itemid, value, valueuom", _ICU_ITEM),
    _src("icustays", "icu", "intime", "first_careunit, last_careunit, intime, outtime, los"),
    _src("ingredientevents", "icu", "starttime", "itemid, amount, amountuom, rate, rateuom", _ICU_ITEM),
    _src("inputevents", "icu", "starttime", "itemid, amount, amountuom, rate, rateuom, endtime", _ICU_ITEM),
    _src("outputevents", "icu", "charttime", "itemid, value, valueuom", _ICU_ITEM),
    _src(
        "procedureevents",
        "icu",
        "starttime",
        "itemid, value, valueuom, endtime",
        _ICU_ITEM,
        optional_fields=("location", "locationcategory"),
    ),
]

DEMOGRAPHIC_FIELDS = ("gender", "anchor_age", "anchor_year", "dod")
SOURCES = {s.event_type: s for s in EVENT_SOURCES}
EVENT_TYPES: tuple[str, ...] = (DEMOGRAPHICS, *SOURCES)
# table rank inside its module for ties: alphabetical (the reference's sorted listing), ED by its own rank
TABLE_RANK = {s.event_type: (ED_RANK[s.event_type] if s.module == "ed" else i) for i, s in enumerate(EVENT_SOURCES)}
