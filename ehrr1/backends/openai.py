"""Any OpenAI-compatible server (``vllm serve``, ``transformers serve``, ...) through ``/v1/completions``.

Prompts are sent as text with the chat template already applied (by the model's own tokenizer), so the
server sees exactly what training and the other backends see. Requests run with bounded concurrency, time
out, and are retried with exponential back-off on connection errors, 429 and 5xx; a sample that still
fails is returned with its error (scored 0 and counted), never stopping the run. Patient data must not
leave the machine unless the user says so: a non-local server is refused without ``allow_remote``, and
without it the proxy variables (``HTTP_PROXY``, ``ALL_PROXY``, ...) are ignored, since a proxy is a remote
server too.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ehrr1.backends import (
    NO_WORDS,
    YES_WORDS,
    Generation,
    SamplingParams,
    choice_token_ids,
    yes_share,
)
from ehrr1.config import ModelConfig, remote_refusal
from ehrr1.errors import ConfigError
from ehrr1.models.tokenizer import load_tokenizer
from ehrr1.think import answer_prefix, reached_answer

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # alternatives asked for per token (vLLM's default maximum); servers may ignore it


def refuse_remote(base_url: str, opt_in_key: str) -> None:
    """Stop before EHR text would leave this machine for a server the user has not opted in to."""
    refusal = remote_refusal(base_url, opt_in_key)
    if refusal:
        raise ConfigError(refusal)


class OpenAIBackend:
    name = "openai"
    batch_size = 64  # requests handed to the thread pool at once (``concurrency`` of them in flight)

    @classmethod
    def for_model(cls, model_path: str, model: ModelConfig, seed: int = 0, **settings: Any) -> OpenAIBackend:
        """``backend=openai``: the server decides how the model runs; ``settings`` say how to reach it."""
        return cls(model_path, **settings)

    def __init__(
        self,
        model_path: str,
        base_url: str = "http://localhost:8000/v1",
        served_model: str | None = None,
        tokenizer: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        allow_remote: bool = False,
        api_key_env: str = "OPENAI_API_KEY",
    ):
        if not allow_remote:
            refuse_remote(base_url, "backend.allow_remote")
        self.tokenizer = load_tokenizer(tokenizer or model_path)
        self.model = served_model or model_path
        self.url = base_url.rstrip("/") + "/completions"
        key = os.environ.get(api_key_env)
        self.client = httpx.Client(
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            trust_env=allow_remote,  # HTTP(S)_PROXY would carry the EHR text off this machine: opted-in use only
        )
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def generate(
        self, prompts: list[str], sampling: SamplingParams, answer_scores: list[bool] | None = None
    ) -> list[Generation]:
        wants = answer_scores or [False] * len(prompts)
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda pw: self.complete(pw[0], sampling, pw[1]), zip(prompts, wants, strict=True)))

    def complete(self, prompt: str, sampling: SamplingParams, want_score: bool) -> Generation:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
        }
        if sampling.top_k:
            body["top_k"] = sampling.top_k
        if sampling.choices:  # the reference's +100 logit bias on the answer words' first tokens
            body["logit_bias"] = {str(i): 100 for i in choice_token_ids(self.tokenizer, sampling.choices)}
        answer_first = want_score and reached_answer(prompt, "")  # thinking off: the first token is the answer
        if answer_first:
            body["logprobs"] = TOP_LOGPROBS
        try:
            choice = self.post(body)["choices"][0]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            return Generation("", "error", None, error=f"{type(exc).__name__}: {exc}")
        text = choice.get("text") or ""
        p_yes = None
        if answer_first:
            p_yes = first_token_p_yes(choice.get("logprobs"))
        elif want_score and reached_answer(prompt, text):
            p_yes = self.next_token_p_yes(prompt + answer_prefix(text))
        if sampling.choices and text.strip() not in sampling.choices and p_yes is not None:
            text = sampling.choices[0] if p_yes >= 0.5 else sampling.choices[1]  # a server that ignored the bias
        return Generation(text, "length" if choice.get("finish_reason") == "length" else "stop", p_yes)

    def next_token_p_yes(self, prefix: str) -> float | None:
        """P(yes) of the token after ``prefix`` (the prompt and the closed reasoning): one greedy token."""
        body = {"model": self.model, "prompt": prefix, "max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}
        try:
            return first_token_p_yes(self.post(body)["choices"][0].get("logprobs"))
        except (httpx.HTTPError, KeyError, IndexError, ValueError):
            return None

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on connection errors, timeouts, 429 and 5xx (exponential back-off)."""
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.post(self.url, json=body)
                if response.status_code == 429 or response.status_code >= 500:
                    raise httpx.HTTPStatusError(f"{response.status_code}", request=response.request, response=response)
                response.raise_for_status()
                return response.json()
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                retryable = (
                    not isinstance(exc, httpx.HTTPStatusError)
                    or exc.response.status_code in (429,)
                    or (exc.response.status_code >= 500)
                )
                if not retryable or attempt == self.max_retries:
                    raise
                log.debug("retrying %s after %s", self.url, exc)
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")


def first_token_p_yes(logprobs: dict[str, Any] | None) -> float | None:
    """P(yes) / (P(yes) + P(no)) from the first generated token's top alternatives, when the server sent them."""
    if logprobs is None:
        return None
    try:
        top = logprobs["top_logprobs"][0]
    except (TypeError, KeyError, IndexError):
        return None
    if not top:
        return None
    yes = sum(math.exp(v) for k, v in top.items() if k.strip() in YES_WORDS)
    no = sum(math.exp(v) for k, v in top.items() if k.strip() in NO_WORDS)
    return yes_share(yes, no)
