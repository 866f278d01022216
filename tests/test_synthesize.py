"""synthesize.py: typed config that fails early, and the main job end to end on a small cohort."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from ehrr1.artefacts.graph import synthesize
from ehrr1.config import register_configs
from ehrr1.data.timeline import TimelineStore
from tests.support import SMALL_DATA, run_entry_point

REPO = Path(__file__).resolve().parents[1]
register_configs()


def compose_synthesize(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="synthesize", overrides=list(overrides))


def test_default_config_composes_with_the_synthetic_data():
    cfg = compose_synthesize()
    assert cfg.data.name == "synthetic_n2000_seed0"
    assert cfg.timelines.dir == "./data/timelines/synthetic_n2000_seed0"
    assert cfg.data.modules.ed == "./data/mimic-iv-synthetic/n2000_seed0/ed"


def test_unknown_key_fails_naming_it():
    with pytest.raises(ConfigCompositionException) as info:
        compose_synthesize("timelines.patients_per_shrd=10")
    assert "patients_per_shrd" in str(info.value.__cause__ or info.value)


def test_unknown_data_option_lists_the_choices():
    with pytest.raises(ConfigCompositionException, match=r"(?s)data/mimic4.*mimic_iv.*synthetic"):
        compose_synthesize("data=mimic4")


def test_wrong_type_and_unknown_pipeline_fail_early():
    with pytest.raises((ConfigCompositionException, ValidationError)) as info:
        compose_synthesize("data.synthetic.n_patients=many")
    assert "n_patients" in str(info.value) + str(info.value.__cause__)
    with pytest.raises(ConfigCompositionException) as info:
        compose_synthesize("pipeline=everything")
    assert "timelines" in str(info.value.__cause__)


def test_mimic_iv_requires_its_root():
    cfg = compose_synthesize("data=mimic_iv")
    with pytest.raises(Exception, match="data.root"):
        OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True)


@pytest.mark.slow
def test_main_job_builds_cohort_and_timelines(tmp_path, capsys):
    cfg = compose_synthesize(f"data_root={tmp_path}", "data.synthetic.n_patients=40", "progress=false")
    result = synthesize(cfg)
    out = capsys.readouterr().out
    assert "Timelines: 40 patients" in out and "Labotary Test Events" in out
    store = TimelineStore(result["timelines_dir"])
    assert len(store.subjects()) == 40 and result["cohort"]["rows"]["patients"] == 40
    again = synthesize(cfg)  # a second run reuses everything
    assert again["timelines"]["fingerprint"] == result["timelines"]["fingerprint"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_entry_point("synthesize.py", *args, cwd=cwd, timeout=300)


def test_cli_help_and_cfg_job(tmp_path):
    help_text = run_cli("--help", cwd=tmp_path)
    assert help_text.returncode == 0 and "data: mimic_iv, synthetic" in help_text.stdout
    job = run_cli("--cfg", "job", "data.synthetic.n_patients=10", cwd=tmp_path)
    assert job.returncode == 0 and "n_patients: 10" in job.stdout


@pytest.mark.slow
def test_cli_run_stores_its_resolved_config(tmp_path):
    done = run_cli(
        f"data_root={tmp_path / 'data'}",
        "data.synthetic.n_patients=15",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    resolved = OmegaConf.load(tmp_path / "run" / "resolved_config.yaml")
    assert resolved.timelines.dir == f"{tmp_path / 'data'}/timelines/synthetic_n15_seed0"
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()
    rerun = run_cli(
        "--config-path",
        str(tmp_path / "run"),
        "--config-name",
        "resolved_config",
        f"hydra.run.dir={tmp_path / 'rerun'}",
        cwd=tmp_path,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "Timelines: 15 patients" in rerun.stdout


def test_instructions_pipeline_builds_the_smoke_mix(small_data_root, capsys):
    cfg = compose_synthesize(f"data_root={small_data_root}", *SMALL_DATA)
    result = synthesize(cfg)  # built by the fixture: this run reuses every artefact
    out = capsys.readouterr().out
    assert "Instruction data (" in out
    export = Path(result["export_dir"])
    assert {p.name for p in export.iterdir()} >= {"train.jsonl", "val.jsonl", "test.jsonl", "stats.json", "stats.md"}
    assert sum(result["instructions"]["totals"].values()) > 100
    assert (small_data_root / "models" / "tiny" / "synthetic_n60_seed0" / "tokenizer" / "tokenizer.json").exists()


@pytest.mark.slow
def test_data_built_with_other_settings_is_rebuilt_naming_what_changed(small_data_root, tmp_path, caplog):
    from ehrr1.artefacts.instructions import ensure_instructions

    caplog.set_level(logging.INFO, logger="ehrr1.utils")

    def labevents_train(*overrides: str) -> tuple[int, float]:
        cfg = compose_synthesize(f"data_root={small_data_root}", *SMALL_DATA, f"export.dir={tmp_path}", *overrides)
        path = ensure_instructions(cfg, "train")
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return sum(r["task"] == "labevents" for r in rows), path.stat().st_mtime_ns

    first, built = labevents_train()
    assert first == 6  # the smoke mix: 6 per task
    caplog.clear()
    assert labevents_train() == (first, built)  # the same settings: reused as it is
    assert "rebuilding" not in caplog.text
    fewer, _ = labevents_train("task_mix.tasks.labevents=1")
    assert fewer == 1 and "built with other settings (task_mix.tasks.labevents): rebuilding it" in caplog.text
    caplog.clear()
    labevents_train("selection.split.train=0.7", "selection.split.test=0.2", "task_mix.tasks.labevents=1")
    assert "(selection.split.test, selection.split.train)" in caplog.text
    (tmp_path / "built_with.json").unlink()  # data of an earlier version, which recorded nothing
    caplog.clear()
    assert labevents_train()[0] == first and "((unrecorded)): rebuilding it" in caplog.text


@pytest.mark.slow
def test_a_rebuild_leaves_no_split_file_of_an_earlier_build(small_data_root, tmp_path):
    """Splits a rebuild does not write are removed, never served as if built with its settings; a split the
    settings do not build is refused by name."""
    from ehrr1.artefacts.instructions import ensure_instructions
    from ehrr1.errors import ConfigError

    def config(*overrides: str):
        return compose_synthesize(f"data_root={small_data_root}", *SMALL_DATA, f"export.dir={tmp_path}", *overrides)

    ensure_instructions(config(), "test")
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    fewer = config("task_mix.splits=[train,val]", "selection.seed=1")
    ensure_instructions(fewer, "train")
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["train.jsonl", "val.jsonl"]  # test: seed 0's
    with pytest.raises(ConfigError, match=r"split test: not among task_mix.splits=\['train', 'val'\]"):
        ensure_instructions(fewer, "test")


@pytest.mark.slow
def test_a_task_mix_file_edited_in_place_rebuilds_the_data(small_data_root, tmp_path):
    """What a path names decides the data too: a task-mix file edited in place (same size, same second)."""
    from ehrr1.artefacts.instructions import ensure_instructions

    counts = tmp_path / "mix.json"
    counts.write_text('{"labevents": 2, "Inpatient_Mortality": 2}')
    cfg = compose_synthesize(
        f"data_root={small_data_root}", *SMALL_DATA, f"export.dir={tmp_path / 'out'}", f"task_mix.file={counts}"
    )

    def labevents() -> int:
        return sum(json.loads(line)["task"] == "labevents" for line in ensure_instructions(cfg, "train").open())

    assert labevents() == 2
    counts.write_text('{"labevents": 1, "Inpatient_Mortality": 2}')
    assert labevents() == 1


def test_unknown_task_in_a_mix_fails_before_any_work(tmp_path):
    cfg = compose_synthesize(f"data_root={tmp_path}", "+task_mix.tasks.lab_events=3")
    with pytest.raises(Exception, match=r"unknown task 'lab_events'.*Did you mean labevents"):
        synthesize(cfg)
    assert not (tmp_path / "mimic-iv-synthetic").exists()


def test_the_config_schema_imports_no_implementation():
    """--help and --cfg job stay fast: the schema pulls in none of the heavy libraries the work needs."""
    import subprocess
    import sys

    heavy = ("torch", "transformers", "tokenizers", "lightning", "duckdb", "pyarrow", "pandas", "sklearn")
    code = f"import sys, ehrr1.config; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_two_runs_on_one_empty_data_folder_build_it_once_and_both_succeed(tmp_path):
    """Two real processes start on one empty folder: one builds, the other waits on the lock (naming the
    holder), then reuses what was built; the files equal a lone run's."""
    import sys

    def command(root: Path, run: str) -> list[str]:
        return [
            sys.executable, str(REPO / "synthesize.py"), f"data_root={root}", "pipeline=timelines",
            "data.synthetic.n_patients=30", "progress=false", f"hydra.run.dir={tmp_path / 'runs' / run}",
        ]  # fmt: skip

    shared, alone = tmp_path / "shared", tmp_path / "alone"
    runs = [
        subprocess.Popen(command(shared, f"run{i}"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert any("is being built by pid" in out and "waiting for it to finish" in out for out in outputs), outputs
    lone = subprocess.run(command(alone, "alone"), capture_output=True, text=True, timeout=600)
    assert lone.returncode == 0, lone.stderr
    files = sorted(p.relative_to(alone) for p in alone.rglob("*") if p.is_file() and p.suffix != ".lock")
    assert files == sorted(p.relative_to(shared) for p in shared.rglob("*") if p.is_file() and p.suffix != ".lock")
    for name in files:
        if name.suffix in (".parquet", ".gz"):
            assert (shared / name).read_bytes() == (alone / name).read_bytes(), name
    assert not list(shared.rglob("*.tmp")), "a temporary file or folder was left behind"


@pytest.mark.slow
def test_shard_range_jobs_and_a_join_equal_one_job(tmp_path):
    """The multi-machine recipe with Hydra's basic launcher: index and export as one job per shard range
    (``-m shards=[0,2],[2,3]``), then a run without shards joins; the data equal a single job's."""
    common = [*SMALL_DATA, "timelines.patients_per_shard=20", "index.num_workers=1", "export.num_workers=1"]

    def synthesize_cli(root: Path, *args: str):
        flags = [a for a in args if a == "-m"]
        done = run_entry_point("synthesize.py", *flags, f"data_root={root}", *common, *args[len(flags) :], cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    one, jobs = tmp_path / "one", tmp_path / "jobs"
    synthesize_cli(one, "hydra.run.dir=runs/one")
    synthesize_cli(jobs, "pipeline=timelines", "hydra.run.dir=runs/timelines")
    out = synthesize_cli(jobs, "-m", "pipeline=index", "shards=[0,2],[2,3]", "hydra.sweep.dir=runs/index")
    assert "(the other shard ranges are still to run)" in out and out.count("task(s) complete") == 2
    out = synthesize_cli(jobs, "-m", "shards=[0,2],[2,3]", "hydra.sweep.dir=runs/export")
    assert "units done" in out and not list(jobs.glob("instructions/**/train.jsonl"))
    synthesize_cli(jobs, "hydra.run.dir=runs/join")
    exported = sorted(p.relative_to(one) for p in one.glob("instructions/**/*.jsonl"))
    assert len(exported) == 3
    for name in exported:
        assert (jobs / name).read_bytes() == (one / name).read_bytes(), name
    assert json.loads((jobs / exported[0]).read_text().splitlines()[0])["id"]
    bad = run_entry_point("synthesize.py", f"data_root={jobs}", *common, "shards=[2,9]", cwd=tmp_path)
    assert bad.returncode == 1 and "shards=[2, 9]: expected [first, stop) with 0 <= first < stop <= 3" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_export_parts_of_other_task_definitions_or_another_tokenizer_are_not_resumed(tokenizer):
    """An interrupted export's parts are kept only for the same tasks as defined then and the same tokenizer."""
    from dataclasses import replace

    import pyarrow as pa

    from ehrr1.tasks.export import _export_key
    from ehrr1.tasks.prompt import PromptBuilder
    from ehrr1.tasks.registry import TaskRegistry

    selected = pa.table({"subject_id": [1, 2], "event": [3, 4]})
    registry, edited = TaskRegistry(), TaskRegistry()
    edited.tasks["labevents"] = replace(edited["labevents"], instruction="Which labs next?")
    with_budget = PromptBuilder(tokenizer, 300)
    key = _export_key(selected, 100, ["labevents"], with_budget, registry)
    assert key == _export_key(selected, 100, ["labevents"], PromptBuilder(tokenizer, 300), TaskRegistry())
    assert key != _export_key(selected, 100, ["labevents"], with_budget, edited)
    other = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["<extra>"])
    assert key != _export_key(selected, 100, ["labevents"], PromptBuilder(other, 300), registry)
