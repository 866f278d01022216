"""The instruction data: ``<export.dir>/<split>.jsonl`` (EHR-Ins train / val, EHR-Bench test), from the sample
index through selection and prompts, or the released EHR-Ins items split by patient; and the embedded
tokenizer the prompts are counted with."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import Container, DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from ehrr1.artefacts.index import build_sample_index
from ehrr1.artefacts.timelines import shard_range
from ehrr1.config import SPLITS, settings_of
from ehrr1.data.markdown import render_events
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import ConfigError, UserError
from ehrr1.evaluation.released import TRAJECTORIES, ReleasedBenchError, iter_released, release_of
from ehrr1.tasks.export import export_samples
from ehrr1.tasks.index import iter_index
from ehrr1.tasks.prompt import PromptBuilder
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.select import SelectionSettings, SplitRatios, select, subject_split
from ehrr1.utils import (
    atomic_output,
    atomic_write_json,
    atomic_write_text,
    digest,
    ensure_built,
    file_fingerprint,
    read_json,
    record_settings,
)

log = logging.getLogger(__name__)


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

    learnt_from = {
        "patients": model.tokenizer_patients,
        "markdown": str(cfg.markdown.style),
        "timelines": store.manifest.get("fingerprint"),
    }
    directory = build_embedded_tokenizer(
        texts(), Path(model.embedded_dir) / "tokenizer", model.tokenizer_vocab_size, learnt_from
    )
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
    key = "task_mix.released"
    records = iter_released(cfg.task_mix.released, registry, list(cfg.task_mix.tasks) or None, key=key)
    out = Path(cfg.export.dir)
    report = write_by_patient(records, out, list(cfg.task_mix.splits), cfg, cfg.task_mix.released, key)
    return {"instructions": report, "export_dir": str(out.resolve())}


def write_by_patient(
    records: Iterable[InstructionRecord], out: Path, splits: list[str], cfg: DictConfig, source: str, key: str
) -> dict[str, Any]:
    """Released records split by patient (the mix's split ratios and seed) into ``<out>/<split>.jsonl``,
    with ``stats.json`` naming their ``source`` so data built otherwise is never taken for them. Records are
    written as they come (EHR-Ins is millions of items); each file appears whole or not at all."""
    settings = mix_selection(cfg)
    report: dict[str, dict[str, dict[str, Any]]] = {split: {} for split in splits}
    totals = dict.fromkeys(splits, 0)
    read = anonymous = 0
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        files = {}
        for split in splits:
            tmp = stack.enter_context(atomic_output(out / f"{split}.jsonl"))
            files[split] = stack.enter_context(open(tmp, "w", encoding="utf-8"))
        for record in records:
            read += 1
            anonymous += record["subject_id"] is None
            patient = record["subject_id"] if record["subject_id"] is not None else record["id"]
            split = subject_split(patient, settings.split, settings.seed)
            if split not in files:
                continue
            files[split].write(json.dumps({**record, "split": split}, ensure_ascii=False) + "\n")
            totals[split] += 1
            entry = report[split].setdefault(
                record["task"], {"samples": 0, "mean_context_events": "", "mean_prompt_tokens": ""}
            )
            entry["samples"] += 1
            if record["kind"] == "risk":
                label = record["target"][0]
                entry.update({side: entry.get(side, 0) + (side == label) for side in ("yes", "no")})
        if not read:
            raise ReleasedBenchError(f"{key}: {source} holds no item")
    if anonymous:
        log.warning(
            "%s: %d of %d items carry no subject_id (the Hub's files have none): they are split item by item, "
            "so one patient's items can be in training and in test (see docs/released-files.md)",
            source, anonymous, read,
        )  # fmt: skip
    atomic_write_json(out / "stats.json", {"source": str(source), "totals": totals, "splits": report})
    return {"totals": totals, "splits": report}


def build_instructions(cfg: DictConfig) -> dict[str, Any]:
    """timelines -> sample index -> selection -> prompts -> JSONL (EHR-Ins train/val, EHR-Bench test); or the
    released EHR-Ins items of ``task_mix.released``. With ``shards``, only those shards' prompts (one job of
    an array); a run without it joins them."""
    if cfg.task_mix.released:
        result = export_released(cfg)
        keep_only_splits(Path(cfg.export.dir), cfg.task_mix.splits, result["instructions"]["totals"])
        record_settings(Path(cfg.export.dir), instruction_settings(cfg))
        return result
    result, registry, counts = build_sample_index(cfg)
    if not result["index_complete"]:
        raise UserError(
            f"the sample index at {result['index_dir']} is not complete: run `synthesize.py pipeline=index` "
            "over every shard range first (see docs/performance.md, 'Every core, then several machines')"
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
        keep_only_splits(Path(cfg.export.dir), cfg.task_mix.splits, report["totals"])
        record_settings(Path(cfg.export.dir), instruction_settings(cfg))
    result.update({key: report, "export_dir": str(Path(cfg.export.dir).resolve())})
    return result


def keep_only_splits(directory: Path, splits: Iterable[str], written: Mapping[str, Any]) -> None:
    """After a whole build: each of ``splits`` that got no rows is an empty file, and every other split's file
    is removed, so no file of an earlier build (another seed, other splits) passes for this build's."""
    for split in SPLITS:
        path = directory / f"{split}.jsonl"
        if split not in splits:
            path.unlink(missing_ok=True)
        elif split not in written:
            atomic_write_text(path, "")


def check_split(split: str, built: Iterable[str], key: str) -> None:
    """A run asks for a split its data is built with (``key``: the setting that lists them)."""
    if split not in built:
        raise ConfigError(f"split {split}: not among {key}={list(built)}, so it is not built; add it there")


def instruction_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings that decide the instruction data: the source, the events and their text, the tasks, the
    selection and the prompts (not where things live, nor how many workers build them), and what lies at the
    paths they name: the timelines built (their fingerprint), a task-mix file's and released items' files."""

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else node

    manifest = Path(cfg.timelines.dir) / "manifest.json"
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
        "inputs": {
            "timelines": read_json(manifest).get("fingerprint") if manifest.exists() else None,
            "task_mix.file": content_digest(cfg.task_mix.file),
            "task_mix.released": path_fingerprint(cfg.task_mix.released),
        },
    }


def content_digest(path: str | None) -> str | None:
    """A digest of a small file's contents (a task-mix file: edited in place within a second, its size the same)."""
    return digest(Path(path).read_text(encoding="utf-8")) if path is not None and Path(path).is_file() else None


def path_fingerprint(path: str | None) -> list[list[Any]] | None:
    """The identity (path, size, modification time) of a file, or of every file under a folder. For a release
    folder (or one of its index files) that is also its dictionaries and candidate files, and its hundreds of
    thousands of trajectories as one entry (their number, total size, latest modification), which keeps the
    identity small."""
    if path is None or not Path(path).exists():
        return None
    root = Path(path)
    release = release_of(root)
    if release is None:
        return file_fingerprint([root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()])
    bulk = release / TRAJECTORIES
    named = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and bulk not in p.parents]
    shared = [p for folder in ("index_mapping", "cache") for p in (release / folder).rglob("*") if p.is_file()]
    stats = [entry.stat() for entry in os.scandir(bulk) if entry.is_file()] if bulk.is_dir() else []
    summary = [
        str(bulk.resolve()),
        len(stats),
        sum(s.st_size for s in stats),
        max((int(s.st_mtime) for s in stats), default=0),
    ]
    return [*file_fingerprint(set(named) | set(shared)), summary]


def patient_split(settings: dict[str, Any]) -> dict[str, Any]:
    """What puts each patient in a split of data built with ``settings`` (the instruction settings, or the
    reasoning data's, which hold them): the split shares and the seed (:func:`subject_split`). Data split alike
    puts every patient in the same split whatever its tasks, prompts or cohort."""
    settings = settings.get("instructions", settings)
    return {
        "selection.split": settings["task_mix"].get("split") or settings["selection"]["split"],
        "selection.seed": settings["selection"]["seed"],
    }


def ensure_instructions(cfg: DictConfig, split: str) -> Path:
    """``<export.dir>/<split>.jsonl``, built (the whole instructions pipeline) when absent or made with other
    settings (``instruction_settings``)."""
    check_split(split, cfg.task_mix.splits, "task_mix.splits")
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
