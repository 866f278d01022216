"""The curriculum runner behind ``train.py``: stages in order, each from the previous stage's weights.

A run directory holds ``resolved_config.yaml`` and ``stages/<k>_<name>/`` per stage with the stage's own
resolved ``config.yaml``, resumable Lightning checkpoints (``checkpoints/last.ckpt``), the Hugging Face
checkpoint it ends with (``hf/``: weights + tokenizer) and ``summary.json``. ``resume=<run dir>`` continues
a killed run: finished stages are kept, the interrupted one restarts from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedModel

from ehrr1.artefacts.graph import artefact_at, built, current
from ehrr1.artefacts.index import check_task_mix
from ehrr1.config import (
    DeepSpeedConfig,
    HardwareConfig,
    ModelConfig,
    Objective,
    StageConfig,
    Toggle,
    curriculum_stages,
    settings_of,
)
from ehrr1.errors import ConfigError, MissingInputError, note_progress
from ehrr1.evaluation.report import score_text
from ehrr1.models.factory import build_embedded_model, load_model, resolve_attention
from ehrr1.models.tokenizer import load_tokenizer
from ehrr1.run_config import save_run_config
from ehrr1.training.base import CausalLMModule
from ehrr1.training.data import ChatDataModule
from ehrr1.training.hardware import check_hardware, trainer_kwargs
from ehrr1.training.run_folder import OpenedRun, check_same_run, open_run
from ehrr1.training.sft import SFTModule
from ehrr1.utils import (
    BUILT_WITH,
    atomic_output,
    atomic_write_json,
    atomic_write_text,
    digest,
    file_fingerprint,
    instantiate,
    locked,
    read_json,
)

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    stage: str
    status: str  # trained, done (reused), skipped
    directory: str
    reason: str = ""
    init: str | None = None
    hf_dir: str | None = None
    steps: int = 0
    train_loss: float | None = None
    val_loss_before: float | None = None
    val_loss_after: float | None = None
    tokens_per_s: float | None = None
    tokens: int = 0  # training tokens seen (SFT stages; this process)
    seconds: float = 0.0
    examples_left_out: dict[str, int] = field(default_factory=dict)
    reward_first: float | None = None  # rl: mean total reward of the first and the last step
    reward_last: float | None = None
    trained_on: dict[str, Any] | None = None  # the data: directory, settings it was built with, fingerprint


def global_rank() -> int:
    """This process's rank (0 when not distributed), as Lightning sets it before any trainer exists."""
    return int(getattr(rank_zero_only, "rank", 0))


def as_one_stage(cfg: DictConfig, stage: DictConfig) -> DictConfig:
    """The run's config as one of its stages sees it: ``stage`` in place of the curriculum, resolved."""
    one = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    one.stage = OmegaConf.to_container(stage, resolve=False)
    one.curriculum, one.stages = {}, {}
    return cast(DictConfig, OmegaConf.create(OmegaConf.to_container(one, resolve=True)))


def stage_configs(cfg: DictConfig, run_dir: Path) -> list[tuple[str, DictConfig]]:
    """Each stage's full resolved config, stored in its directory (and read back from there on resume)."""
    out = []
    for k, (name, stage) in enumerate(curriculum_stages(cfg), 1):
        path = run_dir / "stages" / f"{k}_{name}" / "config.yaml"
        if path.exists():
            stage_cfg = cast(DictConfig, OmegaConf.load(path))
        else:
            stage_cfg = as_one_stage(cfg, stage)
            if global_rank() == 0:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, OmegaConf.to_yaml(stage_cfg))
        out.append((name, stage_cfg))
    return out


def prepare_data(cfg: DictConfig, stage: StageConfig, single: bool) -> str | None:
    """Make sure the stage's data is there and current. The instruction and reasoning data (the artefacts built
    on demand) go through the settings check evaluation's data goes through: built when absent, rebuilt when
    made with other settings, so a stage never trains on one patient split while the evaluation after it
    scores another. Other data must be there. Returns a skip reason."""
    artefact = artefact_at(cfg, stage.data)
    if artefact is not None:
        if global_rank() == 0:
            built(artefact, cfg)
        else:
            wait_for(lambda: current(artefact, cfg), f"the {artefact} at {stage.data}, built with this run's settings")
        return None
    if (Path(stage.data) / "train.jsonl").exists():
        return None
    reason = f"no training data at {stage.data}"
    if single:
        raise MissingInputError(f"stage '{stage.name}': {reason}")
    return reason


def trained_on(data: str) -> dict[str, Any]:
    """What a stage trains on, recorded in its summary: the data directory, the settings ehrr1 built it with
    (None for data it did not build) and a fingerprint of them (of the file's identity without them), so an
    evaluation can refuse a split whose patients may be among the training ones."""
    directory = Path(data)
    record = directory / BUILT_WITH
    settings = read_json(record) if record.exists() else None
    identity = settings if settings is not None else file_fingerprint([directory / "train.jsonl"])
    return {"dir": str(directory.resolve()), "settings": settings, "fingerprint": digest(identity)}


def wait_for(ready: Callable[[], bool], what: str, timeout_s: float = 6 * 3600) -> None:
    """Ranks other than 0 wait for what rank 0 writes."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {global_rank()}: {what} did not appear")
        time.sleep(2)


def initial_weights(cfg: DictConfig, stage: StageConfig, previous: str | None) -> str:
    """Where the stage starts: stage.init, else the previous stage's checkpoint, else the model."""
    if stage.init:
        return stage.init
    if previous:
        return previous
    model = cfg.model
    if model.path is not None:
        return model.path
    if model.embedded_dir is None or model.architecture is None:
        raise ConfigError(f"model '{model.name}': set model.path, or model.embedded_dir and model.architecture")
    tokenizer_dir = Path(model.embedded_dir) / "tokenizer"
    model_dir = Path(model.embedded_dir) / f"model_seed{cfg.seed}"
    if global_rank() == 0:
        build_embedded_model(model.architecture, load_tokenizer(tokenizer_dir), model_dir, cfg.seed)
    else:
        wait_for((model_dir / "config.json").exists, f"the embedded model {model_dir}")
    return str(model_dir)


def export_hf(trainer: pl.Trainer, module: CausalLMModule, tokenizer: Any, out_dir: Path) -> None:
    """Save the trained weights and the tokenizer in Hugging Face format (gathered from every rank)."""
    strategy = trainer.strategy
    engine: Any = trainer.model
    if hasattr(engine, "_zero3_consolidated_16bit_state_dict"):  # DeepSpeed ZeRO-3 engine
        state = engine._zero3_consolidated_16bit_state_dict()
    else:
        state = strategy.lightning_module_state_dict()
    if trainer.is_global_zero:
        weights = {k.removeprefix("model."): v for k, v in state.items()}
        with atomic_output(out_dir, fresh=True) as tmp:
            module.model.save_pretrained(tmp, state_dict=weights)
            tokenizer.save_pretrained(tmp)
    strategy.barrier("export_hf")


@dataclass(frozen=True)
class StageInputs:
    """What a stage's objective is built from: its settings, where its weights start, and how they load."""

    cfg: DictConfig  # the run's config as this stage sees it
    stage: StageConfig
    hardware: HardwareConfig
    init: str  # the weights it starts from
    tokenizer: Any
    attention: str  # the attention implementation the weights load with
    build_model: Callable[[], PreTrainedModel]  # called where the strategy places the model (configure_model)
    data: dict[str, Any]  # what it trains on (:func:`trained_on`), read before training starts


# Attention that skips the masked-out blocks of packed documents (varlen kernels, a document BlockMask);
# SDPA and eager compute a packed sequence's block-diagonal mask densely, so packing costs them compute.
DOCUMENT_SPARSE_ATTENTION = ("flash_attention_2", "flex_attention")


def packs(packing: Toggle, attention: str) -> bool:
    """``stage.packing``: on, off, or auto (on where the attention skips other documents' blocks)."""
    return packing is Toggle.on or (packing is Toggle.auto and attention in DOCUMENT_SPARSE_ATTENTION)


def sft_objective(given: StageInputs) -> tuple[pl.LightningDataModule, CausalLMModule]:
    """Stages 1 and 2: the chat records of the stage's data, packed or length-grouped, and the SFT module."""
    stage, model = given.stage, settings_of(ModelConfig, given.cfg.model)
    data = ChatDataModule(
        stage.data,
        given.tokenizer,
        max_seq_len=stage.max_seq_len or model.context_length,
        micro_batch_size=stage.micro_batch_size,
        grad_accum=stage.grad_accum,
        packing=packs(stage.packing, given.attention),
        seed=given.cfg.seed,
        switch=model.thinking_switch,
        num_workers=given.hardware.dataloader_workers,
        loss_on=stage.loss_on,
        answer_weight=stage.answer_weight,
        loss_per=stage.loss_per,
    )
    strategy = given.hardware.strategy
    module = SFTModule(
        given.build_model,
        stage.optim,
        stage.schedule,
        gradient_checkpointing=stage.gradient_checkpointing,
        liger=stage.liger,
        cpu_offload_optimizer=isinstance(strategy, DeepSpeedConfig) and strategy.offload_optimizer,
    )
    return data, module


def grpo_objective(given: StageInputs) -> tuple[pl.LightningDataModule, CausalLMModule]:
    """Stage 3: the prompts (the stage's train split, the RL task mix) and the GRPO module."""
    from ehrr1.training.grpo import GRPOModule, PromptDataModule

    stage, seed = given.stage, given.cfg.seed
    settings = stage.grpo
    path = Path(stage.data) / "train.jsonl"
    with path.open(encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    if settings.tasks:
        unknown = sorted(set(settings.tasks) - {r["task"] for r in records})
        if unknown:
            raise ConfigError(f"stage.grpo.tasks: {unknown} have no prompts in {path}")
        records = [r for r in records if r["task"] in settings.tasks]
    if settings.max_prompts is not None and len(records) > settings.max_prompts:
        records = random.Random(seed).sample(records, settings.max_prompts)
    module = GRPOModule(
        given.build_model,
        given.tokenizer,
        settings,
        stage.optim,
        stage.schedule,
        micro_batch_size=settings.micro_batch_size,
        gradient_clip=stage.gradient_clip,
        gradient_checkpointing=stage.gradient_checkpointing,
        switch=settings_of(ModelConfig, given.cfg.model).thinking_switch,
        seed=seed,
        model_path=given.init,
    )
    return PromptDataModule(records, settings.prompts_per_step, seed), module


OBJECTIVES: dict[Objective, Callable[[StageInputs], tuple[pl.LightningDataModule, CausalLMModule]]] = {
    Objective.sft: sft_objective,
    Objective.grpo: grpo_objective,
}


def training_attention(requested: str, on_gpu: bool) -> str:
    """The attention a stage trains with; FlexAttention only on a GPU (PyTorch has no backward for it on CPU)."""
    attention = resolve_attention(requested, on_gpu)
    if attention == "flex_attention" and not on_gpu:
        raise ConfigError(
            "model.attn_implementation=flex_attention cannot train on CPU: PyTorch's FlexAttention has no backward "
            "pass there (train with sdpa on CPU; flex_attention still evaluates there)"
        )
    return attention


def stage_inputs(cfg: DictConfig, stage: StageConfig, hardware: HardwareConfig, previous: str | None) -> StageInputs:
    """Seed the stage, find its starting weights (building the embedded model if that is where it starts) and
    say how they load."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    init = initial_weights(cfg, stage, previous)
    model: ModelConfig = settings_of(ModelConfig, cfg.model)
    on_gpu = hardware.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    attention = training_attention(model.attn_implementation.value, on_gpu)
    build_model = partial(load_model, init, model.dtype.value, attention)
    return StageInputs(cfg, stage, hardware, init, load_tokenizer(init), attention, build_model, trained_on(stage.data))


class ProgressNote(pl.Callback):
    """Keeps the step a stage is at, for the line an interruption ends with (and the checkpoint it resumes from)."""

    def __init__(self, stage: str, every: int):
        self.stage, self.every = stage, every

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        step = trainer.global_step
        note_progress(f"stage {self.stage}, step {step} (resumes from step {step - step % self.every})")


def build_trainer(given: StageInputs, stage_dir: Path, logger: Any, resuming: bool) -> pl.Trainer:
    """The stage's Lightning trainer: its hardware, length, validation, logging and resumable checkpoints."""
    stage, rl = given.stage, given.stage.objective is Objective.grpo
    progress = ProgressNote(stage.name, stage.checkpoint_every_n_steps)
    checkpoints = ModelCheckpoint(
        dirpath=str(stage_dir / "checkpoints"),
        every_n_train_steps=stage.checkpoint_every_n_steps,
        save_top_k=0,
        save_last=True,
    )
    return pl.Trainer(
        **trainer_kwargs(given.hardware, stage.grpo.micro_batch_size if rl else stage.micro_batch_size),
        default_root_dir=str(stage_dir),
        max_epochs=stage.epochs,
        max_steps=stage.max_steps,
        accumulate_grad_batches=1 if rl else stage.grad_accum,
        gradient_clip_val=None if rl else stage.gradient_clip,  # GRPO clips in its own optimiser steps
        val_check_interval=stage.val_every_n_steps * stage.grad_accum if stage.val_every_n_steps else None,
        check_val_every_n_epoch=None if stage.val_every_n_steps else 1,
        limit_val_batches=0 if rl else stage.val_max_batches if stage.val_max_batches is not None else 1.0,
        num_sanity_val_steps=0 if resuming or rl else -1,  # a full validation before training: the val loss before
        log_every_n_steps=stage.log_every_n_steps,
        logger=logger,
        callbacks=[checkpoints, progress],
        use_distributed_sampler=False,
        enable_progress_bar=bool(given.cfg.progress),
    )


def finish_stage(
    trainer: pl.Trainer, module: CausalLMModule, data: Any, given: StageInputs, stage_dir: Path, seconds: float
) -> StageResult:
    """Export the trained weights in Hugging Face format and record the stage's summary (which marks it done)."""
    hf_dir = stage_dir / "hf"
    export_hf(trainer, module, given.tokenizer, hf_dir)
    rewards = getattr(module, "reward_history", [])  # GRPO's mean reward per step
    result = StageResult(
        stage=given.stage.name,
        status="trained",
        directory=str(stage_dir),
        init=given.init,
        hf_dir=str(hf_dir),
        steps=trainer.global_step,
        train_loss=_float(module.last_train_loss),
        val_loss_before=module.val_history[0][1] if module.val_history else None,
        val_loss_after=module.val_history[-1][1] if module.val_history else None,
        tokens_per_s=module.mean_tokens_per_s(),
        tokens=module.tokens_seen,
        seconds=round(seconds, 1),
        examples_left_out=dict(getattr(data, "dropped", {})),
        reward_first=_float(rewards[0]) if rewards else None,
        reward_last=_float(rewards[-1]) if rewards else None,
        trained_on=given.data,
    )
    if trainer.is_global_zero:
        atomic_write_json(stage_dir / "summary.json", asdict(result))
    return result


def run_stage(cfg: DictConfig, stage_dir: Path, run_name: str, previous: str | None, single: bool) -> StageResult:
    """One stage: reused when its summary is there, skipped without data, else trained (or resumed from its
    last checkpoint) and exported."""
    stage: StageConfig = settings_of(StageConfig, cfg.stage)
    if (stage_dir / "summary.json").exists():  # its weights are the ones in this run's folder (a copy's own)
        done = StageResult(**read_json(stage_dir / "summary.json"))
        return replace(
            done, status="done", directory=str(stage_dir), hf_dir=str(stage_dir / "hf") if done.hf_dir else None
        )
    reason = prepare_data(cfg, stage, single)
    if reason:
        return StageResult(stage=stage.name, status="skipped", directory=str(stage_dir), reason=reason)

    started = time.perf_counter()
    given = stage_inputs(cfg, stage, settings_of(HardwareConfig, cfg.hardware), previous)
    data, module = OBJECTIVES[stage.objective](given)
    tracker = instantiate(cfg.logger)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    last = stage_dir / "checkpoints" / "last.ckpt"
    trainer = build_trainer(
        given, stage_dir, tracker.stage_logger(stage_dir, run_name, stage.name, config), last.exists()
    )
    if last.exists():
        log.info("stage %s: resuming from %s", stage.name, last)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None)
    except SystemExit:
        if trainer.interrupted:  # Lightning ends a Ctrl-C with sys.exit(1): the entry point says how to resume
            raise KeyboardInterrupt from None
        raise
    result = finish_stage(trainer, module, data, given, stage_dir, time.perf_counter() - started)
    tracker.finish_stage(trainer)
    return result


def _float(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def train(cfg: DictConfig, run: OpenedRun | None = None) -> list[StageResult]:
    """Run the configured stage, or the curriculum's stages in order; print and return their results. ``run``:
    the run folder already opened for ``cfg`` (:func:`open_run`, which the entry point calls before the heavy
    imports, so a refused folder is said at once)."""
    cfg, run_dir, resumed = run or open_run(cfg)
    with locked(run_dir, wait=False, key="resume" if resumed else "run_dir") if global_rank() == 0 else nullcontext():
        if not resumed:
            check_same_run(cfg, run_dir)
        return train_in(cfg, run_dir, resumed)


def train_in(cfg: DictConfig, run_dir: Path, resumed: bool) -> list[StageResult]:
    """The stages of the run in ``run_dir``, which this process alone writes."""
    check_hardware(settings_of(HardwareConfig, cfg.hardware))  # the run's own (a resumed run's stored) settings
    check_task_mix(cfg)
    if not resumed and global_rank() == 0:
        save_run_config(cfg, run_dir)
    stages = stage_configs(cfg, run_dir)
    single = not cfg.curriculum
    results: list[StageResult] = []
    previous = None
    for k, (name, stage_cfg) in enumerate(stages, 1):
        result = run_stage(stage_cfg, run_dir / "stages" / f"{k}_{name}", run_dir.name, previous, single)
        if result.status == "skipped":
            log.warning("stage %s skipped: %s", name, result.reason)
        else:
            previous = result.hf_dir
        results.append(result)
    if global_rank() == 0:
        print_results(results, run_dir)
        if cfg.evaluate.enabled and any(r.hf_dir for r in results):
            from ehrr1.evaluation.evaluate import after_training

            note_progress("the evaluation after training")
            report = after_training(cfg, run_dir)
            model = cfg.model.path or f"the embedded {cfg.model.name} model"
            print_summary(results, report, model, cfg.task_mix.name)
    return results


def print_results(results: list[StageResult], run_dir: Path, console: Console | None = None) -> None:
    console = console or Console(width=max(Console().width, 110))
    table = Table(title=f"Training run {run_dir}")
    for column in ("stage", "status", "steps", "train loss", "val loss before", "val loss after", "tokens/s"):
        table.add_column(column, justify="left" if column in ("stage", "status") else "right", no_wrap=True)
    for r in results:
        cells = [str(r.steps), _fmt(r.train_loss), _fmt(r.val_loss_before), _fmt(r.val_loss_after)]
        cells.append(f"{r.tokens_per_s:,.0f}" if r.tokens_per_s else "")
        table.add_row(r.stage, r.status, *(cells if r.status != "skipped" else [""] * 5))
    console.print(table)
    for r in results:
        if r.reward_first is not None:
            console.print(f"{r.stage}: mean reward {r.reward_first:.3f} (first step), {r.reward_last:.3f} (last)")
        if r.status == "skipped":
            console.print(f"{r.stage}: skipped, {r.reason}")
        else:
            console.print(
                f"{r.stage}: Hugging Face checkpoint {r.hf_dir}, Lightning checkpoints {r.directory}/checkpoints"
            )


def summary_lines(results: list[StageResult], report: dict[str, Any], model: str, mix: str) -> list[str]:
    """What a person reads last: what was trained, how it scored against both baselines, where to look."""
    trained = [r for r in results if r.status != "skipped"]
    tokens = sum(r.tokens for r in trained)
    minutes = sum(r.seconds for r in trained) / 60
    what = (
        f"Trained {model} on the {mix} mix through {', '.join(r.stage for r in trained)} "
        f"({sum(r.steps for r in trained)} steps, {tokens:,} training tokens, {minutes:.1f} min): "
        f"{report['run']['model']}."
    )
    scores = []
    for kind, name in (("decision", "decision-making"), ("risk", "risk-prediction AUROC")):
        m = report["macro"].get(kind)
        if m is None:
            continue
        ci = f" (95 % CI {score_text(m['ci_low'])}–{score_text(m['ci_high'])})" if m.get("ci_low") is not None else ""
        scores.append(
            f"{name} macro {m['value']:.3f}{ci} over {m['tasks']} tasks vs most frequent "
            f"{score_text(m.get('baseline')) or 'n/a'}, tabular {score_text(m.get('tabular')) or 'n/a'}"
        )
    paths = report.get("paths", {})
    plots = ", ".join(v for k, v in paths.items() if k.endswith(".png"))
    where = f"Report {paths.get('report.md', '')}; plots {plots}."
    return [what, "Scored: " + "; ".join(scores) + ".", where]


def print_summary(
    results: list[StageResult], report: dict[str, Any], model: str, mix: str, console: Console | None = None
) -> None:
    console = console or Console(width=max(Console().width, 110))
    for line in summary_lines(results, report, model, mix):
        console.print(line, soft_wrap=True)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
