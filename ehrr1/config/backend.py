"""``conf/backend/``: how prompts become generations, and the sampling parameters they take."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from ehrr1.config.checks import builds, checked, remote_refusal


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
    """A generation backend (``conf/backend/``): ``_target_`` builds it for the model to generate with
    (``<Backend>.for_model(model_path, model, seed, **these settings)``); None: no language model (the tabular
    baseline alone). Each option names its schema (``/hf_schema@_here_``)."""

    _target_: str | None = MISSING


@dataclass
class HFBackendConfig(BackendConfig):
    """Hugging Face generate: batched, left-padded."""

    _target_: str | None = "ehrr1.backends.hf.HFBackend.for_model"
    device: str = "auto"  # auto (a GPU when there is one), cpu, cuda, cuda:1, ...


@dataclass
class OpenAIBackendConfig(BackendConfig):
    """Any OpenAI-compatible server (/v1/completions), the chat template applied here."""

    _target_: str | None = "ehrr1.backends.openai.OpenAIBackend.for_model"
    base_url: str = "http://localhost:8000/v1"
    served_model: str | None = None  # the model name the server knows (None: the model path)
    tokenizer: str | None = None  # where the chat template comes from (None: the model path)
    concurrency: int = checked(8, ge=1)  # requests in flight
    timeout_s: float = checked(300.0, gt=0)
    max_retries: int = checked(4, ge=0)  # on connection errors, 429 and 5xx, with exponential back-off
    backoff_s: float = checked(1.0, ge=0)
    allow_remote: bool = False  # a server not on this machine receives EHR text: opt in explicitly
    api_key_env: str = "OPENAI_API_KEY"

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        if at != "backend" or node.allow_remote:  # the reasoning writer's: synthesis.allow_remote
            return []
        refusal = remote_refusal(node.base_url, "backend.allow_remote")
        return [refusal] if refusal else []


@dataclass
class VLLMBackendConfig(BackendConfig):
    """vLLM's offline engine: continuous batching with prefix caching."""

    _target_: str | None = "ehrr1.backends.vllm.VLLMBackend.for_model"
    tensor_parallel_size: int = checked(1, ge=1)  # GPUs per replica
    data_parallel_size: int = checked(1, ge=1)  # replicas, each its own process and GPUs
    max_model_len: int | None = checked(None, ge=1)  # None: what the model's config allows
    gpu_memory_utilization: float = checked(0.9, gt=0, le=1)  # share of each GPU for weights and KV cache
    enable_prefix_caching: bool = True  # samples sharing a patient context reuse its cache
    enforce_eager: bool = False  # skip CUDA graph capture (faster start, slower decoding)


@dataclass
class TabularBackendConfig(BackendConfig):
    """No language model: the tabular baseline alone (``evaluate.py backend=tabular``)."""

    _target_: str | None = None


BACKEND_SCHEMAS = {
    "hf_schema": HFBackendConfig,
    "openai_schema": OpenAIBackendConfig,
    "vllm_schema": VLLMBackendConfig,
    "tabular_schema": TabularBackendConfig,
}
builds(HFBackendConfig, OpenAIBackendConfig, VLLMBackendConfig)
