"""A training run's folder, opened before anything heavy is imported: the config it runs with (a resumed run's
stored one, refusing overrides that would change it), where it is, and the checks that refuse a folder before
any work (inside an artefact's folder, another run's)."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ehrr1.artefacts.graph import check_outside_artefacts
from ehrr1.errors import ConfigError, MissingInputError, resume_with
from ehrr1.run_config import load_run_config
from ehrr1.utils import differences

log = logging.getLogger(__name__)


class OpenedRun(NamedTuple):
    cfg: DictConfig  # the config the run trains with (a resumed run's: the stored one)
    run_dir: Path
    resumed: bool


def open_run(cfg: DictConfig) -> OpenedRun:
    """The run ``cfg`` asks for (``resume=`` or a new one), refused before any work when its folder is inside an
    artefact's or ``resume=`` is given overrides that differ from the run's; an interruption's resume command."""
    resumed = bool(cfg.resume)
    if resumed:
        run_dir = Path(cfg.resume)
        cfg = stored_run_config(cfg, run_dir)
    else:
        run_dir = run_directory(cfg)
    check_outside_artefacts(cfg, run_dir, "resume" if resumed else "run_dir")
    resume_with(f"python train.py resume={shlex.quote(str(run_dir))}")
    return OpenedRun(cfg, run_dir, resumed)


def run_directory(cfg: DictConfig) -> Path:
    """``run_dir``, else Hydra's output folder for this run."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise ValueError("set run_dir: train() runs outside a Hydra app")
    return Path(HydraConfig.get().runtime.output_dir)


# settings that change how a run reports, never what it computes: they may differ when it is resumed
RESUME_MAY_CHANGE = ("progress", "debug", "private_files")


def stored_run_config(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """The config ``resume=<run_dir>`` continues with: the one the run stored. Overrides given with ``resume=``
    (``overrides``: the keys they set; None: this command's) that would change it are refused, listed (the
    stages already trained used the stored values); those that only change how it reports
    (:data:`RESUME_MAY_CHANGE`) are taken."""
    stored_path = run_dir / "resolved_config.yaml"
    if not stored_path.exists():
        raise MissingInputError(f"resume={run_dir}: no resolved_config.yaml there (not a train.py run)")
    log.info("resuming %s with its stored config", run_dir)
    stored = load_run_config(stored_path, "resume")
    if earlier_layout(stored):
        raise ConfigError(
            f"resume={run_dir}: its config was stored by an earlier ehrr1 (a curriculum list, a logger "
            "kind, stage.grpo.lr): finish it with that version, or start the run anew"
        )
    differ = []
    for key in given_overrides() if overrides is None else overrides:
        if key.split(".")[0] in RESUME_MAY_CHANGE:
            OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False)
            continue
        if key == "experiment":  # a package-global group may set any key: every one it changes is listed
            whole = differences(_resolved(stored, ""), _resolved(cfg, ""))
            differ += [f"{k} (set by experiment=...)" for k in whole if k.split(".")[0] not in ("resume", "run_dir")]
            continue
        was, now = _resolved(stored, key), _resolved(cfg, key)
        if was != now:
            differ.append(f"{key} (the run's: {_short(was)}, given: {_short(now)})")
    if differ:
        raise ConfigError(
            f"resume={run_dir} continues the run with the settings it was started with, and these overrides "
            f"differ from them: {'; '.join(differ)}. Resume without them, or start a new run (another run_dir) "
            "with the settings you want"
        )
    return stored


def given_overrides() -> list[str]:
    """The config keys this command's overrides set (``resume`` and Hydra's own left out); a group choice
    (``model=qwen3_8b``) names its node, an experiment every key."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = []
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~").split("@")[0].strip()
        if key and key != "resume" and not key.startswith("hydra"):
            keys.append(key)
    return keys


def _resolved(cfg: DictConfig, key: str) -> Any:
    """The value at ``key`` (the whole config for ``""``), resolved, as plain data."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=False) if key else cfg
    except OmegaConfBaseException:
        return "(cannot be resolved)"
    return OmegaConf.to_container(value, resolve=True, enum_to_str=True) if OmegaConf.is_config(value) else value


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_same_run(cfg: DictConfig, run_dir: Path) -> None:
    """A run directory holds one run: starting again in it (without ``resume=``) is allowed with the config it
    was started with, which then continues it, and refused with another one, whose record would describe stages
    trained with other settings."""
    stored = run_dir / "resolved_config.yaml"
    if not stored.exists():
        return
    before = OmegaConf.to_container(OmegaConf.load(stored), resolve=True)
    now = OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)), resolve=True)
    changed = differences(before, now)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ConfigError(
            f"run_dir={run_dir} holds a run started with other settings ({shown}): continue it with "
            f"resume={run_dir}, or give this run another run_dir"
        )


def earlier_layout(cfg: DictConfig) -> bool:
    """Whether a stored config has a layout this version cannot run: a curriculum list, a logger kind, or
    GRPO's own learning rate (now the RL recipe's ``optim.lr``)."""
    if "_target_" not in cfg.logger or "curriculum" not in cfg or not OmegaConf.is_dict(cfg.curriculum):
        return True
    stages = [cfg.stage, *cfg.curriculum.values(), *cfg.stages.values()]
    return any(OmegaConf.is_dict(s) and "lr" in s.get("grpo", {}) for s in stages)
