"""The released EHR-Bench files as a benchmark: mapping, errors, and an evaluation with no other data."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ehrr1.evaluation.released import ReleasedBenchError, read_released
from ehrr1.tasks.metrics import score
from tests.support import REPO, SMALL_DATA, run_entry_point

FIXTURE = REPO / "tests" / "fixtures" / "released_bench.jsonl"


def items() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_items_become_records_prompted_as_the_reference(registry):
    records = read_released(FIXTURE, registry)
    assert len(records) == 10
    first, source = records[0], items()[0]
    assert first["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert first["messages"][1]["content"] == source["input"] + "\n" + source["instruction"]
    assert (first["task"], first["kind"], first["metric"], first["target"]) == (
        "Inpatient_Mortality", "risk", "auroc", ["yes"]
    )  # fmt: skip
    assert first["id"] == "Inpatient_Mortality/10000001/4"
    labs = records[5]
    assert (
        labs["target"] == ["Creatinine", "Potassium", "Sodium"] and labs["metric"] == registry["labevents"].metric.value
    )
    assert records[7]["candidates"] == ["Heparin", "Vancomycin", "Aspirin"]
    assert records[9]["task"] == "diagnoses_ccs"  # no task_info.task: named by its instruction


def test_parquet_folders_and_saved_datasets_read_the_same(registry, tmp_path):
    import datasets

    expected = read_released(FIXTURE, registry)
    rows = items()
    for row in rows:
        row["task_info"] = json.dumps(row["task_info"])  # parquet exports often keep it as JSON text
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bench.parquet")
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "part-0.jsonl", items()[:4])
    write(folder / "part-1.jsonl", items()[4:])
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for path in (tmp_path / "bench.parquet", folder, tmp_path / "saved"):
        got = read_released(path, registry)
        assert [(r["task"], r["target"], r["messages"]) for r in got] == [
            (r["task"], r["target"], r["messages"]) for r in expected
        ], path


def test_tasks_and_limit_choose_items(registry):
    records = read_released(FIXTURE, registry, tasks=["Inpatient_Mortality", "labevents"], limit=2)
    assert [r["task"] for r in records] == ["Inpatient_Mortality", "Inpatient_Mortality", "labevents", "labevents"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["task_info"].update(task="labevent"), r"line 1: task_info.task: unknown task 'labevent'\. Did"),
        (lambda r: r.pop("input"), r"line 1: missing field\(s\) input"),
        (lambda r: r["task_info"].update(label="maybe"), r"line 1: risk task Inpatient_Mortality needs the label yes"),
        (lambda r: r["task_info"].update(label=[1, 2]), r"line 1: task_info.label \(or output\) must be a text"),
        (lambda r: r.update(task_info=[1]), r"line 1: task_info must be an object"),
    ],
)  # fmt: skip
def test_a_bad_item_is_named_with_its_line(registry, tmp_path, change, message):
    rows = items()[:1]
    change(rows[0])
    with pytest.raises(ReleasedBenchError, match=message):
        read_released(write(tmp_path / "bad.jsonl", rows), registry)


def test_unreadable_inputs_are_named(registry, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(FIXTURE.read_text().splitlines()[0] + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ReleasedBenchError, match=r"broken.jsonl, line 2: not a JSON object"):
        read_released(broken, registry)
    (tmp_path / "bench.parquet").write_text("not parquet", encoding="utf-8")
    with pytest.raises(ReleasedBenchError, match="bench.parquet: not a readable Parquet file"):
        read_released(tmp_path / "bench.parquet", registry)
    with pytest.raises(ReleasedBenchError, match="does not exist"):
        read_released(tmp_path / "missing.jsonl", registry)
    with pytest.raises(ReleasedBenchError, match="is not a .jsonl, .json, .parquet or .csv file"):
        read_released(write(tmp_path / "bench.txt", []), registry)
    shared = items()[0]
    del shared["task_info"]["task"]  # the reference's one shared instruction: which task is it?
    shared["input"] = shared["input"].split("\n\n")[0]  # demographics only: no event tells
    with pytest.raises(ReleasedBenchError, match="shared by ED_Inpatient_Mortality, Inpatient_Mortality"):
        read_released(write(tmp_path / "shared.jsonl", [shared]), registry)


@pytest.mark.slow
def test_evaluate_scores_the_released_files_with_no_other_data(model_dir, tmp_path):
    out = tmp_path / "eval"
    done = run_entry_point(
        "evaluate.py",
        "bench=released",
        f"bench.path={FIXTURE}",
        f"model.path={model_dir}",
        f"output_dir={out}",
        f"data_root={tmp_path / 'nothing'}",
        "sampling.max_tokens=8",
        "bootstrap=50",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "nothing").exists()  # no cohort, timelines or index were built
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10
    by_task = defaultdict(list)
    for row in rows:
        assert row["score"] == score(row["metric"], row["output"], row["target"])  # re-scored by hand
        by_task[row["task"]].append(row)
    report = json.loads((out / "report.json").read_text())
    assert {t["task"]: t["n"] for t in report["tasks"]} == {t: len(r) for t, r in by_task.items()}
    for task in report["tasks"]:
        if task["kind"] == "decision":
            assert task["value"] == pytest.approx(sum(r["score"] for r in by_task[task["task"]]) / task["n"])
    assert report["run"]["bench"] == "released" and report["run"]["data"] == str(FIXTURE)
    from transformers import AutoConfig

    positions = AutoConfig.from_pretrained(model_dir).max_position_embeddings
    assert report["run"]["max_prompt_tokens"] == min(positions, 16_000) - 8  # the reference's budget
    assert all(r["prompt_tokens_cut"] == 0 for r in rows)  # the fixture's items are short


@pytest.mark.slow
def test_a_missing_released_path_ends_evaluate_with_one_message(model_dir, tmp_path):
    for extra, message in (
        ([], "error: bench.path is not set: bench.path=<the released EHR-Bench / EHR-Ins file or folder>"),
        ([f"bench.path={tmp_path / 'none.jsonl'}"], f"error: bench.path: {tmp_path / 'none.jsonl'} does not exist"),
    ):
        done = run_entry_point("evaluate.py", "bench=released", *extra, f"model.path={model_dir}", cwd=tmp_path)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(message)


def test_a_released_path_error_names_its_own_setting(registry, tmp_path):
    from ehrr1.errors import UserError
    from ehrr1.evaluation.released import read_released

    for key in ("synthesis.released", "task_mix.released", "bench.path"):
        with pytest.raises(UserError, match=f"^{key}: .*none.jsonl does not exist"):
            read_released(tmp_path / "none.jsonl", registry, key=key)


def test_the_candidates_prompt_is_the_references(registry):
    from ehrr1.evaluation.candidates import (
        CANDIDATE_PROMPT,
        DECISION_MAKING_PROMPT,
        RISK_PREDICTION_PROMPT,
        candidate_pools,
        candidates_for,
        with_candidates,
    )

    records = read_released(FIXTURE, registry)
    train = [{"task": "labevents", "target": t} for t in (["Sodium", "Lactate"], ["Sodium"], ["Urea"])]
    pools = candidate_pools(train)
    assert pools["labevents"] == ["Sodium", "Lactate", "Urea"]  # most frequent first
    labs = records[5]  # target Creatinine, Potassium, Sodium
    chosen = candidates_for(labs, pools, seed=0)
    assert sorted(chosen) == ["Creatinine", "Lactate", "Potassium", "Sodium", "Urea"]
    assert chosen == candidates_for(labs, pools, seed=0)  # seeded
    assert candidates_for(records[7], pools) == ["Heparin", "Vancomycin", "Aspirin"]  # the item's own list
    assert candidates_for(records[0], pools) == ["yes", "no"] and candidates_for(records[8], {}) is None
    prompted = with_candidates(labs, chosen)
    item = items()[5]
    assert prompted["messages"][1]["content"] == "\n".join(
        [item["input"], item["instruction"], CANDIDATE_PROMPT.format(candidates=chosen), DECISION_MAKING_PROMPT]
    )
    risk = with_candidates(records[0], ["yes", "no"])["messages"][1]["content"]
    assert risk.endswith("Candidate List: ['yes', 'no'].\n" + RISK_PREDICTION_PROMPT)
    assert "Candidate List" not in with_candidates(records[8], None)["messages"][1]["content"]
    assert labs["messages"][1]["content"] == item["input"] + "\n" + item["instruction"]  # the input is untouched


def test_evaluate_with_the_candidates_prompt(model_dir, tmp_path):
    from ehrr1.evaluation.evaluate import evaluate
    from tests.support import compose_config

    cfg = compose_config(
        "evaluate",
        "bench=released",
        f"bench.path={FIXTURE}",
        f"model.path={model_dir}",
        "candidates_prompt=true",
        "sampling.max_tokens=4",
        "bootstrap=10",
        f"output_dir={tmp_path}",
    )
    report = evaluate(cfg)
    assert report["run"]["candidates_prompt"] is True and report["samples"] == 10


@pytest.mark.slow
def test_released_items_become_the_instruction_data(registry, tmp_path):
    from ehrr1.artefacts.instructions import build_instructions
    from ehrr1.training.data import read_chat_jsonl
    from tests.support import compose_config

    cfg = compose_config(
        "synthesize", f"data_root={tmp_path / 'data'}", f"task_mix.released={FIXTURE}", "progress=false"
    )
    result = build_instructions(cfg)
    out = Path(result["export_dir"])
    read = lambda s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]  # noqa: E731
    splits = {s: read(s) for s in cfg.task_mix.splits}
    assert sum(len(v) for v in splits.values()) == 10 and result["instructions"]["totals"] == {
        s: len(v) for s, v in splits.items()
    }
    by_patient = defaultdict(set)
    for split, rows in splits.items():
        for r in rows:
            by_patient[r["subject_id"]].add(split)
    assert all(len(s) == 1 for s in by_patient.values())  # a patient in one split only
    assert not (tmp_path / "data" / "mimic-iv-synthetic").exists() and not (tmp_path / "data" / "timelines").exists()
    chats = [c for s in splits for c in read_chat_jsonl(out / f"{s}.jsonl")]  # what the SFT stages read
    assert len(chats) == 10 and all(chat[-1]["role"] == "assistant" for chat in chats)
    # the same directory is not mistaken for data built from the data source, nor the reverse
    from ehrr1.artefacts.instructions import ensure_instructions

    assert ensure_instructions(cfg, "train") == out / "train.jsonl"  # reused: made from this file
    plain = compose_config("synthesize", f"data_root={tmp_path / 'data'}", *SMALL_DATA, "progress=false")
    plain.export.dir = str(out)
    ensure_instructions(plain, "train")
    assert "source" not in json.loads((out / "stats.json").read_text())  # rebuilt from the synthetic cohort


def test_the_physionet_csv_release_reads_as_the_jsonl(registry, tmp_path):
    import pandas as pd

    expected = read_released(FIXTURE, registry)
    pd.DataFrame(items()).to_csv(tmp_path / "ehr_bench.csv", index=False)  # dicts and lists as Python literals
    got = read_released(tmp_path / "ehr_bench.csv", registry)
    assert [(r["task"], r["target"], r["messages"], r["candidates"]) for r in got] == [
        (r["task"], r["target"], r["messages"], r["candidates"]) for r in expected
    ]
    (tmp_path / "cut.csv").write_text('instruction,input\n"unclosed,x\n')
    with pytest.raises(ReleasedBenchError, match=r"cut.csv, line 2: missing field\(s\) task_info"):
        read_released(tmp_path / "cut.csv", registry)


def reasoning_items() -> list[dict]:
    rows = [r for r in items() if r["task_info"].get("task") == "labevents"] or items()[5:6]
    out = []
    for n, row in enumerate(rows):
        chain = f"## Extraction\n- creatinine {n}\n## Reasoning\n- renal\n## Final Results\n{row['output']}"
        forms = (chain, [chain, "a second chain"], {"choices": [{"message": {"content": chain}}]})
        out.append({**row, "task_info": {**row["task_info"], "reasoning": forms[n % 3]}})
    return out


def test_released_reasoning_items_are_the_reasoning_data(registry, tmp_path):
    import pandas as pd

    from ehrr1.artefacts.reasoning import ensure_reasoning
    from tests.support import compose_config

    rows = reasoning_items()
    pd.DataFrame(rows).to_csv(tmp_path / "ehr_ins_reasoning.csv", index=False)
    for got in (
        read_released(tmp_path / "ehr_ins_reasoning.csv", registry),
        read_released(write(tmp_path / "r.jsonl", rows), registry),
    ):
        for record, row in zip(got, rows, strict=True):
            assert record["reasoning"]
            assert record["messages"][-1]["content"] == (
                f"<think>\n## Extraction\n- creatinine {rows.index(row)}\n## Reasoning\n- renal\n## Final Results\n"
                f"{row['output']}\n</think>\n\n" + "\n".join(record["target"])
            )  # the first chain of a list, the first choice of an API answer
    cfg = compose_config(
        "synthesize", f"data_root={tmp_path / 'data'}", f"synthesis.released={tmp_path / 'r.jsonl'}",
        "synthesis.splits=[train,val,test]", "progress=false",
    )  # fmt: skip
    path = ensure_reasoning(cfg)
    written = [
        json.loads(line)
        for s in ("train", "val", "test")
        for line in (path.parent / f"{s}.jsonl").read_text().splitlines()
    ]
    assert len(written) == len(rows) and all(r["messages"][-1]["content"].startswith("<think>\n") for r in written)
    assert not (tmp_path / "data" / "mimic-iv-synthetic").exists()  # nothing else built
    cfg.synthesis.released = str(FIXTURE)  # plain EHR-Ins items have no chain
    with pytest.raises(ReleasedBenchError, match="has no task_info.reasoning"):
        ensure_reasoning(cfg)
