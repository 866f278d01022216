"""Samples follow spec/tasks.md: no leakage, labels that re-derive from the raw tables, exact targets."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

import duckdb
import pytest

from ehrr1.data.synthetic.cohort import COLUMNS
from ehrr1.data.timeline import TimelineStore
from ehrr1.tasks.index import read_index
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.registry import ContextRule
from ehrr1.tasks.samples import ED_EVENT_TYPES, Sample

SPEC_TASKS = [
    "admissions",
    "omr",
    "emar",
    "poe",
    "services",
    "transfers",
    "labevents",
    "microbiologyevents",
    "radiology",
    "prescriptions",
    "prescriptions_atc",
    "procedures_icd",
    "procedures_ccs",
    "diagnoses_icd",
    "diagnoses_ccs",
    "medrecon",
    "medrecon_atc",
    "pyxis",
    "diagnosis",
    "diagnosis_ccs",
    "chartevents",
    "ingredientevents",
    "datetimeevents",
    "procedureevents",
    "inputevents",
    "outputevents",
    "next_event",
    "ED_Hospitalization",
    "ED_Inpatient_Mortality",
    "ED_ICU_Tranfer_12hour",
    "ED_Reattendance_3day",
    "ED_Critical_Outcomes",
    "Inpatient_Mortality",
    "LengthOfStay_3day",
    "LengthOfStay_7day",
    "Readmission_30day",
    "Readmission_60day",
    "ICU_Mortality_1day",
    "ICU_Mortality_2day",
    "ICU_Mortality_3day",
    "ICU_Mortality_7day",
    "ICU_Mortality_14day",
    "ICU_Stay_7day",
    "ICU_Stay_14day",
    "ICU_Readmission",
]


@pytest.fixture(scope="module")
def timelines(timelines_root):
    return {t.subject_id: t for t in TimelineStore(timelines_root)}


@pytest.fixture(scope="module")
def samples(index_root, registry):
    rows = read_index(index_root, registry.names).to_pylist()
    by_task = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(Sample(**{**row, "target": tuple(row["target"])}))
    return by_task


@pytest.fixture(scope="module")
def raw(cohort_root):
    con = duckdb.connect()
    for table, (module, _) in COLUMNS.items():
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_csv('{cohort_root}/{module}/{table}.csv.gz')")
    return con


def test_all_45_spec_names_are_tasks(registry, samples):
    assert registry.names == SPEC_TASKS
    assert sum(not registry[n].is_risk for n in SPEC_TASKS) == 27
    for name in SPEC_TASKS:
        assert samples[name], f"no samples for {name} on the synthetic cohort"


def prediction_time(task, timeline, sample):
    if not task.is_risk:
        return timeline[sample.event].time
    if task.context is ContextRule.first_hours:
        return timeline[sample.event].time + timedelta(hours=task.context_hours)
    return timeline[sample.period_end - 1].time


def test_no_leakage_for_any_task_or_sample(registry, samples, timelines, raw):
    builder = PromptBuilder()
    hadms = defaultdict(set)
    for subject, hadm in raw.execute("SELECT subject_id, hadm_id FROM admissions").fetchall():
        hadms[subject].add(hadm)
    checked = 0
    for name in SPEC_TASKS:
        task = registry[name]
        for sample in samples[name]:
            timeline = timelines[sample.subject_id]
            fixed, window = builder.parts(timeline, sample, task)
            inputs = fixed + window
            indices = [sample.admissions_id, sample.last_discharge_id, *range(sample.period_begin, sample.period_end)]
            limit = prediction_time(task, timeline, sample)
            assert all(e.time <= limit for e in inputs), (name, sample)
            if not task.is_risk:
                assert all(i is None or i < sample.event for i in indices)  # the anchor is never input
                assert timeline[sample.event] not in inputs
            assert not any(e.event_type in task.forbidden for e in inputs), (name, sample)
            assert all(e.hadm_id is None or e.hadm_id in hadms[sample.subject_id] for e in inputs)
            if task.context is ContextRule.ed_stay:  # the admission an ED stay leads to is never shown
                ed = timeline[sample.event]
                assert not any(e.event_type == "admissions" and e.hadm_id == ed.hadm_id for e in inputs)
                assert all(e.stay_id == ed.stay_id for e in inputs if e.event_type in ED_EVENT_TYPES)
            checked += 1
    assert checked > 50_000


def index_labels(samples, timelines, task):
    return {(s.subject_id, timelines[s.subject_id][s.event].time): s.target[0] for s in samples[task]}


def sql_labels(raw, sql):
    return {(r[0], r[1]): ("yes" if r[2] else "no") for r in raw.execute(sql).fetchall()}


ED = "SELECT e.subject_id, e.intime, {} FROM edstays e JOIN patients p USING (subject_id)"
ADM = "SELECT a.subject_id, a.admittime, {} FROM admissions a JOIN patients p USING (subject_id) {}"
ICU = (
    "SELECT i.subject_id, i.intime, {} FROM icustays i JOIN patients p USING (subject_id) "
    "WHERE i.outtime > i.intime + INTERVAL 24 HOUR"
)
ICU_IN_12H = "EXISTS (SELECT 1 FROM icustays i WHERE i.hadm_id = e.hadm_id AND i.intime < e.outtime + INTERVAL 12 HOUR)"
DIED = (
    "(e.hadm_id IS NOT NULL AND p.dod IS NOT NULL "
    "AND p.dod <= (SELECT dischtime FROM admissions a WHERE a.hadm_id = e.hadm_id))"
)
RULES = {
    "ED_Hospitalization": ED.format("e.hadm_id IN (SELECT hadm_id FROM admissions)"),
    "ED_Inpatient_Mortality": ED.format(DIED),
    "ED_ICU_Tranfer_12hour": ED.format(ICU_IN_12H),
    "ED_Critical_Outcomes": ED.format(f"{ICU_IN_12H} OR {DIED}"),
    "ED_Reattendance_3day": ED.format(
        "EXISTS (SELECT 1 FROM edstays n WHERE n.subject_id = e.subject_id "
        "AND n.intime > e.intime AND n.intime < e.outtime + INTERVAL 72 HOUR)"
    ),
    "Inpatient_Mortality": ADM.format("p.dod IS NOT NULL AND p.dod <= a.dischtime", ""),
    "LengthOfStay_3day": ADM.format(
        "a.dischtime - a.admittime > INTERVAL 72 HOUR", "WHERE a.dischtime > a.admittime + INTERVAL 24 HOUR"
    ),
    "LengthOfStay_7day": ADM.format(
        "a.dischtime - a.admittime > INTERVAL 168 HOUR", "WHERE a.dischtime > a.admittime + INTERVAL 24 HOUR"
    ),
    "Readmission_30day": "SELECT d.subject_id, d.charttime, EXISTS (SELECT 1 FROM admissions n WHERE n.subject_id = "
    "d.subject_id AND n.admittime > a.dischtime AND n.admittime < a.dischtime + INTERVAL 30 DAY) "
    "FROM discharge d JOIN admissions a USING (hadm_id)",
    "Readmission_60day": "SELECT d.subject_id, d.charttime, EXISTS (SELECT 1 FROM admissions n WHERE n.subject_id = "
    "d.subject_id AND n.admittime > a.dischtime AND n.admittime < a.dischtime + INTERVAL 60 DAY) "
    "FROM discharge d JOIN admissions a USING (hadm_id)",
    **{
        f"ICU_Mortality_{d}day": ICU.format(
            f"p.dod IS NOT NULL AND p.dod < i.intime + INTERVAL 24 HOUR + INTERVAL {d} DAY"
        )
        for d in (1, 2, 3, 7, 14)
    },
    "ICU_Stay_7day": ICU.format("i.outtime - i.intime >= INTERVAL 7 DAY"),
    "ICU_Stay_14day": ICU.format("i.outtime - i.intime >= INTERVAL 14 DAY"),
    "ICU_Readmission": ICU.format(
        "EXISTS (SELECT 1 FROM icustays j WHERE j.hadm_id = i.hadm_id AND j.intime >= i.outtime)"
    ),
}


@pytest.mark.parametrize("task", sorted(RULES))
def test_risk_labels_rederive_from_the_raw_tables(task, samples, timelines, raw):
    expected = sql_labels(raw, RULES[task])
    got = index_labels(samples, timelines, task)
    assert len(got) > 100 and got == expected
    assert {"yes", "no"} <= set(got.values()) or task in ("ICU_Stay_14day", "ICU_Mortality_1day")


@pytest.mark.parametrize(
    ("task", "sql"),
    [
        (
            "labevents",
            "SELECT subject_id, charttime, list_distinct(list(d.label)) FROM labevents JOIN d_labitems d "
            "USING (itemid) WHERE valuenum IS NOT NULL GROUP BY ALL",
        ),
        ("prescriptions", "SELECT subject_id, starttime, list_distinct(list(drug)) FROM prescriptions GROUP BY ALL"),
        ("transfers", "SELECT subject_id, intime, list_distinct(list(eventtype)) FROM transfers GROUP BY ALL"),
        ("pyxis", "SELECT subject_id, charttime, list_distinct(list(name)) FROM pyxis GROUP BY ALL"),
        (
            "diagnoses_icd",
            "SELECT g.subject_id, a.dischtime, list_distinct(list(d.long_title)) FROM diagnoses_icd g "
            "JOIN admissions a USING (hadm_id) JOIN d_icd_diagnoses d USING (icd_code, icd_version) GROUP BY ALL",
        ),
    ],
)
def test_decision_targets_equal_the_anchor_records(task, sql, samples, timelines, raw):
    expected = {(r[0], r[1]): set(r[2]) for r in raw.execute(sql).fetchall()}
    got = {(s.subject_id, timelines[s.subject_id][s.event].time): set(s.target) for s in samples[task]}
    assert len(got) > 100 and got == expected
