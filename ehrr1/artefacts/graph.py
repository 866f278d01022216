"""The data artefacts, declared once: each one's producer, its inputs, the config nodes it reads and where
it lives.

``synthesize.py pipeline=<step>`` builds one (with whatever it needs that is missing); ``train.py`` and
``evaluate.py`` ask for the file they read through :func:`built`. A builder is handed only the config nodes
it and its inputs declare (:func:`config_for`), so what decides an artefact is written here, and a builder
that reads anything else fails. ARCHITECTURE.md's artefact table is checked against :data:`ARTEFACTS`. Each
producer records the settings that decided its output beside it, and is skipped while they are unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ehrr1.artefacts.index import build_sample_index, check_task_mix, print_index
from ehrr1.artefacts.instructions import (
    build_instructions,
    ensure_instructions,
    instruction_settings,
    print_instructions,
)
from ehrr1.artefacts.reasoning import ensure_reasoning, reasoning_settings, synthesize_reasoning
from ehrr1.artefacts.timelines import prepare_timelines, print_timelines
from ehrr1.config import Pipeline
from ehrr1.errors import ConfigError
from ehrr1.reasoning.pipeline import print_reasoning
from ehrr1.run_config import save_run_config
from ehrr1.utils import changed_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artefact:
    name: str
    where: str  # the config key of its directory
    inputs: tuple[str, ...]  # the artefacts it is made from
    producer: str  # the function that writes it (dotted path: some import transformers, so not at import)
    reads: tuple[str, ...]  # the config nodes its builder reads (its inputs' builders read theirs)
    ensure: Callable[[DictConfig, str], Path] | None = None  # a split's file, built on demand for a run
    settings: Callable[[DictConfig], dict[str, Any]] | None = None  # what decides it (recorded beside it)


ARTEFACTS: tuple[Artefact, ...] = (
    Artefact("synthetic cohort", "data.root", (), "ehrr1.data.synthetic.cohort.generate_cohort", ("data", "progress")),
    Artefact(
        "timelines",
        "timelines.dir",
        ("synthetic cohort",),
        "ehrr1.data.build.build_timelines",
        ("data", "timelines", "progress"),
    ),
    Artefact(
        "sample index",
        "index.dir",
        ("timelines",),
        "ehrr1.tasks.index.build_index",
        ("task_mix", "tasks", "index", "shards", "progress"),
    ),
    Artefact(
        "embedded tokenizer",
        "model.embedded_dir",
        ("timelines",),
        "ehrr1.models.tokenizer.build_embedded_tokenizer",
        ("model", "markdown"),
    ),
    Artefact(
        "instructions",
        "export.dir",
        ("sample index", "embedded tokenizer"),
        "ehrr1.tasks.export.export_samples",
        ("task_mix", "tasks", "selection", "model", "markdown", "export", "index", "shards", "progress"),
        ensure_instructions,
        instruction_settings,
    ),
    Artefact(
        "reasoning data",
        "synthesis.dir",
        ("instructions",),
        "ehrr1.reasoning.pipeline.synthesize_chains",
        ("synthesis", "task_mix", "tasks", "data", "model", "progress"),
        ensure_reasoning,
        reasoning_settings,
    ),
)
BY_NAME = {artefact.name: artefact for artefact in ARTEFACTS}


def upstream(name: str) -> list[str]:
    """The artefacts ``name`` is made from, directly or not, nearest first."""
    found: list[str] = []
    frontier = list(BY_NAME[name].inputs)
    while frontier:
        new = [a for a in dict.fromkeys(frontier) if a not in found]
        found += new
        frontier = [i for a in new for i in BY_NAME[a].inputs]
    return found


def config_for(name: str, cfg: DictConfig) -> DictConfig:
    """The config nodes that build artefact ``name``: those it and its inputs declare (``reads``), resolved
    where they point in ``cfg``. Reading any other node of it fails."""
    keys = {key for artefact in (name, *upstream(name)) for key in BY_NAME[artefact].reads}
    keys &= set(map(str, cfg))
    resolved = copy.deepcopy(cfg)
    for key in keys:
        if OmegaConf.is_config(node := resolved[key]):
            OmegaConf.resolve(node)
    part = OmegaConf.masked_copy(resolved, sorted(keys))
    OmegaConf.set_struct(part, True)
    return part


def built(name: str, cfg: DictConfig, split: str = "train") -> Path:
    """The ``split`` file of artefact ``name`` (one a run reads), built first, with only the config it
    declares, when absent or made with other settings; what that may build besides is said first."""
    artefact = BY_NAME[name]
    if artefact.ensure is None:
        raise ValueError(f"{name} is not built on demand")
    if not (Path(OmegaConf.select(cfg, artefact.where)) / f"{split}.jsonl").exists():
        log.info("the %s are made from the %s: each is built where it is absent", name, ", ".join(upstream(name)))
    return artefact.ensure(config_for(name, cfg), split)


def current(name: str, cfg: DictConfig, split: str = "train") -> bool:
    """Whether the ``split`` file of artefact ``name`` is there and was built with the settings ``cfg`` gives
    it (what :func:`built` would reuse as it is)."""
    artefact = BY_NAME[name]
    if artefact.settings is None:
        raise ValueError(f"{name} is not built on demand")
    directory = Path(OmegaConf.select(cfg, artefact.where))
    return (directory / f"{split}.jsonl").exists() and not changed_settings(
        directory, artefact.settings(config_for(name, cfg))
    )


def artefact_at(cfg: DictConfig, directory: str) -> str | None:
    """The artefact built on demand whose directory is ``directory`` (a stage's ``data`` is ``${export.dir}``
    or ``${synthesis.dir}``); None for any other directory."""
    target = Path(directory).resolve()
    for artefact in ARTEFACTS:
        where = OmegaConf.select(cfg, artefact.where)
        if artefact.ensure is not None and where is not None and Path(where).resolve() == target:
            return artefact.name
    return None


def check_outside_artefacts(cfg: DictConfig, folder: str | Path, key: str) -> None:
    """Refuse a run's output folder (``run_dir``, ``output_dir``) that is, or is inside, an artefact's folder:
    rebuilding that artefact replaces its folder, and with it the weights or results written there."""
    target = Path(folder).resolve()
    for artefact in ARTEFACTS:
        try:
            where = OmegaConf.select(cfg, artefact.where, throw_on_missing=False)
        except OmegaConfBaseException:  # unresolvable here (a real data.root left unset): not in use
            continue
        if not where:
            continue
        home = Path(where).resolve()
        if target == home or home in target.parents:
            raise ConfigError(
                f"{key}={folder} is inside the {artefact.name} folder {home} ({artefact.where}): rebuilding the "
                f"{artefact.name} replaces that folder and would delete what this run writes there; set {key} to a "
                "folder outside it"
            )


@dataclass(frozen=True)
class Step:
    """What ``synthesize.py pipeline=<name>`` runs: build the artefact (and what it needs), then report it."""

    build: Callable[[DictConfig], dict[str, Any]]
    show: Callable[[dict[str, Any]], None]


def _show_instructions(result: dict[str, Any]) -> None:
    if "timelines" in result:
        print_timelines(result)
    print_instructions(result)


STEPS: dict[str, Step] = {
    "timelines": Step(lambda cfg: prepare_timelines(config_for("timelines", cfg)), print_timelines),
    "index": Step(lambda cfg: build_sample_index(config_for("sample index", cfg))[0], print_index),
    "instructions": Step(lambda cfg: build_instructions(config_for("instructions", cfg)), _show_instructions),
    "reasoning": Step(lambda cfg: synthesize_reasoning(config_for("reasoning data", cfg)), print_reasoning),
}


def synthesize(cfg: DictConfig) -> dict[str, Any]:
    """``synthesize.py``: check the task mix (all but the timelines need one), store the run's config, build."""
    if cfg.pipeline != "timelines":
        check_task_mix(cfg)
    save_run_config(cfg)
    step = STEPS[Pipeline(cfg.pipeline).value]  # a stored config holds the name, a composed one the enum
    result = step.build(cfg)
    step.show(result)
    return result
