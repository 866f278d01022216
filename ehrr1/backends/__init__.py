"""Generation backends shared by evaluation, RL rollouts and synthesis: a small protocol, picked by name.

A backend turns prompt texts (chat template already applied) into generations. With ``answer_scores``
it also returns, for each prompt, the probability of "yes" against "no" at the answer position (after the
reasoning, when there is one), which risk tasks need for AUROC.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

YES_WORDS, NO_WORDS = ("yes", "Yes", "YES"), ("no", "No", "NO")  # spellings an answer may start with


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_tokens: int = 2048
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # stop (end of turn) or length (max_tokens reached)
    p_yes: float | None = None  # P(yes) / (P(yes) + P(no)) at the answer position, when asked for
    error: str = ""  # set when this sample failed (after retries): it is scored 0 and reported


class Backend(Protocol):
    name: str

    def generate(
        self, prompts: list[str], sampling: SamplingParams, answer_scores: list[bool] | None = None
    ) -> list[Generation]: ...


# name -> (module, class, the install that provides it)
REGISTRY = {
    "hf": ("ehrr1.backends.hf", "HFBackend", "pip install -e ."),
    "openai": ("ehrr1.backends.openai", "OpenAIBackend", "pip install -e ."),
}


def load_backend(name: str, **settings: Any) -> Backend:
    """The backend ``name`` built with ``settings``; its module is imported only now."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend '{name}': choose from {', '.join(sorted(REGISTRY))}")
    module, cls, install = REGISTRY[name]
    try:
        backend_cls = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ImportError(f"backend '{name}' is not installed ({exc}): {install}") from exc
    return backend_cls(**settings)
