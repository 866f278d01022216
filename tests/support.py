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


def tiny_architecture():
    """A Qwen3 shape small enough for unit tests (not the embedded model's)."""
    from ehrr1.config import ArchitectureConfig

    return ArchitectureConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        intermediate_size=64,
        max_position_embeddings=1024,
    )


def run_entry_point(script: str, *args: str, cwd: Path, timeout: int = 600):
    """``python <repo>/<script> args...`` in a fresh process, output captured."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def offline_wandb_run(root: Path) -> tuple[Path, bytes]:
    """The single offline W&B run under ``root/wandb`` and the bytes of all its files."""
    runs = list((root / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0], b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())
