"""Model FLOPs utilisation (MFU) as PaLM defines it, with attention counted.

Training one token costs ``6 N`` FLOPs for the matmul parameters ``N`` (forward 2N, backward 4N; every
``nn.Linear`` weight, the LM head included even when tied to the input embedding, whose lookup is no
matmul) plus ``12 L H d S`` for attention (QK^T and AV, forward and backward, over a sequence of ``S``
tokens; like PaLM, not halved for the causal mask). MFU is the achieved share of the accelerator's dense
peak. Recomputation under activation checkpointing is not counted (that would be hardware FLOPs utilisation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig


@dataclass(frozen=True)
class FlopsInputs:
    matmul_params: int  # N: the weights of every nn.Linear (LM head included)
    layers: int
    heads: int
    head_dim: int
    attended: float  # S: the sequence a token belongs to, in tokens (its document's length under packing)

    @property
    def per_token(self) -> float:
        return 6 * self.matmul_params + 12 * self.layers * self.heads * self.head_dim * self.attended

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"flops_per_token": self.per_token}


def matmul_params(model: torch.nn.Module) -> int:
    """Weights every token multiplies by: each nn.Linear's, counted once per module (a tied LM head too)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_inputs(config: PretrainedConfig, attended: float) -> FlopsInputs:
    """The formula's inputs for an architecture; its weights are sized on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return FlopsInputs(matmul_params(model), config.num_hidden_layers, heads, head_dim, attended)


def attended_span(lengths: list[int]) -> float:
    """S averaged over tokens when each sequence attends only to itself: sum(l^2) / sum(l).

    Under packing a token attends within its own document, so S is its document's length, not the packed
    sequence's."""
    return sum(n * n for n in lengths) / sum(lengths)


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float) -> float:
    """Achieved over peak: tokens/s x FLOPs per token / (peak TFLOP/s x 1e12)."""
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12)
