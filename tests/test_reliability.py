"""Nothing lost, nothing stale, nothing outside its folder (issue 37): run folders owned by one writer and kept out
of artefact folders, names that are plain names, results that know what produced them, failed requests retried,
interruptions that say how to resume, resumes that refuse other settings, bounded input files.

Each case meets the code where a user would: the entry points in fresh processes (exit code, the one message,
what is on disk afterwards), two real processes for each lock, a real local HTTP server for failed requests."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pytest

from ehrr1.errors import ForeignOutputError, MissingInputError
from ehrr1.resumable import WorkDir
from ehrr1.run_config import save_run_config
from tests.support import REPO, SMALL_DATA, compose_config, one_token_server, run_entry_point
from tests.test_user_errors import assert_one_message

NAME = "synthetic_n60_seed0"  # data.name of SMALL_DATA's cohort
QUICK = (
    "stage=domain_adaptation",
    "stage.grad_accum=1",
    "stage.micro_batch_size=2",
    "stage.val_max_batches=1",
    "model.context_length=512",
    "stage.log_every_n_steps=1",
    "evaluate.enabled=false",
)


# ---- names are names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("../../../../../x", "it holds a path separator"),
        ("a/b", "it holds a path separator"),
        ("a\\b", "it holds a path separator"),
        ("..", "'..' is the folder itself or its parent"),
        (".", "'.' is the folder itself or its parent"),
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("lab\u200bevents", "a character that cannot be seen"),
        ("bell\x07", "a character that cannot be seen"),
        ("two\nlines", "a character that cannot be seen"),
        ("nul\x00", "a character that cannot be seen"),
        ("rtl\u202etxt", "a character that cannot be seen"),
        ("x" * 201, "longer than 200 bytes"),
    ],
    ids=repr,
)
def test_a_name_that_is_not_one_plain_path_component_is_refused_with_escapes(value, why):
    from ehrr1.config.checks import path_name_problem
    from ehrr1.errors import shown

    problem = path_name_problem("model.name", value)
    assert problem is not None and why in problem and " names a folder, so it must be one plain name: " in problem
    assert problem.startswith(f"model.name={shown(value)[:40]}")  # a long name is shown cut, with its length
    assert "\u200b" not in problem and "\x07" not in problem and "\n" not in problem  # shown, never hidden


@pytest.mark.parametrize("value", ["qwen3_8b", "Qwen2.5-72B", "modèle", "a..b", "synthetic_n60_seed0", "x" * 200])
def test_plain_names_pass(value):
    from ehrr1.config.checks import path_name_problem

    assert path_name_problem("model.name", value) is None


def test_a_user_task_named_like_a_path_or_with_an_invisible_character_is_refused_shown():
    from ehrr1.tasks.registry import TaskError, TaskRegistry

    fields = {"anchor": "labevents", "target": "item_name", "instruction": "Which tests?"}
    with pytest.raises(TaskError) as caught:
        TaskRegistry({"decision": {"../escape": fields}})
    assert "tasks.extra.decision.<name>='../escape' names a folder" in str(caught.value)
    with pytest.raises(TaskError) as caught:
        TaskRegistry()["lab\u200bevents"]
    assert "unknown task 'lab\\u200bevents'" in str(caught.value) and "Did you mean labevents" in str(caught.value)


# ---- what the entry points refuse before any work ---------------------------------------------------------------


def _config_dir_with_invisible_mix_name(tmp: Path) -> Path:
    """A config folder (hydra.searchpath) with a task mix whose name holds a zero-width space."""
    conf = tmp / "conf" / "task_mix"
    conf.mkdir(parents=True)
    (conf / "invisible.yaml").write_text('name: "smo\u200bke"\ntasks:\n  labevents: 2\n', encoding="utf-8")
    return tmp / "conf"


def _stored_run(tmp: Path, data: Path) -> Path:
    """A run folder as train.py leaves it after one finished stage (its summary, its weights' folder): the
    config it was started with, stored."""
    from ehrr1.training.curriculum import StageResult

    run = tmp / "stored_run"
    cfg = compose_config("train", f"data_root={data}", f"run_dir={run}", *SMALL_DATA, *QUICK, "stage.max_steps=3")
    save_run_config(cfg, run)
    stage = run / "stages" / "1_domain_adaptation"
    (stage / "hf").mkdir(parents=True)
    (stage / "hf" / "config.json").write_text("{}")
    result = StageResult("domain_adaptation", "trained", str(stage), hf_dir=str(stage / "hf"), steps=3)
    (stage / "summary.json").write_text(json.dumps(asdict(result)))
    return run


def entry_cases(tmp: Path, model_dir: Path) -> list[tuple[str, list[str], str]]:
    """(entry point, arguments, what its one message says) for every refusal made before any work starts."""
    data = tmp / "data"
    conf = _config_dir_with_invisible_mix_name(tmp)
    run = _stored_run(tmp, tmp / "run_data")
    (tmp / "folder_config").mkdir()
    (tmp / "folder_config" / "resolved_config.yaml").mkdir()
    (tmp / "mix_dir").mkdir()
    (tmp / "big.json").write_text(json.dumps({f"t{i}": 1 for i in range(120_000)}))
    (tmp / "latin1.json").write_bytes('{"Pr\xe9vu": 1}'.encode("latin-1"))
    (tmp / "a_file").write_text("")
    os.mkfifo(tmp / "mix.fifo")  # a read would wait for a writer forever
    zero = tmp / "zero_summary" / "stages" / "1_rl"
    zero.mkdir(parents=True)
    (zero / "summary.json").symlink_to("/dev/zero")
    copy = tmp / "copied_run" / "stages" / "1_rl"
    copy.mkdir(parents=True)
    (copy / "summary.json").write_text(json.dumps({"stage": "rl", "hf_dir": str(model_dir)}))  # weights not copied
    synthetic = [f"data_root={data}", *SMALL_DATA]
    model = f"model.path={model_dir}"
    inside = "is inside the {}"
    return [
        ("train", [*synthetic, "model.name=../../../../../escaped"], "model.name='../../../../../escaped' names a"),
        ("synthesize", [*synthetic, "model.name=../../escaped"], "model.name='../../escaped' names a folder"),
        ("evaluate", [*synthetic, model, "model.name=../escaped"], "model.name='../escaped' names a folder"),
        ("synthesize", [*synthetic, "task_mix.name=a/b"], "task_mix.name='a/b' names a folder"),
        ("synthesize", [*synthetic, "data.name=.."], "data.name='..' names a folder, so it must be one plain name"),
        ("synthesize", [*synthetic, "data.name=."], "data.name='.' names a folder"),
        ("synthesize", [*synthetic, "model.name="], "model.name='' names a folder, so it must be one plain name: it"),
        ("synthesize", [*synthetic, f"data.name={'d' * 201}"], "it is longer than 200 bytes"),
        ("train", [*synthetic, *QUICK, "stage.name=../up"], "stage.name='../up' names a folder"),
        ("synthesize", [*synthetic, f"hydra.searchpath=[file://{conf}]", "task_mix=invisible"],
         "task_mix.name='smo\\u200bke' names a folder, so it must be one plain name: it holds a character that"),
        ("train", [*synthetic, *QUICK, f"run_dir={data}/timelines/{NAME}/my_run"], inside.format("timelines")),
        ("evaluate", [*synthetic, model, f"output_dir={data}/index/{NAME}/scores"], inside.format("sample index")),
        ("evaluate", [*synthetic, "backend=tabular", f"output_dir={data}/timelines/{NAME}"], inside.format("timeline")),
        ("evaluate", [*synthetic, model, f"output_dir={data}/reasoning/{NAME}/smoke/tiny/x"], inside.format("reason")),
        ("train", [*synthetic, f"resume={tmp / 'folder_config'}"], "resolved_config.yaml is a folder; expected a file"),
        ("train", [f"resume={run}", "stage.optim.lr=0.5"],
         "continues the run with the settings it was started with, and these overrides differ from them: "
         "stage.optim.lr (the run's: 2e-05, given: 0.5)"),
        ("synthesize", [*synthetic, "task_mix.file=/dev/zero"],
         "task_mix.file: /dev/zero is not a regular file (a device, a pipe or a socket); expected a file"),
        ("synthesize", [*synthetic, f"task_mix.file={tmp / 'mix_dir'}"], "mix_dir is a folder; expected a file"),
        ("synthesize", [*synthetic, f"task_mix.file={tmp / 'big.json'}"], "bytes, more than the 1,048,576 such a file"),
        ("synthesize", [*synthetic, f"task_mix.file={tmp / 'latin1.json'}"], "latin1.json is not UTF-8 text (invalid"),
        ("synthesize", [*synthetic, f"task_mix.file={tmp / 'none.json'}"], "task_mix.file: " + str(tmp / "none.json")),
        ("synthesize", [*synthetic, f"task_mix.file={tmp / 'mix.fifo'}"], "mix.fifo is not a regular file (a device"),
        ("evaluate", [*synthetic, f"train_run={tmp / 'zero_summary'}"], "summary.json is not a regular file (a device"),
        ("evaluate", [*synthetic, model, "bench=released", "bench.path=/dev/zero"],
         "bench.path: /dev/zero is not a regular file or folder (a device, a pipe or a socket)"),
        ("train", [*synthetic, f"hydra.run.dir={tmp / 'a_file'}"], "a_file is a file, not a folder; Hydra keeps"),
        ("evaluate", [*synthetic, f"hydra.run.dir={tmp / 'a_file'}/x/${{now:%H}}"], "a_file is a file, not a folder"),
        ("evaluate", [*synthetic, f"train_run={tmp / 'copied_run'}"],
         "stage rl is marked finished but its weights are not in " + str(copy / "hf")),
    ]  # fmt: skip


@pytest.mark.slow
def test_each_refusal_is_one_message_before_any_work_in_a_fresh_process(tmp_path, model_dir):
    """Names, run and output folders inside artefact folders, resumes with other settings, input files that are
    not small regular files, a Hydra folder that cannot be made, a copied run without its weights: exit 1, one
    line, no traceback, nothing written (no data root; nothing where a name would have led; the stored run as
    it was). A resume with equal settings, or ones that only change the reporting (progress), goes on."""
    cases = entry_cases(tmp_path, model_dir)
    run = tmp_path / "stored_run"
    stored = (run / "resolved_config.yaml").read_bytes()

    def call(case):
        script, args, _ = case
        return run_entry_point(f"{script}.py", *args, cwd=tmp_path, timeout=180)

    same = ("train", [f"resume={run}", "stage.max_steps=3", "progress=true"], "")  # equal, or reporting only
    with ThreadPoolExecutor(2) as pool:
        *results, resumed = list(pool.map(call, [*cases, same]))
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # the finished run is reported again, its config kept
    assert "domain_adaptation" in resumed.stdout and "done" in resumed.stdout
    for (script, args, message), result in zip(cases, results, strict=True):
        assert_one_message(result, message)
        assert result.stderr.count("error:") == 1, (script, args, result.stderr[-1500:])
    assert not (tmp_path / "data").exists()  # every refusal came before any data was built
    assert not list(tmp_path.parent.glob("escaped*")) and not (tmp_path / "escaped").exists()
    assert (run / "resolved_config.yaml").read_bytes() == stored and not list(run.glob("*.lock"))
    assert len(cases) >= 27


@pytest.mark.parametrize(
    ("where", "artefact"),
    [
        ("timelines/synthetic_n60_seed0/my_run", "timelines"),
        ("index/synthetic_n60_seed0/labevents/run", "sample index"),
        ("instructions/synthetic_n60_seed0/smoke/tiny", "instructions"),
        ("reasoning/synthetic_n60_seed0/smoke/tiny/run", "reasoning data"),
        ("models/tiny/synthetic_n60_seed0", "embedded tokenizer"),
        ("mimic-iv-synthetic/n60_seed0/hosp/run", "synthetic cohort"),
    ],
)
def test_a_run_or_output_folder_inside_an_artefact_folder_is_refused(tmp_path, where, artefact):
    from ehrr1.artefacts.graph import check_outside_artefacts
    from ehrr1.errors import ConfigError

    cfg = compose_config("train", f"data_root={tmp_path}", *SMALL_DATA)
    for key in ("run_dir", "output_dir"):
        with pytest.raises(ConfigError, match=f"{key}={tmp_path / where} is inside the {artefact} folder"):
            check_outside_artefacts(cfg, tmp_path / where, key)
    check_outside_artefacts(cfg, tmp_path / "runs" / "mine", "run_dir")  # beside them: fine
    check_outside_artefacts(cfg, tmp_path / "timelines", "run_dir")  # the folder above one: fine


def test_resume_refuses_overrides_that_differ_from_the_run_and_names_each(tmp_path):
    from ehrr1.errors import ConfigError, DataError
    from ehrr1.training.run_folder import stored_run_config

    run = _stored_run(tmp_path, tmp_path / "data")
    cases = [
        (["stage.optim.lr=0.5"], "stage.optim.lr (the run's: 2e-05, given: 0.5)"),
        (["stage.max_steps=3", "stage.grad_accum=4"], "differ from them: stage.grad_accum (the run's: 1, given: 4)."),
        (["model=qwen3_1.7b"], "differ from them: model (the run's: {"),
        (["experiment=main"], "(set by experiment=...)"),
        (["+stages.domain_adaptation.epochs=2"], "stages.domain_adaptation.epochs (the run's: null, given: 2)"),
    ]
    for overrides, message in cases:
        cfg = compose_config("train", f"resume={run}", *overrides)
        keys = [o.split("=")[0].lstrip("+") for o in overrides]
        with pytest.raises(ConfigError, match=re.escape(message)):
            stored_run_config(cfg, run, keys)
    same = stored_run_config(
        compose_config("train", "stage.max_steps=3", "progress=false"), run, ["stage.max_steps", "progress"]
    )
    assert same.stage.max_steps == 3 and same.progress is False
    with pytest.raises(MissingInputError, match="no resolved_config.yaml there"):
        stored_run_config(compose_config("train"), tmp_path, [])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "resolved_config.yaml").write_text("stage: [unclosed\n")
    with pytest.raises(DataError, match=r"resolved_config.yaml is not a stored config \(while parsing"):
        stored_run_config(compose_config("train"), tmp_path / "broken", [])
    (tmp_path / "listed").mkdir()
    (tmp_path / "listed" / "resolved_config.yaml").write_text("- a\n- b\n")
    with pytest.raises(DataError, match="expected a mapping of settings"):
        stored_run_config(compose_config("train"), tmp_path / "listed", [])


# ---- a rebuild removes only what its producer wrote ---------------------------------------------------------------


def test_a_rebuild_refuses_to_remove_what_its_producer_did_not_write(tmp_path):
    """A work directory whose inputs changed is cleared for the rebuild only when it holds nothing but its
    producer's files; anything else (a run folder put there) stops it with one message naming it, untouched."""
    folder = tmp_path / "index" / "labevents"
    first = WorkDir(folder, "key-1", "index of task labevents", state="build.json", owns=("index-*.parquet",))
    first.claim()
    first.commit_text("index-00000.parquet", "rows")
    (folder / "my_run" / "hf").mkdir(parents=True)
    (folder / "my_run" / "hf" / "model.safetensors").write_bytes(b"weights")
    second = WorkDir(folder, "key-2", "index of task labevents", state="build.json", owns=("index-*.parquet",))
    with pytest.raises(ForeignOutputError) as caught:
        second.claim()
    assert str(caught.value) == (
        f"the index of task labevents in {folder} must be rebuilt (its inputs or settings changed), which replaces "
        f"the folder, but it holds {folder / 'my_run'}, which the index of task labevents did not write: move that "
        f"out of {folder}, then run again"
    )
    assert (folder / "my_run" / "hf" / "model.safetensors").read_bytes() == b"weights"
    assert (folder / "index-00000.parquet").exists()  # nothing removed
    shutil.move(folder / "my_run", tmp_path / "my_run")
    second.claim()
    assert not (folder / "index-00000.parquet").exists() and json.loads((folder / "build.json").read_text()) == {
        "fingerprint": "key-2"
    }


def test_timelines_rebuilt_with_other_settings_keep_a_run_folder_put_inside_them(tiny_cohort, tmp_path):
    """The reported loss: a run_dir inside the timelines folder, then a rebuild of the timelines. The rebuild stops
    naming the run folder, whose weights are still there; the timelines as they were are kept too."""
    from ehrr1.config import TimelineBuildSettings
    from ehrr1.data.build import build_timelines
    from ehrr1.data.reader import MimicReader
    from tests.support import modules_of

    out = tmp_path / "timelines"
    build_timelines(MimicReader(modules_of(tiny_cohort), empty_tables="warn"), out, progress=False)
    weights = out / "run" / "stages" / "1_domain_adaptation" / "hf" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"trained")
    before = sorted(p.name for p in out.iterdir())
    other = TimelineBuildSettings(patients_per_shard=1)
    with pytest.raises(ForeignOutputError, match=f"but it holds {out / 'run'}, which the timeline build did not"):
        build_timelines(MimicReader(modules_of(tiny_cohort), empty_tables="warn"), out, other, progress=False)
    assert weights.read_bytes() == b"trained" and sorted(p.name for p in out.iterdir()) == before


def test_a_synthetic_cohort_made_anew_keeps_a_foreign_file_in_its_folder(tmp_path):
    from ehrr1.config import SyntheticCohortSettings
    from ehrr1.data.synthetic.cohort import generate_cohort

    root = tmp_path / "cohort"
    generate_cohort(root, SyntheticCohortSettings(n_patients=2, seed=0), progress=False)
    (root / "notes.txt").write_text("mine")
    with pytest.raises(ForeignOutputError, match="notes.txt, which the synthetic cohort did not write"):
        generate_cohort(root, SyntheticCohortSettings(n_patients=3, seed=0), progress=False)
    assert (root / "notes.txt").read_text() == "mine"
    assert json.loads((root / "cohort.json").read_text())["settings"]["n_patients"] == 2


def test_the_embedded_tokenizer_and_model_rebuilt_keep_a_foreign_file_in_their_folders(tmp_path):
    """Their folders are replaced whole by a rebuild (other settings): one holding anything but a saved tokenizer
    or model is refused, named, the file and the earlier build kept."""
    from ehrr1.models.factory import build_embedded_model
    from ehrr1.models.tokenizer import build_embedded_tokenizer, load_tokenizer
    from tests.support import tiny_architecture

    texts = ["Sodium 131 mmol/L, creatinine 2.4 mg/dL, lactate 3.1"] * 40
    tokenizer = build_embedded_tokenizer(iter(texts), tmp_path / "tokenizer", 400)
    (tokenizer / "my_notes.md").write_text("mine")
    with pytest.raises(ForeignOutputError, match="my_notes.md, which the embedded tokenizer did not write"):
        build_embedded_tokenizer(iter(texts), tmp_path / "tokenizer", 500)
    assert (tokenizer / "my_notes.md").read_text() == "mine" and len(load_tokenizer(tokenizer)) <= 400
    model = build_embedded_model(tiny_architecture(), load_tokenizer(tokenizer), tmp_path / "model", seed=0)
    (model / "run").mkdir()
    with pytest.raises(ForeignOutputError, match=f"holds {model / 'run'}, which the embedded model did not write"):
        build_embedded_model(tiny_architecture(), load_tokenizer(tokenizer), tmp_path / "model", seed=1)
    assert (model / "run").is_dir() and (model / "model.safetensors").exists()


def test_a_deleted_timeline_shard_is_named_and_built_again(tiny_cohort, tmp_path, caplog):
    """Not "up to date" then a worker's traceback: the reader names the missing shard, and the builder makes it
    again (the same bytes)."""
    from ehrr1.config import TimelineBuildSettings
    from ehrr1.data.build import build_timelines
    from ehrr1.data.reader import MimicReader
    from ehrr1.data.timeline import TimelineStore
    from tests.support import modules_of

    out = tmp_path / "timelines"
    settings = TimelineBuildSettings(patients_per_shard=2)

    def build():
        return build_timelines(MimicReader(modules_of(tiny_cohort), empty_tables="warn"), out, settings, False)

    import pyarrow.parquet as pq

    caplog.set_level(logging.INFO)
    build()
    shard = out / "shard-00001.parquet"
    content = pq.read_table(shard)
    shard.unlink()
    with pytest.raises(MissingInputError, match="lack shard-00001.parquet \\(deleted\\?\\): build them again"):
        TimelineStore(out)
    build()
    assert "lack shard-00001.parquet (deleted?): building them again" in caplog.text
    assert pq.read_table(shard).equals(content) and TimelineStore(out).num_shards >= 2


# ---- results know what produced them ----------------------------------------------------------------------------


def _evaluate_in_process(data_root: Path, model: Path, out: Path, *overrides: str) -> dict:
    from ehrr1.evaluation.evaluate import evaluate

    cfg = compose_config(
        "evaluate", f"data_root={data_root}", *SMALL_DATA, f"model.path={model}", f"output_dir={out}",
        "limit=1", "sampling.max_tokens=4", "bootstrap=10", "baselines=[]", *overrides,
    )  # fmt: skip
    return evaluate(cfg)


def test_results_of_other_weights_at_the_same_path_are_not_reused(small_data_root, model_dir, tmp_path, caplog):
    """Weights written again at the same path are other weights: their samples are generated again, not reported
    as already done; the same weights again reuse every row."""
    from ehrr1.models.factory import init_random_model
    from ehrr1.models.tokenizer import load_tokenizer
    from tests.support import tiny_architecture

    caplog.set_level(logging.INFO)
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    out = tmp_path / "scores"
    first = _evaluate_in_process(small_data_root, model, out)
    n = first["samples"]
    caplog.clear()
    _evaluate_in_process(small_data_root, model, out)
    assert f"{n} of {n} samples already answered; 0 to go" in caplog.text
    init_random_model(tiny_architecture(), load_tokenizer(model), seed=11).save_pretrained(model)
    caplog.clear()
    _evaluate_in_process(small_data_root, model, out)
    assert "already answered" not in caplog.text
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * n and len({r["key"] for r in rows}) == 2 * n


def test_stored_answers_are_scored_again_with_the_targets_and_metrics_of_now(model_dir, tmp_path):
    """A corrected target needs no generation: the stored answer is scored against it."""
    from ehrr1.backends import SamplingParams
    from ehrr1.evaluation.harness import build_requests, run
    from ehrr1.models.tokenizer import load_tokenizer
    from ehrr1.tasks.metrics import answer_lines
    from ehrr1.tasks.prompt import ThinkingSwitch
    from tests.support import backend

    tokenizer = load_tokenizer(model_dir)
    record = {"id": "a", "task": "labevents", "kind": "decision", "metric": "f1", "target": ["Sodium"],
              "messages": [{"role": "user", "content": "EHR"}]}  # fmt: skip
    sampling = SamplingParams(max_tokens=4)

    def requests(**changed):
        return build_requests([{**record, **changed}], tokenizer, "m", sampling, False, ThinkingSwitch.suffix)

    results = tmp_path / "results.jsonl"
    [first] = run(requests(), backend("hf", model_dir, device="cpu"), sampling, results, progress=False)

    class NoGeneration:
        def generate(self, *args, **kwargs):
            raise AssertionError("a stored answer was generated again")

    lines = answer_lines(first["output"])
    target = lines[0] if lines else "a line the model never wrote"
    [again] = run(requests(target=[target], metric="recall"), NoGeneration(), sampling, results, progress=False)
    assert again["output"] == first["output"] and again["metric"] == "recall" and again["target"] == [target]
    assert again["score"] == (1.0 if lines else 0.0) and first["score"] == 0.0
    assert len(results.read_text().splitlines()) == 1


@pytest.mark.slow
def test_failed_requests_fail_the_run_are_asked_again_and_allow_failures_accepts_them(
    small_data_root, model_dir, tmp_path
):
    """A server answering 302 (never followed): each sample is recorded as a failure, the reports count them, the
    run exits 1 saying so; once the server is fixed the same command asks only them again and succeeds.
    allow_failures=true accepts a run with failures."""
    mode = {"redirect": True}
    seen: list[dict] = []
    out = tmp_path / "scores"
    with one_token_server(seen, mode) as url:
        args = [f"data_root={small_data_root}", *SMALL_DATA, f"model.path={model_dir}", "backend=openai",
                f"backend.base_url={url}", "backend.max_retries=0", "limit=1", "sampling.max_tokens=4",
                "bootstrap=10", f"output_dir={out}", "only_tasks=[Inpatient_Mortality,labevents]"]  # fmt: skip
        broken = run_entry_point("evaluate.py", *args, cwd=tmp_path)
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert_one_message(broken, "2 of 2 samples failed (first: HTTPStatusError: Redirect response '302 Found'")
        assert "recorded as failures in" in broken.stderr and "allow_failures=true" in broken.stderr
        assert len(rows) == 2 and all(r["error"] and r["score"] == 0 for r in rows)
        assert "2 samples failed to generate" in (out / "report.md").read_text()
        mode["redirect"] = False
        asked = len(seen)
        fixed = run_entry_point("evaluate.py", *args, cwd=tmp_path)
        assert fixed.returncode == 0, fixed.stderr[-2000:]
        logged = fixed.stdout + fixed.stderr
        assert "0 of 2 samples already answered; 2 to go, 2 of them failed before and asked again" in logged
        assert len(seen) > asked and "failed to generate" not in (out / "report.md").read_text()
        report = json.loads((out / "report.json").read_text())
        assert sum(t["errors"] for t in report["tasks"]) == 0
        mode["redirect"] = True
        allowed = run_entry_point("evaluate.py", *args[:-2], f"output_dir={tmp_path / 'allowed'}",
                                  "only_tasks=[labevents]", "allow_failures=true", cwd=tmp_path)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "1 samples failed to generate" in allowed.stdout


def test_a_copied_run_is_evaluated_and_continued_with_its_own_weights(tmp_path, model_dir):
    """The summary's hf_dir is where the stage was trained; a copy's own stages/*/hf is what evaluation and the
    next stage use (the original may be gone). A copy without its weights is refused by name."""
    from ehrr1.evaluation.evaluate import trained_stages
    from ehrr1.training.curriculum import run_stage

    original = tmp_path / "original"
    stage = original / "stages" / "1_domain_adaptation"
    shutil.copytree(model_dir, stage / "hf")
    (stage / "summary.json").write_text(json.dumps({"stage": "domain_adaptation", "status": "trained",
                                                    "directory": str(stage), "hf_dir": str(stage / "hf")}))  # fmt: skip
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    assert trained_stages(str(copy))[-1]["hf_dir"] == str(copy / "stages" / "1_domain_adaptation" / "hf")
    cfg = compose_config("train", "stage=domain_adaptation", f"run_dir={copy}")
    reused = run_stage(cfg, copy / "stages" / "1_domain_adaptation", "copy", None, single=True)
    assert reused.status == "done" and reused.hf_dir == str(copy / "stages" / "1_domain_adaptation" / "hf")
    shutil.rmtree(copy / "stages" / "1_domain_adaptation" / "hf")
    with pytest.raises(MissingInputError, match="is marked finished but its weights are not in"):
        trained_stages(str(copy))


# ---- one writer per run folder: two real processes for each lock ---------------------------------------------------


def _wait_for(condition, timeout_s: float = 300, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.stderr.read()[-3000:] if process.stderr else ''}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _start(script: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / script), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _training_past_its_first_checkpoint(data_root: Path, tmp_path: Path, max_steps: int):
    """A train.py process of one stage (its run folder, stage folder and arguments) once its first checkpoint is
    written: interrupted from then on, it has something to resume from."""
    run = tmp_path / "run"
    stage = run / "stages" / "1_domain_adaptation"
    args = [f"data_root={data_root}", *SMALL_DATA, *QUICK, "stage.micro_batch_size=1", f"stage.max_steps={max_steps}",
            "stage.checkpoint_every_n_steps=2", "progress=false", f"run_dir={run}"]  # fmt: skip
    process = _start("train.py", *args, cwd=tmp_path)
    _wait_for(lambda: (stage / "checkpoints" / "last.ckpt").exists(), process=process)
    return run, stage, args, process


@pytest.mark.slow
def test_one_writer_per_run_folder_and_sigterm_ends_with_how_to_resume(small_data_root, tmp_path):
    """While a training runs, a second train.py into its run folder and a resume of it are refused, naming it.
    SIGTERM (a scheduler's stop) then ends it with 143, not 0: one line naming the stage and step and the resume
    command, the stage unfinished and the lock released; that command finishes the stage."""
    run, stage, args, first = _training_past_its_first_checkpoint(small_data_root, tmp_path, max_steps=12)
    first.send_signal(signal.SIGSTOP)  # held still (its lock too) while the others ask for its folder
    with ThreadPoolExecutor(2) as pool:
        second, resumed = pool.map(lambda a: run_entry_point("train.py", *a, cwd=tmp_path), [args, [f"resume={run}"]])
    first.send_signal(signal.SIGCONT)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    for result, key in ((second, "run_dir"), (resumed, "resume")):
        assert_one_message(result, f"{key}={run} is being written by pid {first.pid} on ")
        assert f"wait for that run to end, or give this one another {key}" in result.stderr
    assert first.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGTERM at stage domain_adaptation, step "), last
    assert last.endswith(f"nothing half-written was kept. Resume with: python train.py resume={run}"), last
    assert not (stage / "summary.json").exists() and not (stage / "hf").exists()
    assert (tmp_path / "run.lock").read_text() == ""  # released
    finished = run_entry_point("train.py", f"resume={run}", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "resuming from" in finished.stdout + finished.stderr
    assert json.loads((stage / "summary.json").read_text())["steps"] == 12


@pytest.mark.slow
def test_ctrl_c_during_training_ends_with_one_line_and_130(small_data_root, tmp_path):
    """Lightning answers Ctrl-C with its own sys.exit(1): the entry point still says where and how to resume."""
    run, stage, _, process = _training_past_its_first_checkpoint(small_data_root, tmp_path, max_steps=40)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGINT at stage domain_adaptation, step ") and (
        last.endswith(f"Resume with: python train.py resume={run}")
    ), last
    assert not (stage / "summary.json").exists()


@pytest.mark.slow
def test_one_writer_per_evaluation_folder_and_sigterm_keeps_whole_rows(small_data_root, model_dir, tmp_path):
    """A second evaluate.py into a running one's output folder is refused; SIGTERM ends the first with 143 and one
    line, its results.jsonl holding whole rows only; the same command resumes from them and finishes."""
    out = tmp_path / "scores"
    mode = {"delay_s": 2.0}
    with one_token_server(mode=mode) as url:
        args = [f"data_root={small_data_root}", *SMALL_DATA, f"model.path={model_dir}", "backend=openai",
                f"backend.base_url={url}", "limit=2", "batch_size=1", "baselines=[]", f"output_dir={out}",
                "only_tasks=[Inpatient_Mortality,labevents]"]  # fmt: skip
        first = _start("evaluate.py", *args, cwd=tmp_path)
        _wait_for(lambda: (out / "results.jsonl").exists() and (out / "results.jsonl").stat().st_size, process=first)
        first.send_signal(signal.SIGSTOP)  # held still (its lock too) while the second asks for its folder
        second = run_entry_point("evaluate.py", *args, cwd=tmp_path)
        first.send_signal(signal.SIGCONT)
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
        kept = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        mode["delay_s"] = 0
        again = run_entry_point("evaluate.py", *args, cwd=tmp_path)
    assert_one_message(second, f"output_dir={out.absolute()} is being written by pid {first.pid} on ")
    assert first.returncode == 143 and "Traceback" not in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted by SIGTERM at the evaluation of ") and "Resume with: python " in last
    assert again.returncode == 0, again.stderr[-2000:]
    logged = again.stdout + again.stderr
    assert f"{len(kept)} of " in logged and "samples already answered" in logged
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    assert len(rows) == len({r["key"] for r in rows}) == report["samples"] > len(kept) >= 1


@pytest.mark.slow
def test_ctrl_c_during_the_export_ends_in_one_line_and_a_rerun_finishes(tmp_path):
    """SIGINT to the whole process group (what Ctrl-C sends), workers included, while the export writes its
    parts: no traceback from any process, no split file, exit 130; the same command then completes it."""
    data = tmp_path / "data"
    args = [f"data_root={data}", *SMALL_DATA, "export.unit_patients=2"]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "synthesize.py"), *args], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    export = data / "instructions" / NAME / "smoke" / "tiny"
    _wait_for(lambda: any((export / "_parts").glob("stats-*.json")), process=process)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert re.match(r"error: interrupted by SIGINT at export units, \d+ of \d+ done; nothing half-written was kept\. "
                    r"Resume with: python synthesize\.py data_root=", last), last  # fmt: skip
    assert not list(export.glob("*.jsonl")) and not list(export.rglob("*.tmp"))
    again = run_entry_point("synthesize.py", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "export resumes" in again.stdout + again.stderr and (export / "test.jsonl").exists()


# ---- written patient data is its user's alone ------------------------------------------------------------------------


@pytest.mark.slow
def test_written_patient_data_is_owner_only(tmp_path):
    """The cohort's tables and the timelines (patient data) are created 0600, their folders 0700, whatever the
    umask the run started with."""
    data = tmp_path / "data"
    before = os.umask(0o022)  # the child inherits it
    try:
        result = run_entry_point(
            "synthesize.py", f"data_root={data}", "pipeline=timelines", "data.synthetic.n_patients=5", "progress=false",
            cwd=tmp_path,
        )  # fmt: skip
    finally:
        os.umask(before)
    assert result.returncode == 0, result.stderr[-2000:]
    written = list(data.rglob("*"))
    assert any(p.suffix == ".parquet" for p in written) and any(p.name.endswith(".csv.gz") for p in written)
    modes = {p.stat().st_mode & 0o777 for p in written}
    assert modes <= {0o600, 0o700}, sorted(map(oct, modes))


def test_private_files_false_leaves_the_umask_to_the_user():
    from ehrr1.utils import keep_files_private

    before = os.umask(0o027)
    try:
        keep_files_private(False)
        assert os.umask(0o027) == 0o027
        keep_files_private(True)
        assert os.umask(0o027) == 0o077
    finally:
        os.umask(before)
