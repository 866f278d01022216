"""Weights & Biases settings shared by training and evaluation."""

from __future__ import annotations

import os
from pathlib import Path

from ehrr1.config import WandbMode


def wandb_mode(mode: WandbMode) -> str:
    """``auto``: online when an API key is configured, offline otherwise (``wandb sync`` uploads later);
    the WANDB_MODE environment variable wins."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if mode is not WandbMode.auto:
        return mode.value
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    return "online" if has_key else "offline"
