"""Where metrics go (``logger=``): one tracker per option, built from its config by ``_target_``, serving a
training stage (a Lightning logger) and an evaluation (its scores). Only numbers and the config are logged:
never prompts; model outputs only when the evaluation opts in (``log_outputs=true``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ehrr1.config import WandbMode


class NoTracker:
    """``logger=none``: the progress bar and the console summary only."""

    def stage_logger(self, stage_dir: Path, run_name: str, stage: str, config: dict[str, Any]) -> Any:
        """The Lightning logger of one training stage (False: none)."""
        return False

    def finish_stage(self, trainer: Any) -> None:
        """After a stage's training: close what the stage's logger opened."""

    def log_evaluation(
        self,
        report: dict[str, Any],
        rows: list[dict[str, Any]],
        out: Path,
        log_outputs: bool,
        plots: list[Path],
        group: str | None = None,
    ) -> None:
        """An evaluation's scores (the report's files are written either way); ``group``: the training run it
        ends, whose dashboard it belongs on."""


class CSVTracker(NoTracker):
    """``logger=csv``: each stage's metrics in ``<stage dir>/csv/version_<attempt>/metrics.csv``."""

    def stage_logger(self, stage_dir: Path, run_name: str, stage: str, config: dict[str, Any]) -> Any:
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(stage_dir), name="csv")


class WandbTracker(NoTracker):
    """``logger=wandb``: each training stage a run of the group named after the training run; an evaluation a
    run of its own, with the scores as its summary and a per-task table."""

    def __init__(self, project: str, entity: str | None, mode: WandbMode, tags: list[str]):
        self.project, self.entity, self.mode, self.tags = project, entity, WandbMode(mode), list(tags)

    def stage_logger(self, stage_dir: Path, run_name: str, stage: str, config: dict[str, Any]) -> Any:
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(
            project=self.project,
            entity=self.entity,
            name=f"{run_name}/{stage}",
            group=run_name,
            save_dir=str(stage_dir),
            mode=wandb_mode(self.mode),
            tags=self.tags,
        )
        logger.log_hyperparams(config)
        return logger

    def finish_stage(self, trainer: Any) -> None:
        from lightning.pytorch.loggers import WandbLogger

        if isinstance(trainer.logger, WandbLogger) and trainer.is_global_zero:
            trainer.logger.experiment.finish()

    def log_evaluation(
        self,
        report: dict[str, Any],
        rows: list[dict[str, Any]],
        out: Path,
        log_outputs: bool,
        plots: list[Path],
        group: str | None = None,
    ) -> None:
        """Every score with its interval and both baselines as the run summary, the per-task and macro tables,
        the plots; per-sample outputs only when opted in. No prompts. The evaluation after training is a run of
        the training run's group (``<run>/evaluation``), beside its stages."""
        import wandb

        run = wandb.init(
            project=self.project,
            entity=self.entity,
            name=f"{group}/evaluation" if group else f"eval/{Path(report['run']['model']).name}",
            group=group,
            job_type="evaluation",
            dir=str(out),
            mode=wandb_mode(self.mode),  # type: ignore[arg-type]  # one of wandb's modes, or WANDB_MODE as set
            config=report["run"],
            tags=self.tags,
        )
        run.summary.update(summary_scores(report))
        tasks = report["tasks"]
        columns: list[str | int] = list(tasks[0]) if tasks else []
        macro_columns: list[str | int] = ["kind", "value", "ci_low", "ci_high", "baseline", "tabular", "tasks"]
        macro = [[kind, *(m.get(str(c)) for c in macro_columns[1:])] for kind, m in report["macro"].items()]
        run.log(
            {
                "report": wandb.Table(columns=columns, data=[[t[c] for c in columns] for t in tasks]),
                "macro": wandb.Table(columns=macro_columns, data=macro),
                **{f"plots/{p.stem}": wandb.Image(str(p)) for p in plots},
            }
        )
        if log_outputs:
            fields = ["id", "task", "answer", "target", "score", "p_yes", "finish_reason"]
            data = [[json.dumps(r[f]) if isinstance(r[f], list) else r[f] for f in fields] for r in rows]
            run.log({"samples": wandb.Table(columns=list[str | int](fields), data=data)})
        run.finish()


def summary_scores(report: dict[str, Any]) -> dict[str, float]:
    """An evaluation's numbers by name: each task's score (``<task>/<metric>``), its 95 % interval, the
    most-frequent and tabular baselines (with the tabular one's interval), and the same per kind (``macro/*``)."""
    columns = {"": "value", "/ci_low": "ci_low", "/ci_high": "ci_high", "/most_frequent": "baseline"}
    columns.update({"/tabular": "tabular", "/tabular_ci_low": "tabular_ci_low", "/tabular_ci_high": "tabular_ci_high"})
    found: dict[str, Any] = {}
    for t in report["tasks"]:
        found.update({f"{t['task']}/{t['metric']}{suffix}": t.get(column) for suffix, column in columns.items()})
    for kind, m in report["macro"].items():
        found.update({f"macro/{kind}{suffix}": m.get(column) for suffix, column in columns.items()})
    return {k: v for k, v in found.items() if v is not None}


def wandb_mode(mode: WandbMode) -> str:
    """``auto``: online when an API key is configured, offline otherwise (``wandb sync`` uploads later);
    the WANDB_MODE environment variable wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if mode is not WandbMode.auto:
        return mode.value
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    return "online" if has_key else "offline"
