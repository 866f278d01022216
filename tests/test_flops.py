"""GPU-side choices tested on CPU: the MFU formula (PaLM's, attention counted), packing, attention, fused AdamW."""

from __future__ import annotations

import types

import pytest
import torch

from ehrr1.config import ModelConfig, Toggle, settings_of
from ehrr1.errors import ConfigError
from ehrr1.models.factory import init_random_model, qwen3_config
from ehrr1.training.base import fused_adamw
from ehrr1.training.curriculum import packs, training_attention
from ehrr1.training.flops import attended_span, flops_inputs, matmul_params, mfu
from tests.support import compose_config, tiny_architecture


def test_qwen3_1_7b_at_8k_tokens_costs_16_gflop_per_token_and_40_percent_mfu_is_24_800_tokens_per_s(tokenizer):
    model = settings_of(ModelConfig, compose_config("train", "model=qwen3_1.7b").model)
    inputs = flops_inputs(qwen3_config(model.architecture, tokenizer), attended=8192)
    hidden, layers, inter, vocab = 2048, 28, 6144, 151936
    per_layer = hidden * 16 * 128 * 2 + hidden * 8 * 128 * 2 + 3 * hidden * inter  # q, o; k, v; gate, up, down
    assert inputs.matmul_params == layers * per_layer + hidden * vocab  # the LM head counts, the embedding not
    assert (inputs.layers, inputs.heads, inputs.head_dim) == (28, 16, 128)
    assert inputs.per_token == pytest.approx(6 * inputs.matmul_params + 12 * 28 * 16 * 128 * 8192)
    assert inputs.per_token / 1e9 == pytest.approx(15.96, abs=0.01)
    assert mfu(9615, inputs.per_token, 989) == pytest.approx(0.155, abs=0.001)  # the H200 measurement
    assert 0.4 * 989e12 / inputs.per_token == pytest.approx(24_800, rel=0.01)


def test_a_tied_lm_head_still_counts_once_and_the_meta_model_matches_a_real_one(tokenizer):
    model = init_random_model(tiny_architecture(), tokenizer, seed=0)
    assert model.config.tie_word_embeddings  # the embedded model ties its LM head to the embedding
    real = matmul_params(model)
    assert real == flops_inputs(model.config, attended=1).matmul_params
    assert real < sum(p.numel() for p in model.parameters()) + model.lm_head.weight.numel()
    assert real >= model.lm_head.weight.numel()


def test_the_attended_span_is_the_token_weighted_document_length():
    assert attended_span([8192]) == 8192
    assert attended_span([100, 300]) == pytest.approx((100**2 + 300**2) / 400)  # 250, not the mean 200


@pytest.mark.parametrize(
    ("packing", "attention", "expected"),
    [
        (Toggle.auto, "flash_attention_2", True),
        (Toggle.auto, "flex_attention", True),
        (Toggle.auto, "sdpa", False),
        (Toggle.auto, "eager", False),
        (Toggle.on, "sdpa", True),
        (Toggle.off, "flex_attention", False),
    ],
)
def test_packing_auto_follows_document_sparse_attention(packing, attention, expected):
    assert packs(packing, attention) is expected


def test_flex_attention_trains_only_on_a_gpu_and_says_so_in_one_line():
    assert training_attention("flex_attention", on_gpu=True) == "flex_attention"
    assert training_attention("auto", on_gpu=False) == "sdpa"
    with pytest.raises(ConfigError, match="flex_attention cannot train on CPU: PyTorch's FlexAttention has no back"):
        training_attention("flex_attention", on_gpu=False)


def test_adamw_fuses_only_where_every_parameter_is_on_a_gpu():
    cpu = torch.zeros(2)
    on = [types.SimpleNamespace(device=torch.device("cuda", 0))] * 2  # a GPU's parameters, as the predicate sees them
    assert fused_adamw(on) and not fused_adamw([cpu]) and not fused_adamw([*on, cpu]) and not fused_adamw([])
