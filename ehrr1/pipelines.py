"""The steps ``synthesize.py`` runs, callable with a composed config (tests call them directly)."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.markdown import event_title
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort

log = logging.getLogger(__name__)


def save_run_config(cfg: DictConfig) -> Path | None:
    """Store the resolved config beside Hydra's unresolved copy, so a run can be reproduced exactly."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    path = Path(HydraConfig.get().runtime.output_dir) / "resolved_config.yaml"
    OmegaConf.save(cfg, path, resolve=True)
    return path


def prepare_timelines(cfg: DictConfig) -> dict[str, Any]:
    """Generate the synthetic cohort when configured, then build (or reuse) the timelines."""
    data = cfg.data
    cohort = None
    if data.synthetic is not None:
        cohort = generate_cohort(data.root, SyntheticCohortSettings(**data.synthetic), progress=cfg.progress)
    modules = {name: path for name, path in data.modules.items() if path is not None}
    reader = MimicReader(modules)
    settings = TimelineBuildSettings(**{f.name: cfg.timelines[f.name] for f in fields(TimelineBuildSettings)})
    manifest = build_timelines(reader, cfg.timelines.dir, settings, progress=cfg.progress)
    return {"cohort": cohort, "timelines": manifest, "timelines_dir": str(Path(cfg.timelines.dir).resolve())}


def print_summary(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    manifest = result["timelines"]
    table = Table(
        title=f"Timelines: {manifest['n_patients']} patients, {manifest['n_events']} events, "
        f"{manifest['n_records']} records"
    )
    for column in ("event type", "section", "events", "records", "patients"):
        table.add_column(column, justify="left" if column in ("event type", "section") else "right")
    for name, stats in sorted(manifest["per_event_type"].items(), key=lambda kv: -kv[1]["records"]):
        table.add_row(name, event_title(name), str(stats["events"]), str(stats["records"]), str(stats["patients"]))
    console.print(table)
    if result["cohort"] is not None:
        admissions = result["cohort"]["rows"].get("admissions", 0)
        console.print(
            f"synthetic cohort: {result['cohort']['settings']['n_patients']} patients, {admissions} admissions"
        )
    if manifest["skipped_event_types"]:
        console.print(f"skipped event types (tables absent): {', '.join(manifest['skipped_event_types'])}")
    console.print(f"timelines: {result['timelines_dir']}")


def synthesize(cfg: DictConfig) -> dict[str, Any]:
    save_run_config(cfg)
    result = prepare_timelines(cfg)
    print_summary(result)
    return result
