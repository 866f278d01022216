"""``conf/backend/``: how prompts become generations, and the sampling parameters they take."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from ehrr1.config.checks import checked, remote_refusal


@dataclass
class SamplingParams:
    temperature: float = checked(0.0, ge=0)  # 0: greedy
    top_p: float = checked(1.0, gt=0, le=1)
    top_k: int = checked(0, ge=0)  # 0: off
    max_tokens: int = checked(2048, ge=1)
    seed: int = 0
    choices: tuple[str, ...] | None = None  # one answer token among these words' first tokens (yes, no)


@dataclass
class BackendConfig:
    """A generation backend (``conf/backend/``): how prompts become generations."""

    name: str = MISSING  # hf, vllm, openai, tabular
    device: str = "auto"  # hf: auto (a GPU when there is one), cpu, cuda, cuda:1, ...
    base_url: str = "http://localhost:8000/v1"  # openai: the server
    served_model: str | None = None  # openai: the model name the server knows (None: the model path)
    tokenizer: str | None = None  # openai: where the chat template comes from (None: the model path)
    concurrency: int = checked(8, ge=1)  # openai: requests in flight
    timeout_s: float = checked(300.0, gt=0)
    max_retries: int = checked(4, ge=0)  # openai: on connection errors, 429 and 5xx, with exponential back-off
    backoff_s: float = checked(1.0, ge=0)
    allow_remote: bool = False  # openai: a server not on this machine receives EHR text: opt in explicitly
    api_key_env: str = "OPENAI_API_KEY"
    tensor_parallel_size: int = checked(1, ge=1)  # vllm: GPUs per replica
    data_parallel_size: int = checked(1, ge=1)  # vllm: replicas, each its own process and GPUs
    max_model_len: int | None = checked(None, ge=1)  # vllm: None: what the model's config allows
    gpu_memory_utilization: float = checked(0.9, gt=0, le=1)  # vllm: share of each GPU for weights and KV cache
    enable_prefix_caching: bool = True  # vllm: samples sharing a patient context reuse its cache
    enforce_eager: bool = False  # vllm: skip CUDA graph capture (faster start, slower decoding)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        if at != "backend" or node.name != "openai" or node.allow_remote:  # the writer's: synthesis.allow_remote
            return []
        refusal = remote_refusal(node.base_url, "backend.allow_remote")
        return [refusal] if refusal else []
