"""A user's mistake ends with one message naming the key, file or path and exit code 1, never a traceback.

Each case is what a user could type or have on disk; the message it must get is asserted word for word
where it matters. Settings are checked at start-up, before any data is read or built.
"""

from __future__ import annotations

import errno
import gzip
import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ehrr1.config import validate
from ehrr1.errors import ConfigError, UserError, environment_message, report_user_errors
from ehrr1.utils import locked
from tests.support import backend as support_backend
from tests.support import compose_config, modules_of, run_entry_point

# (entry point, overrides, what the message must say)
CONFIG_CASES = [
    ("train", ["stage.micro_batch_size=0"], "stage.micro_batch_size must be >= 1, got 0"),
    ("synthesize", ["data=mimic_iv"], "data.root is not set: data=mimic_iv reads its tables from data.root=<the"),
    ("train", ["stage.grad_accum=0"], "stage.grad_accum must be >= 1, got 0"),
    ("train", ["stage.optim.lr=-0.001"], "stage.optim.lr must be > 0, got -0.001"),
    ("train", ["stage.max_steps=0"], "stage.max_steps must be >= 1 or -1, got 0"),
    ("train", ["stage.answer_weight=0"], "stage.answer_weight must be > 0, got 0"),
    ("train", ["stage.schedule.warmup_ratio=1.5"], "stage.schedule.warmup_ratio must be >= 0 and <= 1, got 1.5"),
    ("train", ["stage.optim.betas=[0.9,1.5]"], "stage.optim.betas=[0.9, 1.5]: expected two values in [0, 1)"),
    ("train", ["stage.grpo.group_size=1"], "stage.grpo.group_size must be >= 2, got 1"),
    ("train", ["stage.grpo.temperature=0"], "stage.grpo.temperature must be > 0, got 0"),
    ("train", ["evaluate.batch_size=0"], "evaluate.batch_size must be >= 1, got 0"),
    ("train", ["evaluate.split=tset"], "evaluate.split=tset: unknown split; did you mean 'test'?"),
    ("train", ["hardware.precision=bf16-mixd"], "hardware.precision=bf16-mixd: did you mean 'bf16-mixed'?"),
    ("train", ["hardware.accelerator=tpu"], "hardware.accelerator=tpu: did you mean 'gpu'? choose from cpu, gpu, cuda"),
    ("train", ["hardware.devices=0"], "hardware.devices must be >= 1 or -1, got 0"),
    ("train", ["+task_mix.split_factor.tset=2"], "task_mix.split_factor.tset: unknown split; did you mean 'test'?"),
    ("synthesize", ["data.synthetic.n_patients=0"], "data.synthetic.n_patients must be >= 1, got 0"),
    ("synthesize", ["timelines.patients_per_shard=0"], "timelines.patients_per_shard must be >= 1, got 0"),
    ("synthesize", ["selection.force_number=-3"], "selection.force_number must be > 0, got -3"),
    ("synthesize", ["selection.split.train=2.2"], "selection.split: the split shares must sum to 1, got 2.4"),
    ("synthesize", ["selection.split.val=nan"], "selection.split.val must be >= 0, got nan"),
    ("synthesize", ["task_mix.split.train=0.9"], "task_mix.split: the split shares must sum to 1, got 1.2"),
    ("synthesize", ["selection.min_events=100", "selection.max_events=50"],
     "selection.min_events=100 must be below selection.max_events=50 - 1"),
    ("synthesize", ["selection.min_events=9", "selection.max_events=10"],
     "selection.min_events=9 must be below selection.max_events=10 - 1: no sample could have a context strictly"),
    ("synthesize", ["task_mix.tasks.labevents=-3"], "task_mix.tasks.labevents=-3: a count must be >= 1, or -1 / 0"),
    ("synthesize", ["task_mix.splits=[train,tst]"], "task_mix.splits=tst: unknown split; did you mean 'test'?"),
    ("synthesize", ["export.unit_patients=0"], "export.unit_patients must be >= 1, got 0"),
    ("synthesize", ["index.num_workers=0"], "index.num_workers must be >= 1, got 0"),
    ("synthesize", ["export.num_workers=-1"], "export.num_workers must be >= 1, got -1"),
    ("synthesize", ["model.max_input_tokens=0"], "model.max_input_tokens must be >= 1, got 0"),
    ("synthesize", ["model.tokenizer_vocab_size=10"], "model.tokenizer_vocab_size must be >= 300, got 10"),
    ("synthesize", ["model.architecture.num_attention_heads=3"],
     "model.architecture.num_attention_heads=3 must be a multiple of model.architecture.num_key_value_heads=2"),
    ("synthesize", ["synthesis.chunk_size=0"], "synthesis.chunk_size must be >= 1, got 0"),
    ("synthesize", ["synthesis.splits=[train,vla]"], "synthesis.splits=vla: unknown split; did you mean 'val'?"),
    ("synthesize", ["synthesis.min_answer_recall=2"], "synthesis.min_answer_recall must be >= 0 and <= 1, got 2"),
    ("evaluate", ["split=tset"], "split=tset: unknown split; did you mean 'test'?"),
    ("evaluate", ["train_run=/runs/a", "model.path=/models/b"],
     "train_run=/runs/a and model.path=/models/b both name the weights to evaluate: set one of them"),
    ("evaluate", ["batch_size=0"], "batch_size must be >= 1, got 0"),
    ("evaluate", ["limit=0"], "limit must be >= 1, got 0"),
    ("evaluate", ["bootstrap=0"], "bootstrap must be >= 1, got 0"),
    ("evaluate", ["sampling.top_p=0"], "sampling.top_p must be > 0 and <= 1, got 0"),
    ("evaluate", ["sampling.temperature=-1"], "sampling.temperature must be >= 0, got -1"),
    ("evaluate", ["backend=openai", "backend.concurrency=0"], "backend.concurrency must be >= 1, got 0"),
    ("evaluate", ["tabular.C=0"], "tabular.C must be > 0, got 0"),
    ("evaluate", ["backend=openai", "backend.base_url=https://api.example.com/v1"],
     "https://api.example.com/v1 is not on this machine: sending EHR text to a remote server breaks the MIMIC-IV"),
    ("synthesize", ["pipeline=reasoning", "synthesis.writer.kind=llm", "backend@synthesis.writer.backend=openai",
                    "synthesis.writer.backend.base_url=http://10.1.2.3:8000/v1"],
     "http://10.1.2.3:8000/v1 is not on this machine: sending EHR text to a remote server breaks the MIMIC-IV data use "
     "agreement (no sharing with third parties) unless that server is yours to use for it; set "
     "synthesis.allow_remote=true to allow it"),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "overrides", "message"), CONFIG_CASES, ids=lambda v: str(v))
def test_a_setting_out_of_range_is_refused_with_its_key(entry, overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate(compose_config(entry, *overrides))
    assert message in str(caught.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as caught:
        validate(
            compose_config("train", "stage.micro_batch_size=0", "stage.grad_accum=0", "data.synthetic.n_patients=0")
        )
    lines = str(caught.value).splitlines()
    assert lines[0] == "3 invalid settings:" and len(lines) == 4
    with pytest.raises(ConfigError) as caught:
        validate(compose_config("train", "stage.grad_accum=0"))
    assert str(caught.value) == "invalid setting: stage.grad_accum must be >= 1, got 0"  # one problem, one line


@pytest.mark.slow
def test_the_shipped_configs_are_valid():
    for entry in ("train", "synthesize", "evaluate"):
        validate(compose_config(entry))
    for experiment in ("main", "ehr_r1_1.7b", "ehr_r1_8b", "ehr_r1_72b"):
        validate(compose_config("train", f"experiment={experiment}"))
    for hardware in ("cpu", "gpu", "ddp", "fsdp", "deepspeed_zero3", "slurm"):
        validate(compose_config("train", f"hardware={hardware}"))


def assert_one_message(result, message: str) -> None:
    """Exit code 1, the message on stderr's last line, and no traceback anywhere."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_the_entry_points_end_each_config_mistake_with_one_message(tmp_path):
    """Every case above through the real entry point, in a fresh process: rc 1, one message, no data written."""

    def run(case):
        entry, overrides, _ = case
        return run_entry_point(f"{entry}.py", f"data_root={tmp_path / 'data'}", *overrides, cwd=tmp_path, timeout=120)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, CONFIG_CASES))
    for (entry, overrides, message), result in zip(CONFIG_CASES, results, strict=True):
        assert_one_message(result, message)
        assert result.stderr.count("error:") == 1, (entry, overrides, result.stderr)
    assert not (tmp_path / "data").exists()  # refused before any work


@pytest.mark.slow
def test_an_unknown_option_value_is_one_message_from_hydra(tmp_path):
    result = run_entry_point("synthesize.py", "data.on_duplicates=dorp", cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Invalid value 'dorp'" in result.stderr and "error, drop, keep" in result.stderr


@pytest.mark.slow
def test_a_gpu_hardware_setting_on_a_machine_without_one_is_refused_before_any_work(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_entry_point("train.py", f"data_root={tmp_path / 'data'}", "hardware=gpu", cwd=tmp_path, timeout=300)
    assert_one_message(result, "hardware=gpu (accelerator=gpu) needs a CUDA GPU and torch sees none")
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_missing_model_directory_is_named_before_any_data_is_built(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_entry_point(
        "evaluate.py", f"data_root={tmp_path / 'data'}", f"model.path={missing}", cwd=tmp_path, timeout=300
    )
    assert_one_message(result, f"model.path: the model directory {missing} does not exist")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()
    result = run_entry_point("evaluate.py", f"train_run={tmp_path}", cwd=tmp_path, timeout=300)
    assert_one_message(result, f"train_run={tmp_path}: no finished stage")
    result = run_entry_point("train.py", f"resume={missing}", cwd=tmp_path, timeout=300)
    assert_one_message(result, f"resume={missing}: no resolved_config.yaml there")


@pytest.mark.slow
def test_a_run_evaluated_with_other_model_settings_is_one_message(tmp_path, model_dir):
    """evaluate.py train_run=<run> asks the run's weights as the run trained them, or refuses: another prompt
    budget or thinking switch would score another model than the run's."""
    from omegaconf import OmegaConf

    trained = compose_config("train", "model.max_input_tokens=384", "model.thinking_switch=suffix")
    OmegaConf.save(trained, tmp_path / "resolved_config.yaml", resolve=True)
    (tmp_path / "stages" / "1_rl").mkdir(parents=True)
    (tmp_path / "stages" / "1_rl" / "hf").symlink_to(model_dir)  # the run's weights, in its folder
    (tmp_path / "stages" / "1_rl" / "summary.json").write_text(f'{{"stage": "rl", "hf_dir": "{model_dir}"}}')
    result = run_entry_point("evaluate.py", f"train_run={tmp_path}", f"data_root={tmp_path}", cwd=tmp_path)
    assert_one_message(
        result,
        f"train_run={tmp_path} was trained with model.thinking_switch=suffix, model.max_input_tokens=384, not "
        "enable_thinking, 512: evaluate it with the settings it was trained with (model=tiny and the same overrides)",
    )
    assert not (tmp_path / "instructions").exists()  # refused before any data is built


def test_a_model_or_tokenizer_that_cannot_be_loaded_is_one_message(tmp_path):
    from ehrr1.errors import MissingInputError, ModelLoadError
    from ehrr1.models.factory import load_model
    from ehrr1.models.tokenizer import load_tokenizer

    with pytest.raises(MissingInputError, match=r"could not load a model from '.*/gone': no such directory$"):
        load_model(tmp_path / "gone")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"holding tokenizer files .*; \w+Error: ") as caught:
        load_tokenizer(tmp_path)
    assert "\n" not in str(caught.value)


def test_a_task_mix_file_with_a_bad_count_or_no_json_is_named(tmp_path):
    from ehrr1.tasks.select import load_data_config

    bad = tmp_path / "mix.json"
    bad.write_text(json.dumps({"labevents": 10, "Inpatient_Mortality": -3}))
    with pytest.raises(ConfigError, match=r"mix.json: \{'Inpatient_Mortality': -3\}: a count must be >= 1"):
        load_data_config(bad)
    bad.write_text("{labevents: 10")
    with pytest.raises(ConfigError, match="mix.json: not a readable JSON file"):
        load_data_config(bad)


def test_only_tasks_with_a_typo_or_outside_the_mix_is_refused_before_the_benchmark_is_built(tmp_path):
    from ehrr1.evaluation.evaluate import evaluate

    base = [f"data_root={tmp_path / 'data'}", f"model.path={tmp_path}", "task_mix=smoke"]
    with pytest.raises(ConfigError, match="only_tasks: no task 'labevent'; did you mean 'labevents'"):
        evaluate(compose_config("evaluate", *base, "only_tasks=[labevent]"))
    decision = [*base[:2], "task_mix=ehr_bench_decision_making", "only_tasks=[ICU_Stay_14day]"]
    with pytest.raises(ConfigError, match="only_tasks: 'ICU_Stay_14day' is not in task_mix ehr_bench_decision_making"):
        evaluate(compose_config("evaluate", *decision))
    assert not (tmp_path / "data").exists()


# ---- the environment: a full disk, permissions -------------------------------------------------------
def test_a_full_disk_or_a_denied_path_is_one_message_naming_the_path(capsys):
    assert environment_message(OSError(errno.ENOSPC, "No space left on device", "/data/x.parquet")) == (
        "no space left on the device (/data/x.parquet): free space or choose a writable location "
        "(data_root, run_dir, output_dir)"
    )
    assert environment_message(PermissionError(errno.EACCES, "Permission denied", "/ro/data")).startswith(
        "permission denied (/ro/data)"
    )
    assert environment_message(OSError(errno.EROFS, "Read-only file system", "/ro")).startswith("the file system is")
    assert environment_message(OSError(errno.ECONNREFUSED, "refused")) is None  # not the user's: a traceback
    a_file = Path(__file__)
    with pytest.raises(FileExistsError) as a_file_named:  # a folder asked for where a file is
        a_file.mkdir(parents=True, exist_ok=True)
    assert environment_message(a_file_named.value) == (
        f"a file stands where a folder of the path is needed ({a_file}): free space or choose a writable "
        "location (data_root, run_dir, output_dir)"
    )
    with pytest.raises(NotADirectoryError) as one_below:
        (a_file / "a").mkdir(parents=True, exist_ok=True)
    message = environment_message(one_below.value)
    assert message.startswith(f"a file stands where a folder of the path is needed ({a_file / 'a'})")
    assert environment_message(FileExistsError(errno.EEXIST, "File exists", str(a_file.parent))) is None

    @report_user_errors
    def main(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/timelines/shard-0.parquet")

    with pytest.raises(SystemExit) as caught:
        main({})
    assert caught.value.code == 1
    assert capsys.readouterr().err.startswith("error: no space left on the device (/data/timelines/shard-0.parquet)")


def test_an_output_in_a_folder_that_takes_no_files_is_one_message_naming_it():
    """/proc exists but refuses new files (ENOENT, not EACCES): the output and the fix are named."""
    expected = r"cannot create files in /proc \(for /proc/ehrr1-output\): choose a writable location"
    with pytest.raises(UserError, match=expected), locked("/proc/ehrr1-output"):
        pass


def test_debug_or_hydra_full_error_shows_the_traceback_and_our_bugs_always_do(monkeypatch, capsys):
    from omegaconf import OmegaConf

    @report_user_errors
    def main(cfg):
        raise ConfigError("stage.grad_accum must be >= 1, got 0")

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit):
        main(OmegaConf.create({"debug": False}))
    assert capsys.readouterr().err == "error: stage.grad_accum must be >= 1, got 0\n"
    with pytest.raises(ConfigError):
        main(OmegaConf.create({"debug": True}))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):
        main(OmegaConf.create({"debug": False}))

    @report_user_errors
    def buggy(cfg):
        raise KeyError("ours")

    monkeypatch.delenv("HYDRA_FULL_ERROR")
    with pytest.raises(KeyError):
        buggy(OmegaConf.create({}))


@pytest.mark.slow
def test_running_out_of_file_space_ends_with_the_path_and_leaves_no_temporary(tmp_path):
    """A file-size limit (what a full disk looks like to a writer) while the cohort is written."""
    import resource
    import signal
    import subprocess
    import sys

    from tests.support import REPO

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    data = tmp_path / "data"
    args = [f"data_root={data}", "data.synthetic.n_patients=200", "pipeline=timelines", "progress=false"]
    result = subprocess.run(
        [sys.executable, str(REPO / "synthesize.py"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=limit,
    )  # fmt: skip
    assert_one_message(result, "error: file too large for this file system or the process's file-size limit (")
    assert f"({data / 'mimic-iv-synthetic' / 'n200_seed0'})" in result.stderr.splitlines()[-1]
    assert not list(data.rglob("*.tmp")), list(data.rglob("*"))


# ---- data sanity: repeated keys, empty tables ------------------------------------------------------------
def _rewrite(path: Path, edit) -> None:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.writelines(edit(lines))


@pytest.fixture
def cohort_copy(tiny_cohort, tmp_path) -> Path:
    root = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, root)
    return root


def _build(root: Path, out: Path, **policies):
    from ehrr1.data.build import build_timelines
    from ehrr1.data.reader import MimicReader

    return build_timelines(MimicReader(modules_of(root), **policies), out, progress=False)


def test_a_repeated_admission_is_an_error_naming_the_file_and_lines(cohort_copy, tmp_path):
    from ehrr1.data.reader import MimicSchemaError

    admissions = cohort_copy / "hosp" / "admissions.csv.gz"
    _rewrite(admissions, lambda lines: [*lines[:3], lines[2], *lines[3:]])  # data row 2 again, as line 4
    hadm = lines_of(admissions)[2].split(",")[1]
    with pytest.raises(MimicSchemaError) as caught:
        _build(cohort_copy, tmp_path / "timelines", empty_tables="warn")
    assert str(caught.value).startswith(
        f"file {admissions}: 1 row(s) repeat a hadm_id of table 'admissions', e.g. hadm_id {hadm} on lines 3, 4 "
        "(the same row repeated); each would count every record joined to it again."
    )
    assert "data.on_duplicates=drop" in str(caught.value)


def lines_of(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.mark.slow
def test_repeated_keys_dropped_give_the_clean_timelines_and_are_counted(tiny_cohort, cohort_copy, tmp_path):
    from ehrr1.data.timeline import TimelineStore

    clean = _build(tiny_cohort, tmp_path / "clean", empty_tables="warn")
    _rewrite(cohort_copy / "hosp" / "admissions.csv.gz", lambda lines: [*lines, lines[1], lines[2]])
    dropped = _build(cohort_copy, tmp_path / "dropped", empty_tables="warn", on_duplicates="drop")
    kept = _build(cohort_copy, tmp_path / "kept", empty_tables="warn", on_duplicates="keep")
    assert dropped["repeated_keys"] == {"policy": "drop", "rows": {"admissions": 2}}
    assert kept["repeated_keys"] == {"policy": "keep", "rows": {"admissions": 2}}
    assert dropped["per_event_type"] == clean["per_event_type"]
    assert kept["n_records"] > clean["n_records"]  # what keep means: the admission and its joins twice

    def events(root):
        return [(t.subject_id, [e.event_type for e in t.events]) for t in TimelineStore(root)]

    assert events(tmp_path / "dropped") == events(tmp_path / "clean")


def test_a_header_only_required_table_is_an_error_or_a_counted_absence(cohort_copy, tmp_path):
    from ehrr1.data.reader import MimicSchemaError

    labevents = cohort_copy / "hosp" / "labevents.csv.gz"
    _rewrite(labevents, lambda lines: lines[:1])
    with pytest.raises(MimicSchemaError, match=r"labevents.csv.gz has a header but no rows: table 'labevents' is "
                                               r"required \(data.empty_tables=warn accepts it"):  # fmt: skip
        _build(cohort_copy, tmp_path / "a")
    manifest = _build(cohort_copy, tmp_path / "b", empty_tables="warn")
    assert "labevents" in manifest["empty_tables"] and "labevents" not in manifest["per_event_type"]
    _rewrite(cohort_copy / "hosp" / "admissions.csv.gz", lambda lines: lines[:1])
    with pytest.raises(MimicSchemaError, match=r"admissions.csv.gz has a header but no rows: table 'admissions' is "
                                               r"required$"):  # fmt: skip
        _build(cohort_copy, tmp_path / "c", empty_tables="warn")


@pytest.mark.slow
def test_data_mistakes_end_the_entry_points_with_one_message(tiny_cohort, tmp_path):
    """Repeated keys, a header-only table, a mix file with a bad count, a task name typo: rc 1, one message."""
    data = [f"data_root={tmp_path / 'data'}", "data=mimic_iv", "data.empty_tables=warn", "progress=false"]
    cases = []
    dup = tmp_path / "dup"
    shutil.copytree(tiny_cohort, dup)
    _rewrite(dup / "hosp" / "admissions.csv.gz", lambda lines: [*lines, lines[1]])
    cases.append((["pipeline=timelines", f"data.root={dup}"], "row(s) repeat a hadm_id of table 'admissions'"))
    empty = tmp_path / "empty"
    shutil.copytree(tiny_cohort, empty)
    _rewrite(empty / "hosp" / "patients.csv.gz", lambda lines: lines[:1])
    cases.append((["pipeline=timelines", f"data.root={empty}"], "header but no rows: table 'patients' is required"))
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"labevents": -4}))
    cases.append(([f"data.root={tiny_cohort}", f"task_mix.file={mix}"], "{'labevents': -4}: a count must be >= 1"))

    def run(case):
        return run_entry_point("synthesize.py", *data, *case[0], cwd=tmp_path, timeout=300)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, cases))
    for (_, message), result in zip(cases, results, strict=True):
        assert_one_message(result, message)
    fresh = tmp_path / "fresh"
    unknown = run_entry_point("synthesize.py", *data[1:], f"data_root={fresh}", f"data.root={tiny_cohort}",
                              "+task_mix.tasks.labevent=5", cwd=tmp_path, timeout=300)  # fmt: skip
    assert_one_message(unknown, "unknown task 'labevent'. Did you mean labevents")
    assert not fresh.exists()  # refused before any data is built
    typo = run_entry_point("evaluate.py", *data, f"data.root={tiny_cohort}", f"model.path={tmp_path}",
                           "only_tasks=[Inpatient_Mortalty]", cwd=tmp_path, timeout=300)  # fmt: skip
    assert_one_message(typo, "only_tasks: no task 'Inpatient_Mortalty'; did you mean 'Inpatient_Mortality'?")


# ---- reports: non-finite scores, small samples -------------------------------------------------------
def _risk_rows(labels: list[str], scores: list[float], task: str = "T") -> list[dict]:
    return [
        {"task": task, "kind": "risk", "metric": "auroc", "target": [label], "output": "yes", "score": 0.0,
         "p_yes": p, "finish_reason": "stop", "valid": True, "error": ""}
        for label, p in zip(labels, scores, strict=True)
    ]  # fmt: skip


def test_non_finite_scores_are_counted_and_left_out_never_written_as_invalid_json(tmp_path):
    from ehrr1.evaluation.report import aggregate, markdown, write_reports

    labels = ["yes", "no"] * 20
    rows = _risk_rows(labels, [0.9 if label == "yes" else 0.1 for label in labels])
    rows[0]["p_yes"] = float("nan")  # what an older results.jsonl may hold
    rows += _risk_rows(["yes", "no"], [float("nan"), float("inf")], task="Broken")
    report = aggregate(rows, n_boot=50)
    (t,) = report["tasks"]
    assert t["task"] == "T" and t["n"] == 39 and t["nonfinite"] == 1 and t["value"] == 1.0
    assert report["nonfinite"] == {"samples": 3, "tasks_unscored": ["Broken"]}
    assert "3 samples had a non-finite score" in markdown(report) and "unscored tasks: Broken" in markdown(report)
    write_reports(report, tmp_path)
    json.loads((tmp_path / "report.json").read_text(), parse_constant=pytest.fail)  # no NaN / Infinity


def test_a_model_that_outputs_nan_is_scored_without_nan_in_results(model_dir, tmp_path):
    import torch

    from ehrr1.config import SamplingParams, ThinkingSwitch
    from ehrr1.evaluation.harness import build_requests, run
    from ehrr1.evaluation.report import aggregate
    from ehrr1.models.factory import load_model
    from ehrr1.models.tokenizer import load_tokenizer

    broken = tmp_path / "broken"
    model = load_model(model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    model.save_pretrained(broken)
    load_tokenizer(model_dir).save_pretrained(broken)
    records = [{"id": str(i), "task": "Inpatient_Mortality", "kind": "risk", "metric": "auroc",
                "target": ["yes" if i % 2 else "no"], "messages": [{"role": "user", "content": f"EHR {i}"}]}
               for i in range(4)]  # fmt: skip
    backend = support_backend("hf", broken, device="cpu")
    sampling = SamplingParams(max_tokens=4)
    requests = build_requests(records, backend.tokenizer, "m", sampling, False, ThinkingSwitch.enable_thinking)
    rows = run(requests, backend, sampling, tmp_path / "results.jsonl", progress=False)
    for line in (tmp_path / "results.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=pytest.fail)
    assert all(r["nonfinite"] and r["p_yes"] is None for r in rows)
    report = aggregate(rows, n_boot=20)
    assert report["tasks"] == [] and report["nonfinite"] == {"samples": 4, "tasks_unscored": ["Inpatient_Mortality"]}


def test_small_samples_are_flagged_in_every_report(tmp_path):
    from ehrr1.evaluation.report import aggregate, markdown, print_report

    rows = _risk_rows(["yes", "no"], [0.9, 0.1], task="Tiny") + _risk_rows(["yes", "no"] * 15, [0.5] * 30, task="Ok")
    report = aggregate(rows, n_boot=50)
    flags = {t["task"]: t["small_n"] for t in report["tasks"]}
    assert flags == {"Tiny": True, "Ok": False}
    text = markdown(report)
    assert "| Tiny * |" in text and "| Ok |" in text and "(1 with small n, marked *)" in text
    assert "* small n: a risk task with fewer than 10 positive or negative samples" in text
    from rich.console import Console

    console = Console(record=True, width=200)
    print_report(report, "t", console)
    shown = console.export_text()
    assert "Tiny *" in shown and "small n" in shown


# ---- privacy: a proxy is a remote server ---------------------------------------------------------------
def test_a_local_server_is_reached_directly_even_with_a_proxy_configured(model_dir, monkeypatch):
    """HTTP(S)_PROXY pointing at a listener: the EHR text must go to the local server and never to it."""
    from ehrr1.backends import ONE_TOKEN_YES_NO
    from tests.support import backend as support_backend
    from tests.support import one_token_server

    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)
    proxy.settimeout(0.2)
    reached: list[bytes] = []

    def listen():
        while not stop.is_set():
            try:
                conn, _ = proxy.accept()
            except OSError:
                continue
            conn.settimeout(1)
            try:
                reached.append(conn.recv(65536))
            except OSError:
                reached.append(b"")
            conn.close()

    stop = threading.Event()
    threading.Thread(target=listen, daemon=True).start()
    proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        with one_token_server() as url:
            backend = support_backend("openai", model_dir, base_url=url, max_retries=0)
            (answer,) = backend.generate(["Patient: sodium 131"], ONE_TOKEN_YES_NO, [True])
            time.sleep(0.5)  # what reached the listener has been recorded
            assert reached == []
            opted_in = support_backend("openai", model_dir, base_url=url, max_retries=0, allow_remote=True)
            (through_proxy,) = opted_in.generate(["x"], ONE_TOKEN_YES_NO, [True])
    finally:
        stop.set()
        proxy.close()
    assert answer.text == "no" and answer.error == ""
    assert len(reached) == 1 and b"Patient: sodium 131" not in reached[0]  # the opted-in request went there
    assert through_proxy.finish_reason == "error"


def test_a_remote_server_is_refused_with_one_message():
    from ehrr1.backends.openai import refuse_remote

    with pytest.raises(UserError, match="https://api.example.com/v1 is not on this machine: .*set backend.allow"):
        refuse_remote("https://api.example.com/v1", "backend.allow_remote")
