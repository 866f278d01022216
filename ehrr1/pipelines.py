"""The steps ``synthesize.py`` runs, callable with a composed config (tests call them directly)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

from omegaconf import Container, DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from ehrr1.config import EmptyTables, OnDuplicates, TaskMixConfig, settings_of
from ehrr1.data.build import TimelineBuildSettings, build_timelines
from ehrr1.data.markdown import REFERENCE_TITLES, render_events
from ehrr1.data.reader import MimicReader
from ehrr1.data.synthetic.cohort import SyntheticCohortSettings, generate_cohort
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import ConfigError, UserError
from ehrr1.evaluation.released import ReleasedBenchError, read_released
from ehrr1.reasoning.pipeline import print_reasoning, synthesize_chains
from ehrr1.tasks.export import export_samples
from ehrr1.tasks.index import build_index, iter_index
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.select import SelectionSettings, SplitRatios, load_data_config, select, subject_split
from ehrr1.utils import atomic_write_json, atomic_write_text, ensure_built, record_settings

log = logging.getLogger(__name__)


def save_run_config(cfg: DictConfig, run_dir: str | Path | None = None) -> Path | None:
    """Store the resolved config, and refresh Hydra's unresolved copy with what the run filled in (the
    curriculum's stages), so re-running either one reproduces the run exactly."""
    from hydra.core.hydra_config import HydraConfig

    hydra_dir: Path | None = None
    if HydraConfig.initialized():
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        run_dir = run_dir or output_dir
        if (subdir := HydraConfig.get().output_subdir) is not None:
            hydra_dir = output_dir / subdir
    if run_dir is None:
        return None
    path = Path(run_dir) / "resolved_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    if hydra_dir is not None and (hydra_dir / "config.yaml").exists():
        atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    return path


def prepare_timelines(cfg: DictConfig) -> dict[str, Any]:
    """Generate the synthetic cohort when configured, then build (or reuse) the timelines."""
    data = cfg.data
    cohort = None
    if data.synthetic is not None:
        cohort = generate_cohort(data.root, settings_of(SyntheticCohortSettings, data.synthetic), progress=cfg.progress)
    modules = {name: path for name, path in data.modules.items() if path is not None}
    reader = MimicReader(  # a stored config holds the names, a composed one the enums
        modules,
        on_duplicates=OnDuplicates(data.on_duplicates).value,
        empty_tables=EmptyTables(data.empty_tables).value,
    )
    settings = settings_of(TimelineBuildSettings, cfg.timelines)
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
    console.print(f"timelines: {result['timelines_dir']}")


def task_mix_counts(cfg: DictConfig) -> dict[str, int]:
    mix = cfg.task_mix
    counts = load_data_config(mix.file) if mix.file else dict(mix.tasks)
    if not counts:
        raise ConfigError(f"task_mix '{mix.name}' names no tasks: set task_mix.tasks or task_mix.file")
    return counts


def prepare_tokenizer(cfg: DictConfig, store: TimelineStore):
    """The model's tokenizer; the embedded one is trained on the first patients' markdown when absent."""
    from ehrr1.models.tokenizer import build_embedded_tokenizer, load_tokenizer  # transformers: only here

    model = cfg.model
    if model.path is not None:
        return load_tokenizer(model.path)
    if model.embedded_dir is None:
        raise ConfigError(f"model '{model.name}': set model.path (a directory or hub id) or model.embedded_dir")

    def texts():
        for i, timeline in enumerate(store):
            if i >= model.tokenizer_patients:
                return
            yield render_events(timeline.events, cfg.markdown.style)

    directory = build_embedded_tokenizer(texts(), Path(model.embedded_dir) / "tokenizer", model.tokenizer_vocab_size)
    return load_tokenizer(directory)


def mix_selection(cfg: DictConfig) -> SelectionSettings:
    """``selection`` with what the task mix sets for itself (its context filter minimum, its patient split)."""
    settings = settings_of(SelectionSettings, cfg.selection)
    mix = cfg.task_mix
    if mix.min_events is not None:
        settings = replace(settings, min_events=mix.min_events)
    if mix.split is not None:
        settings = replace(settings, split=settings_of(SplitRatios, mix.split))
    return settings


def export_released(cfg: DictConfig) -> dict[str, Any]:
    """The released EHR-Ins items of ``task_mix.released`` as the instruction data: split by patient (the
    mix's split ratios and seed), written as ``<export.dir>/<split>.jsonl`` (only ``task_mix.splits``)."""
    registry = TaskRegistry(cfg.tasks.extra)
    records = read_released(cfg.task_mix.released, registry, list(cfg.task_mix.tasks) or None, key="task_mix.released")
    report = write_by_patient(records, Path(cfg.export.dir), list(cfg.task_mix.splits), cfg, cfg.task_mix.released)
    return {"instructions": report, "export_dir": str(Path(cfg.export.dir).resolve())}


def write_by_patient(
    records: list[InstructionRecord], out: Path, splits: list[str], cfg: DictConfig, source: str
) -> dict[str, Any]:
    """Released records split by patient (the mix's split ratios and seed) into ``<out>/<split>.jsonl``,
    with ``stats.json`` naming their ``source`` so data built otherwise is never taken for them."""
    settings = mix_selection(cfg)
    by_split: dict[str, list[str]] = {split: [] for split in splits}
    report: dict[str, dict[str, dict[str, Any]]] = {split: {} for split in by_split}
    for record in records:
        patient = record["subject_id"] if record["subject_id"] is not None else record["id"]
        split = subject_split(patient, settings.split, settings.seed)
        if split not in by_split:
            continue
        by_split[split].append(json.dumps({**record, "split": split}, ensure_ascii=False))
        entry = report[split].setdefault(
            record["task"], {"samples": 0, "mean_context_events": "", "mean_prompt_tokens": ""}
        )
        entry["samples"] += 1
        if record["kind"] == "risk":
            label = record["target"][0]
            entry.update({side: entry.get(side, 0) + (side == label) for side in ("yes", "no")})
    for split, lines in by_split.items():
        atomic_write_text(out / f"{split}.jsonl", "".join(line + "\n" for line in lines))
    totals = {split: len(lines) for split, lines in by_split.items()}
    atomic_write_json(out / "stats.json", {"source": str(source), "totals": totals, "splits": report})
    return {"totals": totals, "splits": report}


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


def build_sample_index(cfg: DictConfig) -> tuple[dict[str, Any], TaskRegistry, dict[str, int]]:
    """timelines -> the sample index of the task mix's tasks (only ``shards`` when given)."""
    counts = task_mix_counts(cfg)
    registry = TaskRegistry(cfg.tasks.extra)
    tasks = registry.select(counts)  # unknown names fail before any work
    result = prepare_timelines(cfg)
    store = TimelineStore(result["timelines_dir"])
    shards = shard_range(cfg, store)
    indexed = build_index(store.root, cfg.index.dir, tasks, cfg.index.num_workers, cfg.progress, shards)
    result.update(
        index=indexed, index_dir=str(Path(cfg.index.dir).resolve()), index_complete=len(indexed) == len(tasks)
    )
    return result, registry, counts


def build_instructions(cfg: DictConfig) -> dict[str, Any]:
    """timelines -> sample index -> selection -> prompts -> JSONL (EHR-Ins train/val, EHR-Bench test); or the
    released EHR-Ins items of ``task_mix.released``. With ``shards``, only those shards' prompts (one job of
    an array); a run without it joins them."""
    if cfg.task_mix.released:
        result = export_released(cfg)
        record_settings(Path(cfg.export.dir), instruction_settings(cfg))
        return result
    result, registry, counts = build_sample_index(cfg)
    if not result["index_complete"]:
        raise UserError(
            f"the sample index at {result['index_dir']} is not complete: run `synthesize.py pipeline=index` "
            "over every shard range first (see README, 'More than one machine')"
        )
    store = TimelineStore(result["timelines_dir"])
    settings = mix_selection(cfg)
    factor = dict(cfg.task_mix.split_factor)

    selected = select(
        partial(iter_index, cfg.index.dir), counts, registry, settings, tuple(cfg.task_mix.splits), factor
    )
    tokenizer = prepare_tokenizer(cfg, store)
    builder = PromptBuilder(tokenizer, cfg.model.max_input_tokens, style=cfg.markdown.style)
    report = export_samples(
        selected,
        store,
        registry,
        builder,
        cfg.export.dir,
        list(counts),
        num_workers=cfg.export.num_workers,
        progress=cfg.progress,
        unit_patients=cfg.export.unit_patients,
        shards=shard_range(cfg, store),
    )
    key = "instructions" if "totals" in report else "export_units"
    if key == "instructions":
        record_settings(Path(cfg.export.dir), instruction_settings(cfg))
    result.update({key: report, "export_dir": str(Path(cfg.export.dir).resolve())})
    return result


def instruction_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that decide the instruction data: the source, the events and their text, the tasks, the
    selection and the prompts (not where things live, nor how many workers build them)."""

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else node

    return {
        "data": plain(cfg.data),
        "timelines": {k: plain(cfg.timelines[k]) for k in ("grouping", "mapping_dir")},
        "markdown": plain(cfg.markdown),
        "tasks": plain(cfg.tasks),
        "selection": plain(cfg.selection),
        "task_mix": {k: plain(v) for k, v in cfg.task_mix.items() if k != "name"},
        "model": {
            k: plain(cfg.model.get(k))
            for k in ("name", "path", "max_input_tokens", "tokenizer_vocab_size", "tokenizer_patients")
        },
    }


def ensure_instructions(cfg: DictConfig, split: str) -> Path:
    """``<export.dir>/<split>.jsonl``, built (the whole instructions pipeline) when absent or made with other
    settings (``instruction_settings``)."""
    path = Path(cfg.export.dir) / f"{split}.jsonl"
    return ensure_built(path, instruction_settings(cfg), lambda: build_instructions(cfg), f"{split} instruction data")


def print_instructions(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    if "export_units" in result:  # one job of an array
        units = result["export_units"]
        console.print(
            f"exported the units of shards {units['shards']}: {units['units_done']} of {units['units']} units done "
            f"in {result['export_dir']}; join them with the same command without shards"
        )
        return
    report = result["instructions"]
    table = Table(title="Instruction data (" + ", ".join(f"{s}: {n}" for s, n in report["totals"].items()) + ")")
    for column in ("split", "task", "samples", "yes/no", "mean events", "mean tokens"):
        table.add_column(column, justify="left" if column in ("split", "task") else "right")
    for split, tasks in report["splits"].items():
        for name, e in tasks.items():
            balance = f"{e['yes']}/{e['no']}" if "yes" in e else ""
            table.add_row(
                split, name, str(e["samples"]), balance, str(e["mean_context_events"]), str(e["mean_prompt_tokens"])
            )
    console.print(table)
    console.print(f"instruction data: {result['export_dir']}")


def synthesize_reasoning(cfg: DictConfig) -> dict[str, Any]:
    """The reasoning data: the released items of ``synthesis.released``, or chains synthesised for the
    instruction records of ``synthesis.splits`` (built first when absent)."""
    if cfg.synthesis.released:
        report = released_reasoning(cfg)
    else:
        report = synthesize_chains(cfg, {split: ensure_instructions(cfg, split) for split in cfg.synthesis.splits})
    record_settings(Path(cfg.synthesis.dir), reasoning_settings(cfg))
    return report


def released_reasoning(cfg: DictConfig) -> dict[str, Any]:
    """The released EHR-Ins reasoning items of ``synthesis.released`` (``ehr_ins_reasoning``: chains the
    reference wrote with GPT-4o) as the reasoning data, split by patient like the instruction data."""
    registry = TaskRegistry(cfg.tasks.extra)
    records = read_released(
        cfg.synthesis.released, registry, list(cfg.task_mix.tasks) or None, key="synthesis.released"
    )
    without = next((r["source"] for r in records if not r["reasoning"]), None)
    if without:
        raise ReleasedBenchError(f"synthesis.released: {without} has no task_info.reasoning (EHR-Ins reasoning data)")
    out = Path(cfg.synthesis.dir)
    report = write_by_patient(records, out, list(cfg.synthesis.splits), cfg, cfg.synthesis.released)
    return {"dir": str(out.resolve()), "totals": report["totals"], "released": True}


def reasoning_settings(cfg: DictConfig) -> dict[str, Any]:
    """What decides the reasoning data: the instruction data it reads and the synthesis settings."""
    node = cast(dict[str, Any], OmegaConf.to_container(cfg.synthesis, resolve=True))
    synthesis = {k: v for k, v in node.items() if k != "dir"}
    return {"instructions": instruction_settings(cfg), "synthesis": synthesis}


def ensure_reasoning(cfg: DictConfig) -> Path:
    """``<synthesis.dir>/train.jsonl``: synthesised (template writer unless configured), or the released
    reasoning items of ``synthesis.released``, when absent or made with other settings."""
    path = Path(cfg.synthesis.dir) / "train.jsonl"
    return ensure_built(path, reasoning_settings(cfg), lambda: synthesize_reasoning(cfg), "reasoning data")


def check_task_mix(cfg: DictConfig) -> None:
    """Before any data is built: the mix's own rules (its schema's, so a stored config is held to them too),
    its task names (with "did you mean") and its counts file."""
    mix = cfg.task_mix
    problems = TaskMixConfig.problems(mix, "task_mix")
    if problems:
        raise ConfigError("; ".join(problems))
    if mix.released and not mix.tasks:
        return
    TaskRegistry(cfg.tasks.extra).select(task_mix_counts(cfg))


def synthesize(cfg: DictConfig) -> dict[str, Any]:
    if cfg.pipeline != "timelines":
        check_task_mix(cfg)
    save_run_config(cfg)
    if cfg.pipeline == "timelines":
        result = prepare_timelines(cfg)
        print_summary(result)
        return result
    if cfg.pipeline == "index":
        result, _, counts = build_sample_index(cfg)
        more = "" if result["index_complete"] else " (the other shard ranges are still to run)"
        Console().print(
            f"sample index: {len(result['index'])} of {len(counts)} task(s) complete{more} in {result['index_dir']}"
        )
        return result
    if cfg.pipeline == "reasoning":
        report = synthesize_reasoning(cfg)
        print_reasoning(report)
        return report
    result = build_instructions(cfg)
    if "timelines" in result:
        print_summary(result)
    print_instructions(result)
    return result
