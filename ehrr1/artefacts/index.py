"""The sample index: per task, every (patient, anchor event) the task's rules accept, from the timelines
(``synthesize.py pipeline=index``); and the task mix that decides which tasks it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from ehrr1.artefacts.timelines import prepare_timelines, shard_range
from ehrr1.config import TaskMixConfig
from ehrr1.data.timeline import TimelineStore
from ehrr1.errors import ConfigError
from ehrr1.tasks.index import build_index
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.tasks.select import load_data_config


def task_mix_counts(cfg: DictConfig) -> dict[str, int]:
    mix = cfg.task_mix
    counts = load_data_config(mix.file) if mix.file else dict(mix.tasks)
    if not counts:
        raise ConfigError(f"task_mix '{mix.name}' names no tasks: set task_mix.tasks or task_mix.file")
    return counts


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
        index=indexed,
        index_dir=str(Path(cfg.index.dir).resolve()),
        index_tasks=len(tasks),
        index_complete=len(indexed) == len(tasks),
    )
    return result, registry, counts


def print_index(result: dict[str, Any], console: Console | None = None) -> None:
    more = "" if result["index_complete"] else " (the other shard ranges are still to run)"
    done = f"{len(result['index'])} of {result['index_tasks']} task(s) complete"
    (console or Console()).print(f"sample index: {done}{more} in {result['index_dir']}")
