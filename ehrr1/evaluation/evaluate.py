"""What ``evaluate.py`` runs: pick the model, build the requests, run the harness, write the reports."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ehrr1.artefacts.graph import built, check_outside_artefacts
from ehrr1.artefacts.index import check_task_mix, task_mix_counts
from ehrr1.artefacts.instructions import patient_split
from ehrr1.backends import SamplingParams, build_backend
from ehrr1.config import (
    Baseline,
    BenchSource,
    HFBackendConfig,
    ModelConfig,
    TabularSettings,
    did_you_mean,
    settings_of,
)
from ehrr1.errors import ConfigError, FailedWorkError, MissingInputError, UserError, note_progress, shown
from ehrr1.evaluation.candidates import candidate_pools, candidates_for, with_candidates
from ehrr1.evaluation.harness import build_requests, failed, iter_bench, read_bench, run
from ehrr1.evaluation.plots import write_plots
from ehrr1.evaluation.released import iter_released, read_released, released_path
from ehrr1.evaluation.report import aggregate, most_frequent_answers, print_report, write_reports
from ehrr1.evaluation.tabular import TabularBaseline
from ehrr1.models.tokenizer import missing_local
from ehrr1.run_config import load_run_config, save_run_config
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.utils import BUILT_WITH, atomic_write_text, digest, instantiate, locked, read_json, read_user_text

log = logging.getLogger(__name__)


def trained_stages(train_run: str) -> list[dict[str, Any]]:
    """The summaries of a training run's finished stages, in order, each ``hf_dir`` the weights in this run's
    own folder (a copied or moved run's, not those of the folder it was trained in)."""
    summaries = sorted(Path(train_run).glob("stages/*/summary.json"), key=lambda p: int(p.parent.name.split("_")[0]))
    trained = []
    for path in summaries:
        summary = json.loads(read_user_text(path, "train_run"))
        if summary.get("hf_dir"):
            trained.append({**summary, "hf_dir": str(path.parent / "hf")})
    if not trained:
        raise MissingInputError(f"train_run={train_run}: no finished stage (stages/*/summary.json with hf_dir)")
    weights = Path(trained[-1]["hf_dir"])
    if not (weights / "config.json").is_file():
        raise MissingInputError(
            f"train_run={train_run}: stage {trained[-1]['stage']} is marked finished but its weights are not in "
            f"{weights} (config.json missing): copy the run with its stages/*/hf folders, or train the stage again "
            f"(remove {weights.parent / 'summary.json'} and resume={train_run})"
        )
    return trained


def check_unseen_patients(train_run: str, bench: Path, split: str) -> None:
    """Refuse to score a training run on a split whose patients were assigned otherwise than those of the data
    its stages trained on: its patients may be training patients. Other settings (tasks, prompts) may differ."""
    evaluated = patient_split(read_json(bench.parent / BUILT_WITH))
    for stage in trained_stages(train_run):
        data = stage.get("trained_on") or {}
        if data.get("settings") is None:
            log.warning(
                "train_run=%s: stage %s trained on %s, which %s: nothing shows that none of its patients is in "
                "the %s split", train_run, stage["stage"], data.get("dir", "data"),
                "ehrr1 did not build" if data else "its summary does not describe", split,
            )  # fmt: skip
            continue
        trained = patient_split(data["settings"])
        differ = [key for key in trained if trained[key] != evaluated[key]]
        if differ:
            had = " ".join(f"{key}={json.dumps(trained[key])}" for key in differ)
            now = " ".join(f"{key}={json.dumps(evaluated[key])}" for key in differ)
            raise ConfigError(
                f"train_run={train_run}: stage {stage['stage']} trained on patients split with {had}, but the "
                f"{split} split at {bench.parent} was split with {now}: some of its patients may be ones the "
                f"model trained on. Evaluate with the run's settings ({had}), or train anew"
            )


RUN_MODEL_KEYS = ("name", "dtype", "thinking_switch", "max_input_tokens")  # how a run's weights load and are asked


def check_run_model(cfg: DictConfig) -> None:
    """Refuse to evaluate a training run's weights with model settings other than those it trained with (another
    prompt budget, thinking switch or dtype would score another model than the run's): name the run's."""
    stored = Path(cfg.train_run) / "resolved_config.yaml"
    if not stored.exists():
        return
    trained = load_run_config(stored, "train_run").model
    ours = cast(dict[str, Any], OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True))
    differ = [k for k in RUN_MODEL_KEYS if trained.get(k) != ours.get(k)]
    if differ:
        was = ", ".join(f"model.{k}={trained.get(k)}" for k in differ)
        now = ", ".join(f"{ours.get(k)}" for k in differ)
        raise ConfigError(
            f"train_run={cfg.train_run} was trained with {was}, not {now}: evaluate it with the settings it "
            f"was trained with (model={trained.get('name')} and the same overrides)"
        )


def model_to_evaluate(cfg: DictConfig) -> str:
    """The weights: the last trained stage of ``train_run``, else ``model.path``."""
    if cfg.train_run:
        return trained_stages(cfg.train_run)[-1]["hf_dir"]
    if cfg.model.path:
        return str(cfg.model.path)
    raise ConfigError("which model? set model.path=<HF directory or hub id> or train_run=<train.py run directory>")


def weights_fingerprint(model_id: str) -> str | None:
    """What identifies the weights at a local path: each file's name, size and modification time (hashing
    gigabytes would take minutes), so weights written again at the same path are other weights. None for a
    hub id or a served name (no local files)."""
    path = Path(model_id)
    if not path.is_dir():
        return None
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return digest([[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files])


def model_identity(model_id: str, backend: DictConfig, model: ModelConfig) -> str:
    """The model as it generates, for the results' resume keys: its weights (their fingerprint where they are
    local files), the backend that runs them and how they load (dtype, attention), so results of other weights
    at the same path, another backend or dtype are never taken for these."""
    runs = {"backend": backend._target_, "served_model": backend.get("served_model")}
    loads = {"dtype": model.dtype.value, "attention": model.attn_implementation.value}
    return f"{model_id}#{digest([runs, loads, weights_fingerprint(model_id)])}"


def output_directory(cfg: DictConfig, model_id: str) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id.strip("/"))[-60:]
    root = Path("outputs") / "evaluate" / f"{slug}-{digest(model_id)[:8]}"
    if cfg.bench.source == BenchSource.released.value:
        path = released_path(cfg.bench.path).resolve()
        return root / f"released-{path.stem}-{digest(str(path))[:8]}"
    return root / cfg.task_mix.name / cfg.split


REFERENCE_SEQUENCE_LIMIT = 16_000  # test.py's Local_Model(max_seq_len=16000)


def reference_prompt_limit(model_id: str, max_new_tokens: int) -> int | None:
    """The reference's prompt budget: min(the model's position limit, 16,000) minus the new tokens; None when
    the model's config cannot be read here (a hub id offline, a served model)."""
    from transformers import AutoConfig

    try:
        positions = getattr(AutoConfig.from_pretrained(model_id), "max_position_embeddings", None)
    except (OSError, ValueError):
        return None
    limit = min(positions or REFERENCE_SEQUENCE_LIMIT, REFERENCE_SEQUENCE_LIMIT) - max_new_tokens
    return limit if limit > 0 else None


TrainRecords = Callable[[], Iterator[InstructionRecord]]


def check_only_tasks(cfg: DictConfig, only: list[str]) -> None:
    """``only_tasks`` names tasks that exist and, for a built benchmark, are in its task mix."""
    names = TaskRegistry(cfg.tasks.extra).names
    in_mix = (
        names if cfg.bench.source == BenchSource.released.value else [t for t in names if t in task_mix_counts(cfg)]
    )
    for task in only:
        if task not in names:
            raise ConfigError(f"only_tasks: no task {shown(task)}; {did_you_mean(task, names)}")
        if task not in in_mix:
            raise ConfigError(
                f"only_tasks: {shown(task)} is not in task_mix {cfg.task_mix.name}; {did_you_mean(task, in_mix)}"
            )


def bench_records(cfg: DictConfig) -> tuple[str, list[InstructionRecord], TrainRecords]:
    """(what was read, the records to score, the training records: read afresh, a record at a time, on each
    call, since EHR-Ins is millions of records) of ``cfg.bench``."""
    only = list(cfg.only_tasks) if cfg.only_tasks else None
    if only:
        check_only_tasks(cfg, only)
    if cfg.bench.source == BenchSource.released.value:
        registry = TaskRegistry(cfg.tasks.extra)
        records = read_released(cfg.bench.path, registry, only, cfg.limit)
        train_path = cfg.bench.train_path
        return (
            str(cfg.bench.path),
            records,
            lambda: iter_released(train_path, registry, key="bench.train_path") if train_path else iter(()),
        )
    check_task_mix(cfg)
    bench = built("instructions", cfg, cfg.split)
    if cfg.train_run:
        check_unseen_patients(cfg.train_run, bench, cfg.split)
    train = Path(cfg.export.dir) / "train.jsonl"
    return str(bench), read_bench(bench, only, cfg.limit), lambda: iter_bench(train) if train.exists() else iter(())


def frequent_answers(baselines: set[Baseline], train: TrainRecords) -> dict[str, str] | None:
    """The most-frequent-answer baseline's answers, when it is one of ``baselines``."""
    return most_frequent_answers(train()) if Baseline.most_frequent in baselines else None


def tabular_rows(
    cfg: DictConfig, records: list[InstructionRecord], train: TrainRecords, out: Path
) -> list[dict[str, Any]]:
    """The tabular baseline's rows on ``records``, fitted on the training records of their tasks; also
    written to ``<out>/tabular.jsonl``."""
    baseline = TabularBaseline(settings_of(TabularSettings, cfg.tabular)).fit(train(), {r["task"] for r in records})
    rows = baseline.predict(records)
    if not rows:
        log.warning("tabular baseline: no training records of these tasks, so no tabular scores")
    atomic_write_text(out / "tabular.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def after_training(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Evaluate a training run's last trained stage as ``evaluate.py train_run=<run_dir>`` would, with the run's
    data and model settings, its tracker and ``cfg.evaluate``'s settings (the rest, the seed included, are
    evaluate.py's defaults)."""
    from ehrr1.config import DataPipelineConfig, EvaluateConfig, typed

    shared = {f: typed(cfg[f]) for f in DataPipelineConfig.__dataclass_fields__}
    settings = cfg.evaluate
    eval_cfg = OmegaConf.merge(  # a DictConfig: the structured schema's
        OmegaConf.structured(EvaluateConfig),
        shared,
        {
            "bench": {"source": "built"},
            "backend": HFBackendConfig(),
            "logger": typed(cfg.logger),  # the run's tracker: the scores go where its stages' curves went
            "sampling": {"max_tokens": settings.max_tokens},
            "thinking": settings.thinking,
            "batch_size": settings.batch_size,
            "limit": settings.limit,
            "split": settings.split,
            "train_run": str(run_dir),
            "output_dir": str(run_dir / "evaluation"),
        },
    )
    return evaluate(cast(DictConfig, eval_cfg))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """``evaluate.py``: the model (or the tabular baseline) scored into its output folder, which this process
    alone writes while it runs."""
    if cfg.backend._target_ is None:  # backend=tabular: no language model
        with output_folder(cfg, "tabular") as out:
            return evaluate_tabular(cfg, out)
    model_id = model_to_evaluate(cfg)
    if cfg.train_run:
        check_run_model(cfg)
    if missing_local(model_id):  # before any data is built
        key = "train_run" if cfg.train_run else "model.path"
        raise MissingInputError(f"{key}: the model directory {model_id} does not exist")
    with output_folder(cfg, model_id) as out:
        return evaluate_model(cfg, model_id, out)


@contextmanager
def output_folder(cfg: DictConfig, model_id: str) -> Iterator[Path]:
    """The evaluation's output folder (:func:`output_directory`), refused inside an artefact's folder and held by
    this process while the block runs."""
    out = output_directory(cfg, model_id)
    check_outside_artefacts(cfg, out, "output_dir")
    with locked(out, wait=False, key="output_dir"):
        yield out


def evaluate_model(cfg: DictConfig, model_id: str, out: Path) -> dict[str, Any]:
    """Generate (what ``results.jsonl`` does not hold yet), score and report the model ``model_id`` into ``out``."""
    bench, records, train = bench_records(cfg)
    baselines = {Baseline(b) for b in cfg.baselines}
    frequent = frequent_answers(baselines, train)
    originals = records
    if cfg.candidates_prompt:
        pools = candidate_pools(train())
        records = [with_candidates(r, candidates_for(r, pools, cfg.seed)) for r in records]
    model: ModelConfig = settings_of(ModelConfig, cfg.model)
    sampling: SamplingParams = settings_of(SamplingParams, cfg.sampling)
    backend = build_backend(cfg.backend, model_id, model, cfg.seed)
    max_prompt_tokens = cfg.max_prompt_tokens
    if max_prompt_tokens is None and cfg.bench.source == BenchSource.released.value:
        max_prompt_tokens = reference_prompt_limit(model_id, sampling.max_tokens)  # released items are not cut
    requests = build_requests(
        records,
        backend.tokenizer,
        model_identity(model_id, cfg.backend, model),
        sampling,
        cfg.thinking,
        model.thinking_switch,
        cfg.risk_one_token,
        max_prompt_tokens,
    )
    save_run_config(cfg, out)
    batch_size = cfg.batch_size or backend.batch_size
    note_progress(f"the evaluation of {len(requests)} samples (answered ones are kept in {out / 'results.jsonl'})")
    rows = run(requests, backend, sampling, out / "results.jsonl", batch_size, progress=cfg.progress)
    tabular = tabular_rows(cfg, originals, train, out) if Baseline.tabular in baselines else None
    return report_run(cfg, model_id, backend.name, bench, max_prompt_tokens, rows, frequent, tabular, out)


def report_run(
    cfg: DictConfig,
    model_id: str,
    backend: str,
    bench: str,
    max_prompt_tokens: int | None,
    rows: list[dict[str, Any]],
    frequent: dict[str, str] | None,
    tabular: list[dict[str, Any]] | None,
    out: Path,
) -> dict[str, Any]:
    """The reports of a model's rows; a run with failed samples then ends with an error unless
    ``allow_failures`` (the reports say how many, and a re-run asks them again)."""
    report = aggregate(rows, frequent, cfg.bootstrap, cfg.seed, tabular)
    report["run"] = {
        "model": model_id,
        "backend": backend,
        "thinking": cfg.thinking,
        "risk_one_token": cfg.risk_one_token,
        "candidates_prompt": cfg.candidates_prompt,
        "max_prompt_tokens": max_prompt_tokens,
        "sampling": OmegaConf.to_container(cfg.sampling),
        "data": bench,
        "bench": cfg.bench.source,
    }
    report = finish(cfg, report, rows, out, model_id)
    failures = [r for r in rows if failed(r)]
    if failures and not cfg.allow_failures:
        raise FailedWorkError(
            f"{len(failures)} of {len(rows)} samples failed (first: {failures[0]['error'][:200]}); they are "
            f"recorded as failures in {out / 'results.jsonl'} and scored 0 in the reports. Run the same command "
            "again to ask them again (answered samples are kept), or set allow_failures=true to accept the run"
        )
    return report


def finish(cfg: DictConfig, report: dict[str, Any], rows: list[dict[str, Any]], out: Path, model: str) -> dict:
    """Report files, plots, the console table and W&B: the same for every backend."""
    plots = write_plots(report, rows, out)
    paths = [*write_reports(report, out).values(), *plots]
    title = "released" if cfg.bench.source == BenchSource.released.value else f"{cfg.task_mix.name}, {cfg.split}"
    print_report(report, f"EHR-Bench ({title}): {model}")
    group = Path(cfg.train_run).name if cfg.train_run else None
    instantiate(cfg.logger).log_evaluation(report, rows, out, cfg.log_outputs, plots, group)
    report["paths"] = {p.name: str(p) for p in paths}
    log.info("reports: %s", ", ".join(str(p) for p in paths))
    return report


def evaluate_tabular(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """``backend=tabular``: the tabular baseline alone, scored and reported as a model would be."""
    bench, records, train = bench_records(cfg)
    save_run_config(cfg, out)
    frequent = frequent_answers({Baseline(b) for b in cfg.baselines}, train)
    rows = tabular_rows(cfg, records, train, out)
    if not rows:
        raise UserError(f"backend=tabular: no training records of the tasks in {bench} to fit on")
    report = aggregate(rows, frequent, cfg.bootstrap, cfg.seed)
    report["run"] = {"model": "tabular", "backend": "tabular", "tabular": OmegaConf.to_container(cfg.tabular),
                     "data": bench, "bench": cfg.bench.source}  # fmt: skip
    return finish(cfg, report, rows, out, "tabular baseline")
