"""Tasks are data: users add them by config; the index rebuilds only what changed and resumes."""

from __future__ import annotations

from collections import defaultdict

import pytest

from ehrr1.data.timeline import TimelineStore
from ehrr1.tasks.index import balanced_groups, build_index, index_shard_path, read_index
from ehrr1.tasks.registry import TaskError, TaskRegistry, make_task

EXTRA = {
    "decision": {"triage": {"anchor": "triage", "target": "chiefcomplaint", "metric": "accuracy"}},
    "risk": {
        "ICU_Mortality_30day": {
            "anchor": "icustays",
            "context": "first_hours",
            "context_hours": 24,
            "outcome": {"kind": "death_after_context", "hours": 720},
            "instruction": "Given the sequence of events that have occurred in a hospital, please predict whether "
            "the patient will die within 30 days.",
        }
    },
}


def test_users_add_tasks_by_config(timelines_root, tmp_path):
    registry = TaskRegistry(EXTRA)
    assert len(registry.names) == 48
    triage, icu30 = registry["triage"], registry["ICU_Mortality_30day"]
    assert triage.prompt_instruction.endswith("please give the next Triage suggestion for the patients.")
    assert icu30.prompt_instruction.endswith("predict whether the patient will die within 30 days.")
    counts = build_index(
        timelines_root, tmp_path / "index", [triage, icu30, registry["ICU_Mortality_14day"]], progress=False
    )
    assert counts["triage"] > 20 and counts["ICU_Mortality_30day"] == counts["ICU_Mortality_14day"]
    rows = read_index(tmp_path / "index", ["ICU_Mortality_30day", "ICU_Mortality_14day"]).to_pylist()
    label = {(r["task"], r["subject_id"], r["event"]): r["target"][0] for r in rows}
    for (task, subject, event), value in label.items():  # 30-day deaths include every 14-day death
        if task == "ICU_Mortality_14day" and value == "yes":
            assert label[("ICU_Mortality_30day", subject, event)] == "yes"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"anchor": "labevent", "target": "label"},
            r"anchor 'labevent' is not an event type; choose one of \*, patients",
        ),
        ({"anchor": "labevents"}, "needs a target field"),
        ({"anchor": "labevents", "target": "label", "metric": "bleu"}, r"Invalid value 'bleu', expected one of \[f1"),
        ({"anchor": "labevents", "target": "label", "forbiden": ["discharge"]}, "Key 'forbiden' not in 'TaskSpec'"),
        ({"anchor": "labevents", "target": "label", "forbidden": ["notes"]}, r"forbidden event types \['notes'\]"),
    ],
)
def test_invalid_decision_tasks_are_clear_errors(fields, message):
    with pytest.raises(TaskError, match=message):
        make_task("my_task", "decision", fields)


def test_invalid_risk_tasks_are_clear_errors():
    with pytest.raises(TaskError, match="outcome 'readmission' needs hours"):
        make_task("r", "risk", {"anchor": "discharge", "outcome": {"kind": "readmission"}, "instruction": "q"})
    with pytest.raises(TaskError, match="needs an outcome and an instruction"):
        make_task("r", "risk", {"anchor": "discharge"})
    with pytest.raises(TaskError, match="section 'prediction' is unknown"):
        TaskRegistry({"prediction": {}})


def test_index_resumes_and_rebuilds_only_changed_tasks(timelines_root, tmp_path, registry):
    out = tmp_path / "index"
    tasks = [registry["labevents"], registry["Inpatient_Mortality"]]
    first = build_index(timelines_root, out, tasks, progress=False)
    reference = read_index(out, ["labevents", "Inpatient_Mortality"])
    shards = TimelineStore(timelines_root).num_shards
    kept = {p: p.stat().st_mtime_ns for p in (out / "labevents").glob("*.parquet")}
    # a kill after one file: the rest is rebuilt, finished files are kept
    index_shard_path(out, "Inpatient_Mortality", shards - 1).unlink()
    (out / "Inpatient_Mortality" / "manifest.json").unlink()
    (out / "Inpatient_Mortality" / "index-00000.parquet.tmp").write_bytes(b"partial")
    assert build_index(timelines_root, out, tasks, progress=False) == first
    assert read_index(out, ["labevents", "Inpatient_Mortality"]).equals(reference)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert not list(out.rglob("*.tmp"))
    # a changed definition rebuilds that task only
    wider = make_task("labevents", "decision", {"anchor": "labevents", "target": "item_name", "context_hours": 48})
    build_index(timelines_root, out, [wider, registry["Inpatient_Mortality"]], progress=False)
    assert {p: p.stat().st_mtime_ns for p in kept} != kept
    rows = read_index(out, ["labevents"]).to_pylist()
    assert max(r["period_end"] - r["period_begin"] for r in rows) > max(
        r["period_end"] - r["period_begin"] for r in reference.to_pylist() if r["task"] == "labevents"
    )


def test_same_inputs_give_byte_identical_index_files(timelines_root, tmp_path, registry):
    tasks = registry.select(["poe", "diagnoses_ccs", "ED_Reattendance_3day", "next_event"])
    build_index(timelines_root, tmp_path / "a", tasks, num_workers=2, progress=False)
    build_index(timelines_root, tmp_path / "b", tasks, num_workers=1, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    assert len(files) == 4 * TimelineStore(timelines_root).num_shards
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_a_shards_tasks_are_split_in_groups_of_equal_work(registry):
    """On a shard shared by workers each takes a group of tasks; the groups' work, from the anchors' counts
    (4 per event + 1 per record read; 2 per event for next_event, which reads none), is as even as it gets."""
    sizes = {
        "labevents": {"events": 100, "records": 1200},  # 1,601
        "emar": {"events": 100, "records": 800},  # 1,201
        "poe": {"events": 100, "records": 300},  # 701
        "admissions": {"events": 50, "records": 50},  # 251
    }  # next_event: every type's 350 events, 701
    tasks = registry.select(["labevents", "emar", "poe", "admissions", "next_event"])
    groups = [[t.name for t in group] for group in balanced_groups(tasks, 2, sizes)]
    assert groups == [["labevents", "next_event"], ["emar", "poe", "admissions"]]  # 2,302 and 2,153
    assert [[t.name for t in g] for g in balanced_groups(tasks[:2], 4, sizes)] == [["labevents"], ["emar"]]


def test_no_two_tasks_share_an_instruction_but_the_references_own_pair(registry):
    """Task pairs with different answers (icd / ccs, drug / atc) must be told apart by their instruction.

    The reference itself gives ED_Inpatient_Mortality and Inpatient_Mortality one instruction (their inputs
    differ: an ED stay vs an admission's first day); kept verbatim for the released checkpoints.
    """
    by_text = defaultdict(list)
    for name in registry.names:
        by_text[registry[name].prompt_instruction].append(name)
    assert [sorted(names) for names in by_text.values() if len(names) > 1] == [
        ["ED_Inpatient_Mortality", "Inpatient_Mortality"]
    ]
