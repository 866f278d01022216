"""The released files as they are published: the PhysioNet release folder (index rows over patient
trajectories) and the Hub's identifier-free EHR-Bench items.

The fixture ``tests/fixtures/release`` is what the reference's own code wrote (the reforacle tool on the
synthetic cohort, ``experiments/reference/compare_bundle.py --cut``): three patients' trajectories, the
dictionaries' rows they name, the 1,109 index rows of all their samples, and per row the SHA-256 of the
user turn the reference's ``MIMICIV.process_cases`` made of it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest

from ehrr1.errors import UserError
from ehrr1.evaluation.released import read_released
from tests.support import REPO, run_entry_point

RELEASE = REPO / "tests" / "fixtures" / "release"
INDEX = RELEASE / "ehr_bench" / "ehr_bench_oracle.csv"
PAIR = ("ED_Inpatient_Mortality", "Inpatient_Mortality")  # the tasks that share one instruction


def expected() -> list[dict]:
    return [json.loads(line) for line in (RELEASE / "expected.jsonl").read_text(encoding="utf-8").splitlines()]


def row_of(record: dict) -> int:
    return int(record["source"].rsplit(" ", 1)[1])


def user_turn(record: dict) -> str:
    return next(m["content"] for m in record["messages"] if m["role"] == "user")


def copy_release(tmp_path: Path) -> Path:
    return Path(shutil.copytree(RELEASE, tmp_path / "release"))


def test_a_release_renders_its_index_byte_for_byte_as_the_reference(registry):
    records = read_released(RELEASE, registry)
    wanted = expected()
    assert len(records) == len(wanted) == 1109
    equal, own_anchor = Counter(), Counter()
    for record in records:
        row = wanted[row_of(record) - 1]
        assert record["task"] == row["task"]
        same = hashlib.sha256(user_turn(record).encode()).hexdigest() == row["sha256"]
        (own_anchor if row["own_anchor"] else equal)[same] += 1
    # every input equal but a next_event sample's at an admission: the reference shows it its own answer
    assert equal == Counter({True: 1105}) and own_anchor == Counter({False: 4})
    tasks = {r["task"] for r in records}
    assert len(tasks) == 45 and {"ED_Inpatient_Mortality", "Inpatient_Mortality"} <= tasks
    risk = [r for r in records if r["kind"] == "risk"]
    assert risk and all(r["candidates"] == ["yes", "no"] and r["target"] in (["yes"], ["no"]) for r in risk)
    with INDEX.open(encoding="utf-8", newline="") as handle:
        index = list(csv.DictReader(handle))
    for record in records[:50]:  # targets from the index rows
        target = json.loads(index[row_of(record) - 1]["target"])
        assert record["target"] == (target if isinstance(target, list) else [target])


def test_one_index_file_tasks_and_limit_read_the_same_rows(registry):
    whole = {r["id"]: r for r in read_released(RELEASE, registry)}
    one_file = read_released(INDEX, registry)
    assert {r["id"]: r["messages"] for r in one_file} == {k: r["messages"] for k, r in whole.items()}
    some = read_released(RELEASE, registry, ["labevents", "ED_Inpatient_Mortality"], limit=3)
    assert Counter(r["task"] for r in some) == {"labevents": 3, "ED_Inpatient_Mortality": 3}
    first_rows = sorted(row_of(r) for r in one_file if r["task"] == "labevents")[:3]
    assert sorted(row_of(r) for r in some if r["task"] == "labevents") == first_rows  # the file's first


def test_candidates_come_from_the_similar_item_files(registry, tmp_path):
    release = copy_release(tmp_path)
    (release / "cache" / "similar_item").mkdir(parents=True)
    labs = read_released(release, registry, ["labevents"], limit=2)
    assert all(r["candidates"] is None for r in labs)  # no file: the evaluation draws its own
    names = sorted({v for r in labs for v in r["target"]} | {f"Other {i}" for i in range(3)})
    with (release / "cache" / "similar_item" / "labevents.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "similar_1", "similar_2"])
        writer.writerows([name, "Other 0", ""] for name in names)
    again = read_released(release, registry, ["labevents"], limit=2)
    assert all(sorted(r["candidates"]) == names for r in again)  # a short list: all of it
    assert again[0]["candidates"] == read_released(release, registry, ["labevents"], limit=2)[0]["candidates"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: shutil.rmtree(r / "patients_ehr"), r"release/patients_ehr not found \(the release's patient"),
        (lambda r: (shutil.rmtree(r / "patients_ehr"), (r / "patients_ehr.tar.gz").write_bytes(b"")),
         r"patients_ehr.tar.gz is still packed: extract it first \(tar -xzf .*patients_ehr.tar.gz -C .*release\)"),
        (lambda r: shutil.rmtree(r / "index_mapping"), r"release/index_mapping not found"),
        (lambda r: (r / "index_mapping" / "hosp" / "d_labitems.csv").unlink(),
         r"index_mapping/hosp/d_labitems.csv not found: the release's index_mapping/hosp/ needs d_labitems.csv"),
        (lambda r: (r / "index_mapping" / "icu" / "d_items.csv").write_text("itemid,name\n1,x\n"),
         r"index_mapping/icu/d_items.csv: missing column\(s\) label \(the release's d_items.csv has itemid, label\)"),
        (lambda r: (r / "patients_ehr" / "10000001.parquet").unlink(),
         r"oracle.csv, row \d+: .*patients_ehr/10000001.parquet not found: the trajectory of subject 10000001"),
        (lambda r: shutil.rmtree(r / "ehr_bench"), r"bench.path: .*release/ehr_bench not found or holds no .csv"),
        (lambda r: _edit_index(r, "period_end", "99999"),
         r"ehr_bench_oracle.csv, row 1: window period_begin=\d+, period_end=99999 outside the \d+ events"),
        (lambda r: _edit_index(r, "target", '"maybe"'), r"ehr_bench_oracle.csv, row 1: risk task \w+ needs the label"),
        (lambda r: _edit_index(r, "task", "labevent"), r"ehr_bench_oracle.csv, row 1: task: unknown task 'labevent'"),
        (lambda r: _drop_column(r, "period_begin"), r"ehr_bench_oracle.csv is an index file|missing column\(s\)"),
        (lambda r: _drop_column(r, "target"), r"ehr_bench_oracle.csv: missing column\(s\) target"),
    ],
)  # fmt: skip
def test_a_release_missing_a_part_is_named(registry, tmp_path, change, message):
    release = copy_release(tmp_path)
    change(release)
    with pytest.raises(UserError, match=message):
        read_released(release, registry)


def _rows(release: Path) -> list[dict]:
    with (release / "ehr_bench" / "ehr_bench_oracle.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(release: Path, rows: list[dict]) -> None:
    with (release / "ehr_bench" / "ehr_bench_oracle.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _edit_index(release: Path, column: str, value: str) -> None:
    rows = _rows(release)
    first = next(i for i, r in enumerate(rows) if r["task"] == "Inpatient_Mortality") if column == "target" else 0
    rows[0], rows[first] = rows[first], rows[0]
    rows[0][column] = value
    _write_rows(release, rows)


def _drop_column(release: Path, column: str) -> None:
    _write_rows(release, [{k: v for k, v in r.items() if k != column} for r in _rows(release)])


def hub_items(records: list[dict], keep_event: bool = False) -> list[dict]:
    """The Hub's form of these records: ``idx``, instruction, input, output, candidates and a task_info
    without the task, subject_id, hadm_id or any other identifier (as the EHR-Bench card says)."""
    from ehrr1.tasks.registry import TaskRegistry

    registry = TaskRegistry()
    out = []
    for idx, record in enumerate(records):
        task = registry[record["task"]]
        user = user_turn(record)
        ehr, instruction = user.rsplit("\n", 1)
        kind = "risk_prediction" if task.is_risk else "decision_making"
        info = {"target_key": task.target, "metric": record["metric"], "target": record["target"],
                "label": record["target"], "task_type": kind}  # fmt: skip
        if keep_event:
            info["event"] = task.anchor
        out.append({"idx": idx, "instruction": instruction, "input": ehr, "output": "\n".join(record["target"]),
                    "candidates": record["candidates"], "task_info": info})  # fmt: skip
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_hub_items_without_task_or_identifiers_find_their_task(registry, tmp_path):
    records = read_released(RELEASE, registry)
    for keep_event in (False, True):
        hub = read_released(write_jsonl(tmp_path / f"hub{keep_event}.jsonl", hub_items(records, keep_event)), registry)
        assert [r["task"] for r in hub] == [r["task"] for r in records]  # the shared instruction told apart
        assert [user_turn(r) for r in hub] == [user_turn(r) for r in records]
        assert all(r["subject_id"] is None and r["id"] == f"{r['task']}/item/{i}" for i, r in enumerate(hub))
    pair = Counter(r["task"] for r in records if r["task"] in PAIR)
    assert len(pair) == 2


@pytest.mark.slow
def test_a_release_and_its_hub_items_evaluate_to_the_same_report(model_dir, tmp_path, registry):
    from ehrr1.evaluation.evaluate import evaluate
    from tests.support import compose_config

    records = read_released(RELEASE, registry)
    hub = write_jsonl(tmp_path / "hub.jsonl", hub_items(records))
    reports = {}
    for name, path in (("release", RELEASE), ("hub", hub)):
        cfg = compose_config(
            "evaluate", "bench=released", f"bench.path={path}", f"model.path={model_dir}",
            f"output_dir={tmp_path / name}", f"data_root={tmp_path / 'nothing'}", "sampling.max_tokens=4",
            "bootstrap=20", "limit=2", f"only_tasks=[{','.join(PAIR)},labevents,diagnoses_icd]",
        )  # fmt: skip
        reports[name] = evaluate(cfg)
    assert reports["release"]["tasks"] == reports["hub"]["tasks"] and len(reports["hub"]["tasks"]) == 4
    assert reports["hub"]["samples"] == 8 and not (tmp_path / "nothing").exists()


@pytest.mark.slow
def test_identifier_free_items_are_split_by_item_with_a_warning(registry, tmp_path, caplog):
    from ehrr1.artefacts.instructions import build_instructions
    from tests.support import compose_config

    records = read_released(RELEASE, registry, ["labevents", "Inpatient_Mortality"], limit=20)
    hub = write_jsonl(tmp_path / "ins.jsonl", hub_items(records))
    cfg = compose_config("synthesize", f"data_root={tmp_path / 'data'}", f"task_mix.released={hub}", "progress=false")
    with caplog.at_level(logging.WARNING):
        result = build_instructions(cfg)
    warned = [r.getMessage() for r in caplog.records if "carry no subject_id" in r.getMessage()]
    assert len(warned) == 1 and f"{len(records)} of {len(records)} items" in warned[0]
    assert "one patient's items can be in training and in test" in warned[0]
    totals = result["instructions"]["totals"]
    assert sum(totals.values()) <= len(records) and len([s for s in totals.values() if s]) >= 2
    # the same items with their subject ids: split by patient, no warning
    caplog.clear()
    cfg = compose_config("synthesize", f"data_root={tmp_path / 'data2'}", f"task_mix.released={INDEX}",
                         "+task_mix.tasks={labevents: 0}", "progress=false")  # fmt: skip
    with caplog.at_level(logging.WARNING):
        build_instructions(cfg)
    assert not [r for r in caplog.records if "carry no subject_id" in r.getMessage()]
    out = Path(cfg.export.dir)
    splits = {s: {json.loads(line)["subject_id"] for line in (out / f"{s}.jsonl").read_text().splitlines()}
              for s in cfg.task_mix.splits}  # fmt: skip
    seen = [subject for subjects in splits.values() for subject in subjects]
    assert len(seen) == len(set(seen))  # a patient in one split only


def test_evaluate_names_a_packed_release_in_one_line(model_dir, tmp_path):
    release = copy_release(tmp_path)
    shutil.rmtree(release / "patients_ehr")
    (release / "patients_ehr.tar.gz").write_bytes(b"")
    done = run_entry_point("evaluate.py", "bench=released", f"bench.path={release}", f"model.path={model_dir}",
                           f"output_dir={tmp_path / 'out'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: bench.path: {release}/patients_ehr.tar.gz is still packed: extract it first"), last


def test_a_release_identity_is_small_and_sees_a_changed_trajectory(tmp_path):
    from ehrr1.artefacts.instructions import path_fingerprint

    release = copy_release(tmp_path)
    before = path_fingerprint(str(release))
    assert before is not None and before[-1][1:3] == [3, sum(p.stat().st_size for p in RELEASE.glob("patients_ehr/*"))]
    assert not [entry for entry in before[:-1] if "/patients_ehr/" in entry[0]]  # one entry for all trajectories
    assert path_fingerprint(str(release / "ehr_bench" / "ehr_bench_oracle.csv"))[-1] == before[-1]  # type: ignore[index]
    shutil.copyfile(release / "patients_ehr" / "10000000.parquet", release / "patients_ehr" / "10000099.parquet")
    assert path_fingerprint(str(release)) != before
