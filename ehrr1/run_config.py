"""The record every run keeps of itself: its composed config, resolved, so re-running from it reproduces it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ehrr1.errors import DataError
from ehrr1.utils import atomic_write_text, read_user_text


def save_run_config(cfg: DictConfig, run_dir: str | Path | None = None) -> Path | None:
    """Store the resolved config as ``<run_dir>/resolved_config.yaml`` (default: Hydra's output directory).

    Hydra's own record of the composed config (``.hydra/config.yaml``) is never written here: a step that runs
    inside another run (the evaluation after training) keeps its config in its own directory, so each run's
    record stays the config it was composed from."""
    from hydra.core.hydra_config import HydraConfig

    if run_dir is None and HydraConfig.initialized():
        run_dir = HydraConfig.get().runtime.output_dir
    if run_dir is None:
        return None
    path = Path(run_dir) / "resolved_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def load_run_config(path: str | Path, key: str) -> DictConfig:
    """A run's stored config (``resolved_config.yaml``), read as a file a setting (``key``) points at: a regular,
    bounded YAML file holding a mapping, else one message naming it and the parser's reason."""
    import yaml  # type: ignore[import-untyped]  # PyYAML, which OmegaConf parses with

    text = read_user_text(path, key)
    try:
        loaded = OmegaConf.create(text)
    except (yaml.YAMLError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"{key}: {path} is not a stored config ({reason})") from None
    if not isinstance(loaded, DictConfig):
        raise DataError(f"{key}: {path} is not a stored config (expected a mapping of settings)")
    return loaded
