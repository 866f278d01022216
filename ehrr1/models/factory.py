"""The model factory: Hugging Face causal LMs from a path or hub id, or a Qwen3 shape initialised at random.

The embedded model (``model=tiny``) is a randomly initialised Qwen3-architecture model saved once in HF
format beside its tokenizer, so every Hugging Face tool (and vLLM) loads it like a downloaded model.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM

from ehrr1.config import ArchitectureConfig
from ehrr1.errors import ConfigError
from ehrr1.models.tokenizer import TOKENIZER_FILES, tokenizer_identity, unloadable
from ehrr1.resumable import reusable
from ehrr1.utils import atomic_output, locked, record_settings

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def qwen3_config(arch: ArchitectureConfig | Any, tokenizer: PreTrainedTokenizerBase) -> Qwen3Config:
    vocab = arch.vocab_size or len(tokenizer)
    if vocab < len(tokenizer):
        raise ConfigError(
            f"model.architecture.vocab_size={vocab} is smaller than the tokenizer ({len(tokenizer)} tokens)"
        )
    return Qwen3Config(
        vocab_size=vocab,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
        tie_word_embeddings=arch.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def init_random_model(arch: ArchitectureConfig | Any, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A Qwen3 model of shape ``arch`` with weights drawn from ``seed`` (the same seed gives the same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Qwen3ForCausalLM(qwen3_config(arch, tokenizer))


# what a saved Hugging Face model (with its tokenizer) consists of
MODEL_FILES = (*TOKENIZER_FILES, "config.json", "generation_config.json", "model*.safetensors*", "pytorch_model*")


def build_embedded_model(
    arch: ArchitectureConfig | Any, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path, seed: int
) -> Path:
    """Initialise and save the embedded model (with its tokenizer) atomically, with what decides it (its
    shape, seed and tokenizer) recorded beside it; reused while that is unchanged, built anew when it differs."""
    out = Path(out_dir)
    shape = OmegaConf.to_container(arch, resolve=True) if OmegaConf.is_config(arch) else asdict(arch)
    with tempfile.TemporaryDirectory() as saved:
        tokenizer.save_pretrained(saved)
        settings = {"architecture": shape, "seed": seed, "tokenizer": tokenizer_identity(saved)}
    with locked(out):
        if reusable(out, "config.json", settings, "embedded model", MODEL_FILES):
            return out
        with atomic_output(out, fresh=True) as tmp:
            model = init_random_model(arch, tokenizer, seed)
            n_params = sum(p.numel() for p in model.parameters())
            log.info(
                "initialised the embedded Qwen3 model (%.2f M parameters, seed %d) -> %s", n_params / 1e6, seed, out
            )
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            record_settings(tmp, settings)
    return out


def resolve_attention(requested: str, on_gpu: bool) -> str:
    """``auto``: flash-attention 2 on a GPU when the package is installed, else PyTorch SDPA."""
    if requested == "auto":
        return "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError(
            "model.attn_implementation=flash_attention_2 needs flash-attn: pip install -e '.[gpu]' "
            "(or model.attn_implementation=sdpa)"
        )
    return requested


def load_model(path: str | Path, dtype: str = "float32", attn_implementation: str = "sdpa") -> PreTrainedModel:
    """A causal LM from a local directory or hub id, with one clear message when it cannot be loaded."""
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path), dtype=DTYPES[dtype], attn_implementation=attn_implementation
        )
    except (OSError, ValueError) as exc:
        raise unloadable(path, "a model", "a Hugging Face checkpoint (config.json + weights)", exc) from None
