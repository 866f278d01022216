"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

MODULES = ("hosp", "icu", "ed", "note")


def modules_of(root: Path, modules=MODULES) -> dict[str, Path]:
    """The module directories of a MIMIC-IV-shaped folder, as MimicReader takes them."""
    return {m: root / m for m in modules}
