"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

MODULES = ("hosp", "icu", "ed", "note")


def modules_of(root: Path, modules=MODULES) -> dict[str, Path]:
    """The module directories of a MIMIC-IV-shaped folder, as MimicReader takes them."""
    return {m: root / m for m in modules}


REPO = Path(__file__).resolve().parents[1]

# A small instruction set (60 patients, short prompts) that synthesize.py and train.py both resolve to.
SMALL_DATA = (
    "data.synthetic.n_patients=60",
    "model.tokenizer_patients=40",
    "model.max_input_tokens=384",
    "selection.min_events=2",
    "progress=false",
)


def compose_config(name: str, *overrides: str):
    """``conf/<name>.yaml`` composed with overrides, as the entry point would."""
    from hydra import compose, initialize_config_dir

    from ehrr1.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))
