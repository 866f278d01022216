"""The first artefacts: the synthetic cohort (when configured) and the per-patient timelines built from the
MIMIC-IV tables (``synthesize.py pipeline=timelines``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ehrr1.config import EmptyTables, OnDuplicates, settings_of
from ehrr1.config.data import DataSanity
from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.markdown import REFERENCE_TITLES
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import UserError


def prepare_timelines(cfg: DictConfig) -> dict[str, Any]:
    """Generate the synthetic cohort when configured, then build (or reuse) the timelines."""
    data = cfg.data
    cohort = None
    if data.synthetic is not None:
        cohort = generate_cohort(data.root, settings_of(SyntheticCohortSettings, data.synthetic), progress=cfg.progress)
    modules = {name: path for name, path in data.modules.items() if path is not None}
    sanity = data.get("sanity")  # absent from a config stored before data.sanity existed: the defaults
    reader = MimicReader(  # a stored config holds the names, a composed one the enums
        modules,
        on_duplicates=OnDuplicates(data.on_duplicates).value,
        empty_tables=EmptyTables(data.empty_tables).value,
        sanity=None if sanity is None else settings_of(DataSanity, sanity),
    )
    settings = settings_of(TimelineBuildSettings, cfg.timelines)
    manifest = build_timelines(reader, cfg.timelines.dir, settings, progress=cfg.progress)
    return {"cohort": cohort, "timelines": manifest, "timelines_dir": str(Path(cfg.timelines.dir).resolve())}


def shard_range(cfg: DictConfig, store: TimelineStore) -> range | None:
    """``shards`` ([first, stop) of the timeline shards) as a range, checked against the timelines."""
    shards = cfg.get("shards")
    if shards is None:
        return None
    n = store.num_shards
    if len(shards) != 2 or not 0 <= shards[0] < shards[1] <= n:
        raise UserError(
            f"shards={list(shards)}: expected [first, stop) with 0 <= first < stop <= {n} "
            f"(the timelines at {store.root} have {n} shard(s))"
        )
    return range(shards[0], shards[1])


def print_timelines(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    manifest = result["timelines"]
    table = Table(
        title=f"Timelines: {manifest['n_patients']} patients, {manifest['n_events']} events, "
        f"{manifest['n_records']} records"
    )
    for column in ("event type", "section", "events", "records", "patients"):
        table.add_column(column, justify="left" if column in ("event type", "section") else "right")
    for name, stats in sorted(manifest["per_event_type"].items(), key=lambda kv: -kv[1]["records"]):
        row = (name, REFERENCE_TITLES.get(name, name), str(stats["events"]), str(stats["records"]))
        table.add_row(*row, str(stats["patients"]))
    console.print(table)
    if result["cohort"] is not None:
        admissions = result["cohort"]["rows"].get("admissions", 0)
        console.print(
            f"synthetic cohort: {result['cohort']['settings']['n_patients']} patients, {admissions} admissions"
        )
    if manifest["skipped_event_types"]:
        console.print(f"skipped event types (tables absent): {', '.join(manifest['skipped_event_types'])}")
    if manifest.get("empty_tables"):
        console.print(f"tables with no rows (their events are absent): {', '.join(manifest['empty_tables'])}")
    repeated = manifest.get("repeated_keys", {})
    if repeated.get("rows"):
        rows = ", ".join(f"{table} {n}" for table, n in repeated["rows"].items())
        console.print(f"rows repeating a primary key ({'dropped' if repeated['policy'] == 'drop' else 'kept'}): {rows}")
    for family, found in manifest.get("sanity", {}).items():
        if found["rows"]:  # under policy error the build stops instead
            rows = ", ".join(f"{table} {n}" for table, n in found["rows"].items())
            action = "left out" if found["policy"] == "drop" else "kept"
            console.print(f"rows that cannot be true, {family} ({action}, data.sanity.{family}): {rows}")
    console.print(f"timelines: {result['timelines_dir']}")
