"""The record every run keeps of itself: its composed config, resolved, so re-running from it reproduces it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ehrr1.utils import atomic_write_text


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
