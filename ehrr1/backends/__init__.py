"""Generation backends shared by evaluation, RL rollouts, synthesis and the inference API: a small protocol,
built one way (a ``backend=`` node's ``_target_``: :func:`build_backend`).

A backend turns prompt texts (chat template already applied) into generations. With ``answer_scores``
it also returns, for each prompt, the probability of "yes" against "no" at the answer position (after the
reasoning, when there is one), which risk tasks need for AUROC. With ``SamplingParams.choices`` it answers
with one token restricted to the first tokens of those words (the reference's logit bias on "yes" / "no"),
P(yes) being the share of "yes" between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ehrr1.config import BACKEND_SCHEMAS, ModelConfig, SamplingParams, did_you_mean
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


def backend_config(name: str, **settings: Any) -> DictConfig:
    """The ``backend=<name>`` option's node with ``settings`` over its defaults, as ``evaluate.py`` composes it:
    what :func:`build_backend` builds from, so the Python API and the command line build a backend alike."""
    choices = [n.removesuffix("_schema") for n, s in BACKEND_SCHEMAS.items() if getattr(s, "_target_", None)]
    if name not in choices:
        raise ConfigError(f"unknown backend '{name}': {did_you_mean(name, choices)}")
    try:
        return cast(DictConfig, OmegaConf.merge(OmegaConf.structured(BACKEND_SCHEMAS[f"{name}_schema"]), settings))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"backend {name}: {str(exc).splitlines()[0]}") from None


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


def yes_share(yes: float, no: float) -> float | None:
    """P(yes) / (P(yes) + P(no)) from the probabilities of the two answers (each summed over its spellings);
    None when neither is among the probabilities seen. Every backend's P(yes) is this."""
    return yes / (yes + no) if yes + no > 0 else None
