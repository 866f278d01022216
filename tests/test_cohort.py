"""The synthetic cohort: deterministic by seed, MIMIC-IV-shaped, and clinically coherent."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import pytest

from ehrr1.data.synthetic.cohort import COLUMNS, SyntheticCohortSettings, codes_used, generate_cohort
from ehrr1.data.synthetic.knowledge import ICD9_DIAGNOSES
from ehrr1.data.synthetic.simulator import PatientSimulator


def csv_view(con, root: Path, table: str) -> None:
    module = COLUMNS[table][0]
    con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_csv('{root}/{module}/{table}.csv.gz')")


@pytest.fixture(scope="module")
def db(cohort_root):
    con = duckdb.connect()
    for table in COLUMNS:
        csv_view(con, cohort_root, table)
    return con


def one(con, sql: str):
    return con.execute(sql).fetchone()


@pytest.mark.slow
def test_same_seed_gives_identical_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_cohort(a, SyntheticCohortSettings(n_patients=25, seed=3), progress=False)
    generate_cohort(b, SyntheticCohortSettings(n_patients=25, seed=3), progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.csv.gz"))
    assert len(files) == len(COLUMNS)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.slow
def test_other_seed_gives_other_patients(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_cohort(a, SyntheticCohortSettings(n_patients=25, seed=3), progress=False)
    generate_cohort(b, SyntheticCohortSettings(n_patients=25, seed=4), progress=False)
    read = lambda root: gzip.decompress((root / "hosp" / "admissions.csv.gz").read_bytes())  # noqa: E731
    assert read(a) != read(b)


def test_a_patient_does_not_depend_on_the_others():
    """Patients are simulated independently, which is what lets generation stream in constant memory."""
    titles = {10: {code: code for code in codes_used()}, 9: {code: code for code in ICD9_DIAGNOSES.values()}}
    alone = PatientSimulator(5, titles).simulate(42)
    simulator = PatientSimulator(5, titles)
    for index in range(10):
        simulator.simulate(index)
    assert simulator.simulate(42) == alone


def test_outdated_cohort_is_regenerated_and_foreign_directories_are_refused(tmp_path):
    generate_cohort(tmp_path / "c", SyntheticCohortSettings(n_patients=5, seed=0), progress=False)
    manifest = generate_cohort(tmp_path / "c", SyntheticCohortSettings(n_patients=6, seed=0), progress=False)
    assert manifest["rows"]["patients"] == 6
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a cohort")
    with pytest.raises(FileExistsError, match="holds no synthetic cohort"):
        generate_cohort(tmp_path / "mine", SyntheticCohortSettings(n_patients=5, seed=0), progress=False)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_layout_matches_mimic_iv(cohort_root):
    for table, (module, columns) in COLUMNS.items():
        with gzip.open(cohort_root / module / f"{table}.csv.gz", "rt") as handle:
            assert handle.readline().strip() == ",".join(columns)


def test_every_code_and_item_maps_to_a_dictionary_name(db):
    assert (
        one(db, "SELECT count(*) FROM diagnoses_icd g ANTI JOIN d_icd_diagnoses d USING (icd_code, icd_version)")[0]
        == 0
    )
    assert (
        one(db, "SELECT count(*) FROM procedures_icd g ANTI JOIN d_icd_procedures d USING (icd_code, icd_version)")[0]
        == 0
    )
    assert one(db, "SELECT count(*) FROM labevents l ANTI JOIN d_labitems USING (itemid)")[0] == 0
    for table in (
        "chartevents",
        "inputevents",
        "outputevents",
        "procedureevents",
        "datetimeevents",
        "ingredientevents",
    ):
        assert one(db, f"SELECT count(*) FROM {table} ANTI JOIN d_items USING (itemid)")[0] == 0, table
    assert one(db, "SELECT count(*) FROM d_icd_diagnoses")[0] > 90_000  # the full ICD-10-CM from CMS tables


def test_deaths_cluster_in_the_sickest_conditions(db):
    rate = (
        "SELECT avg(a.hospital_expire_flag) FROM admissions a JOIN diagnoses_icd d USING (hadm_id) "
        "WHERE d.seq_num = 1 AND d.icd_code IN ({})"
    )
    sepsis = one(db, rate.format("'A419'"))[0]
    mild = one(db, rate.format("'R079', 'M545', 'N390', 'M1611'"))[0]
    assert sepsis > 0.06 and mild < 0.05 and sepsis > 4 * mild  # MIMIC-IV: ~2 % of all admissions die
    icu_death, ward_death = db.execute(
        "SELECT avg(hospital_expire_flag) FILTER (WHERE hadm_id IN (SELECT hadm_id FROM icustays)), "
        "avg(hospital_expire_flag) FILTER (WHERE hadm_id NOT IN (SELECT hadm_id FROM icustays)) FROM admissions"
    ).fetchone()
    assert icu_death > 2 * ward_death


def test_conditions_leave_their_marks_in_labs_and_care(db):
    creatinine = (
        "SELECT median(l.valuenum) FROM labevents l JOIN diagnoses_icd d USING (hadm_id) "
        "WHERE l.itemid = 50912 AND d.seq_num = 1 AND d.icd_code {}"
    )
    assert one(db, creatinine.format("= 'N179'"))[0] > 1.5 * one(db, creatinine.format("IN ('R079', 'J441')"))[0]
    lactate_dead, lactate_alive = db.execute(
        "SELECT median(l.valuenum) FILTER (WHERE a.hospital_expire_flag = 1), "
        "median(l.valuenum) FILTER (WHERE a.hospital_expire_flag = 0) "
        "FROM labevents l JOIN admissions a USING (hadm_id) WHERE l.itemid = 50813"
    ).fetchone()
    assert lactate_dead > lactate_alive
    icu = (
        "SELECT avg((hadm_id IN (SELECT hadm_id FROM icustays))::INT) FROM diagnoses_icd "
        "WHERE seq_num = 1 AND icd_code {}"
    )
    # 300 patients hold about 20 sepsis admissions; on 20,000 patients sepsis goes to the ICU 9x as often
    assert one(db, icu.format("= 'A419'"))[0] > 2.5 * one(db, icu.format("IN ('R079', 'N390')"))[0]
    los = (
        "SELECT avg(date_diff('hour', admittime, dischtime)) FROM admissions "
        "WHERE hadm_id {} (SELECT hadm_id FROM icustays)"
    )
    assert one(db, los.format("IN"))[0] > one(db, los.format("NOT IN"))[0]


def test_timestamps_are_consistent(db):
    assert one(db, "SELECT count(*) FROM admissions WHERE dischtime <= admittime")[0] == 0
    assert one(db, "SELECT count(*) FROM admissions WHERE hospital_expire_flag = 1 AND deathtime <> dischtime")[0] == 0
    # an ED stay that led to an admission ends when the admission starts
    assert (
        one(
            db,
            "SELECT count(*) FROM edstays e JOIN admissions a USING (hadm_id) "
            "WHERE NOT (e.intime < e.outtime AND e.outtime = a.admittime)",
        )[0]
        == 0
    )
    assert one(db, "SELECT count(*) FROM edstays WHERE hadm_id IS NULL")[0] > 0  # ED visits sent home exist
    assert (
        one(
            db,
            "SELECT count(*) FROM icustays i JOIN admissions a USING (hadm_id) "
            "WHERE i.intime < a.admittime OR i.outtime > a.dischtime",
        )[0]
        == 0
    )
    # nothing is recorded after death
    for table, column in (
        ("labevents", "charttime"),
        ("chartevents", "charttime"),
        ("emar", "charttime"),
        ("admissions", "admittime"),
        ("edstays", "intime"),
        ("omr", "chartdate"),
    ):
        late = one(
            db,
            f"SELECT count(*) FROM {table} t JOIN patients p USING (subject_id) "
            f"WHERE p.dod IS NOT NULL AND CAST(t.{column} AS DATE) > p.dod",
        )[0]
        assert late == 0, table
    assert (
        one(
            db,
            "SELECT count(*) FROM admissions a JOIN patients p USING (subject_id) "
            "WHERE a.hospital_expire_flag = 1 AND CAST(a.deathtime AS DATE) <> p.dod",
        )[0]
        == 0
    )


def test_outcomes_have_both_labels(db):
    """Each risk outcome occurs, but not always: there is something to predict."""
    readmit = one(
        db,
        "SELECT avg((date_diff('day', dischtime, nxt) < 30)::INT) FROM (SELECT *, "
        "lead(admittime) OVER (PARTITION BY subject_id ORDER BY admittime) nxt FROM admissions) "
        "WHERE hospital_expire_flag = 0 AND nxt IS NOT NULL",
    )[0]
    icu_long = one(db, "SELECT avg((los >= 7)::INT) FROM icustays")[0]
    hospitalised = one(db, "SELECT avg((hadm_id IS NOT NULL)::INT) FROM edstays")[0]
    mortality = one(db, "SELECT avg(hospital_expire_flag) FROM admissions")[0]
    for rate in (readmit, icu_long, hospitalised, mortality):
        assert 0.02 < rate < 0.98


def reference_selection(index_root: Path, registry, task: str):
    """Every sample of ``task`` the reference's context filter keeps (10 < events < 100, ...), none drawn away."""
    from ehrr1.config import SelectionSettings
    from ehrr1.tasks.index import iter_index
    from ehrr1.tasks.select import select

    return select(lambda name: iter_index(index_root, name), {task: -1}, registry, SelectionSettings(balance=False))


def test_every_task_yields_samples_under_the_references_rules(index_root, registry):
    """At least 100 selected samples per 2,000 patients for each of the 46 tasks (15 of this cohort's 300), as
    MIMIC-IV yields them: the ED stay, the last day of an admission and a short stay hold enough events to pass
    the reference's 10-event minimum."""
    short = {task: n for task in registry.tasks if (n := reference_selection(index_root, registry, task).num_rows) < 15}
    assert not short, f"tasks below 100 selected samples per 2,000 patients: {short}"


def test_risk_prevalences_lie_near_mimic_ivs(index_root):
    """Over the indexed samples (the population published figures count), within wide bands around MIMIC-IV's
    (experiments/benchmarks/cohort_anchors.yaml; a 300-patient cohort is noisy): ED visits end in admission
    about half the time, 1-4 % of admissions in death, half of them last over 3 days."""
    import pyarrow.compute as pc

    from ehrr1.tasks.index import read_index

    def prevalence(task: str) -> float:
        targets = pc.list_element(read_index(index_root, [task]).column("target"), 0)
        return pc.mean(pc.equal(targets, "yes").cast("int8")).as_py()

    bands = {
        "ED_Hospitalization": (0.35, 0.7),
        "Inpatient_Mortality": (0.005, 0.06),
        "LengthOfStay_3day": (0.3, 0.7),
        "ED_Reattendance_3day": (0.01, 0.1),
        "Readmission_30day": (0.08, 0.3),
    }
    found = {task: round(prevalence(task), 3) for task in bands}
    assert all(low <= found[task] <= high for task, (low, high) in bands.items()), found


@pytest.mark.slow
def test_the_realism_benchmark_judges_every_task_and_table(tmp_path):
    """The documented benchmark (docs/synthetic-cohort.md) on a small cohort: a verdict per task, table and
    risk figure, the markdown table written."""
    import json
    import subprocess
    import sys
    from collections import Counter

    from ehrr1.tasks.registry import TaskRegistry

    script = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "cohort_realism.py"
    done = subprocess.run(
        [sys.executable, str(script), "--patients", "200", "--root", str(tmp_path), "--test-per-task", "30",
         "--bootstrap", "50"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    registry = TaskRegistry()
    assert set(result["tasks"]) == set(registry.tasks)
    risk = [name for name, row in result["tasks"].items() if row["kind"] == "risk"]
    assert len(risk) == 18
    export = next((tmp_path / "instructions" / "synthetic_n200_seed0" / "realism_risk").iterdir())
    exported = Counter(json.loads(line)["task"] for f in export.glob("*.jsonl") for line in f.open())
    for name in risk:
        row = result["tasks"][name]
        assert 0 <= row["prevalence"] <= 1 and row["prevalence_range"][0] < row["prevalence_range"][1]
        assert isinstance(row["prevalence_pass"], bool) and row["auroc_range"][0] < row["auroc_range"][1]
        if row["auroc"] is not None:  # cross-fitted: every exported sample of the task is scored once
            assert row["auroc_test"] == exported[name]
            assert (row["auroc_pass"] is None) == (row["auroc_minority"] < 20)
    assert any(row.get("auroc_pass") is None and row.get("auroc") is not None for row in result["tasks"].values())
    assert result["tables"]["labevents"]["ratio"] > 0 and result["tables"]["pharmacy"]["ours"] is None
    assert 0 < result["passed"] <= result["judged"]
    table = (tmp_path / "cohort_realism.md").read_text()
    assert all(f"| {name} |" in table for name in registry.tasks)
