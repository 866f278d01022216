"""The reasoning data of stage 2: ``<synthesis.dir>/<split>.jsonl``, chains synthesised for the instruction
records (``synthesize.py pipeline=reasoning``), or the released EHR-Ins reasoning items split by patient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ehrr1.artefacts.instructions import (
    check_split,
    ensure_instructions,
    instruction_settings,
    keep_only_splits,
    path_fingerprint,
    write_by_patient,
)
from ehrr1.evaluation.released import ReleasedBenchError, iter_released
from ehrr1.reasoning.pipeline import synthesize_chains
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import TaskRegistry
from ehrr1.utils import ensure_built, record_settings


def synthesize_reasoning(cfg: DictConfig) -> dict[str, Any]:
    """The reasoning data: the released items of ``synthesis.released``, or chains synthesised for the
    instruction records of ``synthesis.splits`` (built first when absent)."""
    if cfg.synthesis.released:
        report = released_reasoning(cfg)
    else:
        report = synthesize_chains(cfg, {split: ensure_instructions(cfg, split) for split in cfg.synthesis.splits})
    keep_only_splits(Path(cfg.synthesis.dir), cfg.synthesis.splits, report["totals"])
    record_settings(Path(cfg.synthesis.dir), reasoning_settings(cfg))
    return report


def released_reasoning(cfg: DictConfig) -> dict[str, Any]:
    """The released EHR-Ins reasoning items of ``synthesis.released`` (``ehr_ins_reasoning``: chains the
    reference wrote with GPT-4o) as the reasoning data, split by patient like the instruction data."""
    registry = TaskRegistry(cfg.tasks.extra)
    key = "synthesis.released"

    def with_chains() -> Iterator[InstructionRecord]:
        for record in iter_released(cfg.synthesis.released, registry, list(cfg.task_mix.tasks) or None, key=key):
            if not record["reasoning"]:
                where = record["source"]
                raise ReleasedBenchError(f"{key}: {where} has no task_info.reasoning (EHR-Ins reasoning data)")
            yield record

    out = Path(cfg.synthesis.dir)
    report = write_by_patient(with_chains(), out, list(cfg.synthesis.splits), cfg, cfg.synthesis.released, key)
    return {"dir": str(out.resolve()), "totals": report["totals"], "released": True}


def reasoning_settings(cfg: DictConfig) -> dict[str, Any]:
    """What decides the reasoning data: the instruction data it reads and the synthesis settings."""
    node = cast(dict[str, Any], OmegaConf.to_container(cfg.synthesis, resolve=True))
    synthesis = {k: v for k, v in node.items() if k != "dir"}
    released = {"synthesis.released": path_fingerprint(cfg.synthesis.released)}
    return {"instructions": instruction_settings(cfg), "synthesis": synthesis, "inputs": released}


def ensure_reasoning(cfg: DictConfig, split: str = "train") -> Path:
    """``<synthesis.dir>/<split>.jsonl``: synthesised (template writer unless configured), or the released
    reasoning items of ``synthesis.released``, when absent or made with other settings."""
    check_split(split, cfg.synthesis.splits, "synthesis.splits")
    path = Path(cfg.synthesis.dir) / f"{split}.jsonl"
    return ensure_built(path, reasoning_settings(cfg), lambda: synthesize_reasoning(cfg), "reasoning data")
