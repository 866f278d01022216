"""The data artefacts, declared once: each one's producer, its inputs and where it lives.

``synthesize.py pipeline=<step>`` builds one (with whatever it needs that is missing); ``train.py`` and
``evaluate.py`` ask for the instruction and reasoning data through :func:`builder_at`; ARCHITECTURE.md's
artefact table is checked against :data:`ARTEFACTS`. Each producer records the settings that decided its
output beside it, and is skipped while they are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ehrr1.artefacts.index import build_sample_index, check_task_mix, print_index
from ehrr1.artefacts.instructions import build_instructions, ensure_instructions, print_instructions
from ehrr1.artefacts.reasoning import ensure_reasoning, synthesize_reasoning
from ehrr1.artefacts.timelines import prepare_timelines, print_timelines
from ehrr1.config import Pipeline
from ehrr1.reasoning.pipeline import print_reasoning
from ehrr1.run_config import save_run_config


@dataclass(frozen=True)
class Artefact:
    name: str
    where: str  # the config key of its directory
    inputs: tuple[str, ...]  # the artefacts it is made from
    producer: str  # the function that writes it (dotted path: some import transformers, so not at import)
    ensure: Callable[[DictConfig], Path] | None = None  # built on demand for a run that reads it


ARTEFACTS: tuple[Artefact, ...] = (
    Artefact("synthetic cohort", "data.root", (), "ehrr1.data.synthetic.cohort.generate_cohort"),
    Artefact("timelines", "timelines.dir", ("synthetic cohort",), "ehrr1.data.build.build_timelines"),
    Artefact("sample index", "index.dir", ("timelines",), "ehrr1.tasks.index.build_index"),
    Artefact(
        "embedded tokenizer", "model.embedded_dir", ("timelines",), "ehrr1.models.tokenizer.build_embedded_tokenizer"
    ),
    Artefact(
        "instructions",
        "export.dir",
        ("sample index", "embedded tokenizer"),
        "ehrr1.tasks.export.export_samples",
        lambda cfg: ensure_instructions(cfg, "train"),
    ),
    Artefact(
        "reasoning data",
        "synthesis.dir",
        ("instructions",),
        "ehrr1.reasoning.pipeline.synthesize_chains",
        ensure_reasoning,
    ),
)


def builder_at(cfg: DictConfig, directory: str) -> Callable[[], Path] | None:
    """What builds the training data at ``directory`` when it is one of the artefacts built on demand (a
    stage's ``data`` is ``${export.dir}`` or ``${synthesis.dir}``); None for any other directory."""
    target = Path(directory).resolve()
    for artefact in ARTEFACTS:
        if (ensure := artefact.ensure) is None:
            continue
        where = OmegaConf.select(cfg, artefact.where)
        if where is not None and Path(where).resolve() == target:
            return lambda: ensure(cfg)
    return None


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
    "timelines": Step(prepare_timelines, print_timelines),
    "index": Step(lambda cfg: build_sample_index(cfg)[0], print_index),
    "instructions": Step(build_instructions, _show_instructions),
    "reasoning": Step(synthesize_reasoning, print_reasoning),
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
