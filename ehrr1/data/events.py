"""Event types of a patient timeline: where each comes from and which fields its records keep.

An event is every record of one source table for one patient at one timestamp. Each event type below
is a SQL query over the typed MIMIC-IV views (``reader.py``) that yields one row per record with the
columns ``subject_id, hadm_id, stay_id, time`` followed by the record fields. Dictionary tables are
joined here, so records carry names (lab labels, ICD titles) and the timeline is self-contained.

Ordering: events are sorted by ``time``; events at the same time follow the order of ``EVENT_TYPES``
(its position is the tie-break rank), which walks a stay as it happens: ED arrival and triage, ED
disposition, admission and transfers, orders, results, and the end-of-stay documents last. Records
inside an event are sorted by all their fields, so the result does not depend on input row order.

``stay_id`` is the ED stay for ED event types and the ICU stay for ICU event types.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventSource:
    event_type: str
    tables: tuple[str, ...]  # tables the query reads; the first is the event's own table
    query: str
    fields: tuple[str, ...]  # record fields, in the order they are stored


def _source(event_type: str, tables: tuple[str, ...], select: str, fields: str) -> EventSource:
    names = tuple(f.strip() for f in fields.split(","))
    return EventSource(event_type, tables, select, names)


_ICU_ITEM = """
SELECT e.subject_id, e.hadm_id, e.stay_id, e.{time} AS time, COALESCE(d.label, CAST(e.itemid AS VARCHAR))
       AS label, {cols}
FROM {table} e LEFT JOIN d_items d USING (itemid)"""


def _icu(table: str, time: str, cols: str) -> EventSource:
    query = _ICU_ITEM.format(time=time, table=table, cols=", ".join(f"e.{c}" for c in cols.split(", ")))
    return _source(table, (table, "d_items"), query, "label, " + cols)


_ED_LINK = "LEFT JOIN (SELECT stay_id, min(hadm_id) AS hadm_id FROM edstays GROUP BY stay_id) s USING (stay_id)"

EVENT_SOURCES: list[EventSource] = [
    _source(
        "edstays",
        ("edstays",),
        "SELECT subject_id, hadm_id, stay_id, intime AS time, arrival_transport, intime, outtime, "
        "disposition FROM edstays",
        "arrival_transport, intime, outtime, disposition",
    ),
    _source(
        "triage",
        ("triage", "edstays"),
        "SELECT t.subject_id, s.hadm_id, t.stay_id, s.intime AS time, t.temperature, t.heartrate, "
        "t.resprate, t.o2sat, t.sbp, t.dbp, t.pain, t.acuity, t.chiefcomplaint FROM triage t "
        "JOIN (SELECT stay_id, min(hadm_id) AS hadm_id, min(intime) AS intime FROM edstays GROUP BY stay_id) s "
        "USING (stay_id)",
        "temperature, heartrate, resprate, o2sat, sbp, dbp, pain, acuity, chiefcomplaint",
    ),
    _source(
        "vitalsign",
        ("vitalsign", "edstays"),
        f"SELECT v.subject_id, s.hadm_id, v.stay_id, v.charttime AS time, v.temperature, v.heartrate, "
        f"v.resprate, v.o2sat, v.sbp, v.dbp, v.rhythm, v.pain FROM vitalsign v {_ED_LINK}",
        "temperature, heartrate, resprate, o2sat, sbp, dbp, rhythm, pain",
    ),
    _source(
        "medrecon",
        ("medrecon", "edstays"),
        f"SELECT m.subject_id, s.hadm_id, m.stay_id, m.charttime AS time, m.name, m.etcdescription "
        f"FROM medrecon m {_ED_LINK}",
        "name, etcdescription",
    ),
    _source(
        "pyxis",
        ("pyxis", "edstays"),
        f"SELECT p.subject_id, s.hadm_id, p.stay_id, p.charttime AS time, p.name FROM pyxis p {_ED_LINK}",
        "name",
    ),
    _source(
        "diagnosis",
        ("diagnosis", "edstays"),
        "SELECT d.subject_id, s.hadm_id, d.stay_id, s.outtime AS time, d.seq_num, d.icd_code, "
        "d.icd_version, d.icd_title FROM diagnosis d "
        "JOIN (SELECT stay_id, min(hadm_id) AS hadm_id, max(outtime) AS outtime FROM edstays GROUP BY stay_id) s "
        "USING (stay_id)",
        "seq_num, icd_code, icd_version, icd_title",
    ),
    _source(
        "admissions",
        ("admissions",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, admittime AS time, admission_type, "
        "admission_location, insurance, language, marital_status, race, admittime, dischtime, deathtime, "
        "discharge_location, hospital_expire_flag FROM admissions",
        "admission_type, admission_location, insurance, language, marital_status, race, admittime, "
        "dischtime, deathtime, discharge_location, hospital_expire_flag",
    ),
    _source(
        "transfers",
        ("transfers",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, intime AS time, eventtype, careunit, outtime "
        "FROM transfers",
        "eventtype, careunit, outtime",
    ),
    _source(
        "services",
        ("services",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, transfertime AS time, prev_service, "
        "curr_service FROM services",
        "prev_service, curr_service",
    ),
    _source(
        "icustays",
        ("icustays",),
        "SELECT subject_id, hadm_id, stay_id, intime AS time, first_careunit, last_careunit, intime, "
        "outtime, los FROM icustays",
        "first_careunit, last_careunit, intime, outtime, los",
    ),
    _source(
        "poe",
        ("poe",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, ordertime AS time, order_type, order_subtype FROM poe",
        "order_type, order_subtype",
    ),
    _source(
        "prescriptions",
        ("prescriptions",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, starttime AS time, drug, prod_strength, "
        "dose_val_rx, dose_unit_rx, route, stoptime FROM prescriptions",
        "drug, prod_strength, dose_val_rx, dose_unit_rx, route, stoptime",
    ),
    _source(
        "pharmacy",
        ("pharmacy",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, starttime AS time, medication, route, "
        "frequency FROM pharmacy",
        "medication, route, frequency",
    ),
    _source(
        "emar",
        ("emar",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, charttime AS time, medication, event_txt FROM emar",
        "medication, event_txt",
    ),
    _source(
        "labevents",
        ("labevents", "d_labitems"),
        "SELECT l.subject_id, l.hadm_id, NULL::BIGINT AS stay_id, l.charttime AS time, "
        "COALESCE(d.label, CAST(l.itemid AS VARCHAR)) AS label, l.value, l.valuenum, l.valueuom, "
        "l.ref_range_lower, l.ref_range_upper, l.flag, l.comments "
        "FROM labevents l LEFT JOIN d_labitems d USING (itemid) WHERE l.valuenum IS NOT NULL",
        "label, value, valuenum, valueuom, ref_range_lower, ref_range_upper, flag, comments",
    ),
    _source(
        "microbiologyevents",
        ("microbiologyevents",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, COALESCE(charttime, chartdate) AS time, "
        "spec_type_desc, test_name, org_name, ab_name, interpretation, comments FROM microbiologyevents",
        "spec_type_desc, test_name, org_name, ab_name, interpretation, comments",
    ),
    _icu("chartevents", "charttime", "value, valuenum, valueuom"),
    _icu("datetimeevents", "charttime", "value, valueuom"),
    _icu("inputevents", "starttime", "amount, amountuom, rate, rateuom, endtime"),
    _icu("ingredientevents", "starttime", "amount, amountuom, rate, rateuom"),
    _icu("procedureevents", "starttime", "value, valueuom, endtime"),
    _icu("outputevents", "charttime", "value, valueuom"),
    _source(
        "omr",
        ("omr",),
        "SELECT subject_id, NULL::BIGINT AS hadm_id, NULL::BIGINT AS stay_id, chartdate AS time, "
        "result_name, result_value FROM omr",
        "result_name, result_value",
    ),
    _source(
        "radiology",
        ("radiology", "radiology_detail"),
        "SELECT r.subject_id, r.hadm_id, NULL::BIGINT AS stay_id, r.charttime AS time, d.exam_name, r.text "
        "FROM radiology r LEFT JOIN (SELECT note_id, min(field_value) AS exam_name FROM radiology_detail "
        "WHERE field_name = 'exam_name' GROUP BY note_id) d USING (note_id)",
        "exam_name, text",
    ),
    _source(
        "hcpcsevents",
        ("hcpcsevents",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, chartdate AS time, hcpcs_cd, "
        "short_description FROM hcpcsevents",
        "hcpcs_cd, short_description",
    ),
    # ICD procedures carry only a date: they take the later of that date and the admission time, so a
    # procedure never precedes the admission it belongs to.
    _source(
        "procedures_icd",
        ("procedures_icd", "d_icd_procedures", "admissions"),
        "SELECT p.subject_id, p.hadm_id, NULL::BIGINT AS stay_id, "
        "CASE WHEN a.admittime > p.chartdate THEN a.admittime ELSE p.chartdate END AS time, p.icd_code, "
        "p.icd_version, COALESCE(d.long_title, p.icd_code) AS long_title FROM procedures_icd p "
        "LEFT JOIN admissions a USING (subject_id, hadm_id) "
        "LEFT JOIN d_icd_procedures d USING (icd_code, icd_version)",
        "icd_code, icd_version, long_title",
    ),
    _source(
        "discharge",
        ("discharge",),
        "SELECT subject_id, hadm_id, NULL::BIGINT AS stay_id, charttime AS time, text FROM discharge",
        "text",
    ),
    _source(
        "drgcodes",
        ("drgcodes", "admissions"),
        "SELECT g.subject_id, g.hadm_id, NULL::BIGINT AS stay_id, a.dischtime AS time, g.drg_type, "
        "g.drg_code, g.description FROM drgcodes g JOIN admissions a USING (subject_id, hadm_id)",
        "drg_type, drg_code, description",
    ),
    # Diagnoses carry no time in MIMIC-IV: they are coded at the end of the stay, so they take the
    # discharge time and, by rank, follow every other event of that moment.
    _source(
        "diagnoses_icd",
        ("diagnoses_icd", "d_icd_diagnoses", "admissions"),
        "SELECT g.subject_id, g.hadm_id, NULL::BIGINT AS stay_id, a.dischtime AS time, g.seq_num, g.icd_code, "
        "g.icd_version, COALESCE(d.long_title, g.icd_code) AS long_title FROM diagnoses_icd g "
        "JOIN admissions a USING (subject_id, hadm_id) LEFT JOIN d_icd_diagnoses d USING (icd_code, icd_version)",
        "seq_num, icd_code, icd_version, long_title",
    ),
]

DEMOGRAPHICS = "patients"
DEMOGRAPHIC_FIELDS = ("gender", "anchor_age", "anchor_year", "dod")

# Rank 0 is the demographics event, which opens every timeline.
EVENT_TYPES: tuple[str, ...] = (DEMOGRAPHICS, *(s.event_type for s in EVENT_SOURCES))
EVENT_RANK = {name: rank for rank, name in enumerate(EVENT_TYPES)}
