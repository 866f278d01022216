"""The tabular baseline: features, risk and decision models on hand-built samples, the report's columns."""

from __future__ import annotations

import json

import pytest

from ehrr1.config import TabularSettings
from ehrr1.evaluation.report import aggregate, markdown
from ehrr1.evaluation.tabular import TabularBaseline, concept_counts
from tests.support import REPO, SMALL_DATA, run_entry_point


def ehr(*labs: str, drugs: tuple[str, ...] = ()) -> str:
    rows = "".join(f"| {lab} | 1.0 | mg/dL |\n" for lab in labs)
    text = (
        "## Patient Demographics [None]\n- Gender: F\n- Anchor_Age: 60\n\n"
        "## Labotary Test Events [2150-01-01 08:00:00]\n| Item_Name | Valuenum | Valueuom |\n"
        "| ------ | ------ | ------ |\n" + rows
    )
    for drug in drugs:
        text += f"\n## Prescriptions [2150-01-01 09:00:00]\n- Drug: {drug}\n- Dose_Val_Rx: 1\n"
    return text


def record(i: int, task: str, kind: str, metric: str, markdown_text: str, target: list[str]) -> dict:
    return {
        "id": f"{task}/{i}",
        "task": task,
        "kind": kind,
        "metric": metric,
        "target": target,
        "messages": [{"role": "user", "content": markdown_text + "\nthe instruction"}],
    }


def risk(i: int, yes: bool, separable: bool = True) -> dict:
    lab = "Lactate" if (yes and separable) else "Sodium"
    return record(i, "Inpatient_Mortality", "risk", "auroc", ehr(lab, "Creatinine"), ["yes" if yes else "no"])


def test_concept_counts_read_the_markdown():
    counts = concept_counts(ehr("Lactate", "Lactate", "Sodium", drugs=("Heparin",)))
    assert counts["labevents:lactate"] == pytest.approx(0.6931 * 1.585, rel=1e-3)  # log(1 + 2)
    assert counts["labevents:sodium"] == pytest.approx(0.6931, rel=1e-3)  # log(1 + 1)
    assert counts["prescriptions:heparin"] > 0 and counts["section:labevents"] > 0


def test_separable_risk_scores_auroc_one_and_an_uninformative_one_half():
    train = [risk(i, i % 2 == 0) for i in range(40)]
    test = [risk(100 + i, i % 2 == 0) for i in range(20)]
    rows = TabularBaseline().fit(train).predict(test)
    report = aggregate(rows)
    assert report["tasks"][0]["value"] == 1.0
    assert {r["answer"] for r in rows} == {"yes", "no"} and all(0 <= r["p_yes"] <= 1 for r in rows)

    constant_train = [risk(i, i % 2 == 0, separable=False) for i in range(40)]  # the same input for both labels
    constant_test = [risk(100 + i, i % 2 == 0, separable=False) for i in range(20)]
    rows = TabularBaseline().fit(constant_train).predict(constant_test)
    assert aggregate(rows)["tasks"][0]["value"] == 0.5


def test_decision_tasks_predict_the_k_most_likely_answers():
    def sample(i: int, heparin: bool) -> dict:
        labs = ("Platelets", "PTT") if heparin else ("Glucose", "Potassium")
        target = ["Heparin"] if heparin else ["Insulin"]
        return record(i, "prescriptions", "decision", "f1", ehr(*labs), target)

    train = [sample(i, i % 3 == 0) for i in range(30)]
    test = [sample(100 + i, i % 2 == 0) for i in range(10)]
    model = TabularBaseline().fit(train)
    rows = model.predict(test)
    assert model.models["prescriptions"].k == 1 and model.models["prescriptions"].labels == ["Insulin", "Heparin"]
    assert [r["answer"] for r in rows] == ["Heparin" if i % 2 == 0 else "Insulin" for i in range(10)]
    assert aggregate(rows)["tasks"][0]["value"] == 1.0
    few = TabularBaseline(TabularSettings(max_labels=1)).fit(train)
    assert few.models["prescriptions"].labels == ["Insulin"]  # the most frequent only
    capped = TabularBaseline(TabularSettings(max_train_per_task=3)).fit(train)
    assert capped.models["prescriptions"].vectorizer.feature_names_ is not None


def test_free_text_tasks_get_the_nearest_training_samples_answer():
    def note(i: int, lab: str) -> dict:
        return record(i, "discharge", "decision", "rouge1", ehr(lab, "Creatinine"), [f"discharged after {lab} care"])

    train = [note(i, ("Lactate", "Troponin")[i % 2]) for i in range(10)]
    rows = TabularBaseline().fit(train).predict([note(100, "Troponin"), note(101, "Lactate")])
    assert [r["answer"] for r in rows] == ["discharged after Troponin care", "discharged after Lactate care"]
    assert [r["score"] for r in rows] == [1.0, 1.0]  # rouge1 against the same text


def test_the_report_puts_the_tabular_baseline_beside_the_model():
    test = [risk(100 + i, i % 2 == 0) for i in range(20)]
    tabular = TabularBaseline().fit([risk(i, i % 2 == 0) for i in range(40)]).predict(test)
    model_rows = [{**r, "p_yes": 0.5, "key": "m" + r["key"]} for r in tabular]  # a model that knows nothing
    report = aggregate(model_rows, {"Inpatient_Mortality": "no"}, n_boot=200, tabular=tabular)
    task = report["tasks"][0]
    assert (task["value"], task["baseline"], task["tabular"]) == (0.5, 0.5, 1.0)
    assert task["tabular_ci_low"] == 1.0 and report["macro"]["risk"]["tabular"] == 1.0
    macro = report["macro"]["risk"]
    assert macro["ci_low"] == macro["ci_high"] == 0.5  # every resample of a constant scores 0.5
    text = markdown(report)
    assert "| most frequent | tabular | tabular 95 % CI |" in text
    assert "macro risk: 0.500 (95 % CI 0.500–0.500) over 1 tasks; baselines: most frequent 0.500, tabular 1.000" in text


@pytest.mark.slow
def test_evaluate_with_the_tabular_backend(tmp_path, small_data_root):
    out = tmp_path / "tabular"
    result = run_entry_point(
        "evaluate.py", f"data_root={small_data_root}", *SMALL_DATA, "backend=tabular", f"output_dir={out}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["backend"] == "tabular" and report["tasks"]
    assert all(t["value"] is not None for t in report["tasks"] if t["kind"] == "decision")
    rows = [json.loads(line) for line in (out / "tabular.jsonl").read_text().splitlines()]
    assert len(rows) == report["samples"] and (out / "report.md").exists()
    assert "macro risk" in result.stdout


@pytest.mark.slow
def test_the_tabular_backend_without_training_data_is_one_message(tmp_path):
    fixture = REPO / "tests" / "fixtures" / "released_bench.jsonl"
    result = run_entry_point(
        "evaluate.py",
        "backend=tabular",
        "bench=released",
        f"bench.path={fixture}",
        f"output_dir={tmp_path / 'o'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "backend=tabular: no training records" in result.stderr
    assert "Traceback" not in result.stderr
