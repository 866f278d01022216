"""``conf/model/``: where the weights come from, their shape when initialised at random, and prompt budgets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING, DictConfig

from ehrr1.config.checks import checked, path_name


class ThinkingSwitch(str, Enum):
    enable_thinking = "enable_thinking"  # the chat template takes enable_thinking (Qwen3, EHR-R1-1.7B/8B)
    closed_think = "closed_think"  # append an empty think block to turn reasoning off (EHR-R1-72B)
    suffix = "suffix"  # Qwen3's soft switch: "/think" or "/no_think" after the user turn (the reference's SFT, GRPO)


class AttentionImplementation(str, Enum):
    auto = "auto"  # flash_attention_2 on a GPU when flash-attn is installed, else sdpa
    sdpa = "sdpa"
    eager = "eager"
    flash_attention_2 = "flash_attention_2"
    flex_attention = "flex_attention"  # PyTorch FlexAttention: block-sparse masks for packed sequences


class WeightsDtype(str, Enum):
    float32 = "float32"  # master weights for mixed precision (hardware.precision) and CPU training
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class ArchitectureConfig:
    """A Qwen3-architecture shape: the embedded model's, or any model initialised at random (``path: null``).
    The shape has no default: each model option states its own."""

    hidden_size: int = checked(MISSING, ge=1)
    num_hidden_layers: int = checked(MISSING, ge=1)
    num_attention_heads: int = checked(MISSING, ge=1)
    num_key_value_heads: int = checked(MISSING, ge=1)
    head_dim: int = checked(MISSING, ge=1)
    intermediate_size: int = checked(MISSING, ge=1)
    max_position_embeddings: int = checked(MISSING, ge=1)
    rope_theta: float = checked(1_000_000.0, gt=0)
    tie_word_embeddings: bool = True
    vocab_size: int | None = checked(None, ge=1)  # None: the tokenizer's size

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        heads, kv = node.num_attention_heads, node.num_key_value_heads
        if heads >= 1 and kv >= 1 and heads % kv:
            return [f"{at}.num_attention_heads={heads} must be a multiple of {at}.num_key_value_heads={kv}"]
        return []


@dataclass
class ModelConfig:
    """The model: where its weights come from, how it is loaded, and how prompts are built for it."""

    name: str = path_name()
    path: str | None = None  # local directory or hub id; None: random init of ``architecture`` (the embedded model)
    embedded_dir: str | None = None  # where the embedded model and its tokenizer are written
    architecture: ArchitectureConfig | None = None
    dtype: WeightsDtype = WeightsDtype.float32
    attn_implementation: AttentionImplementation = AttentionImplementation.auto
    thinking_switch: ThinkingSwitch = ThinkingSwitch.enable_thinking
    max_input_tokens: int = checked(MISSING, ge=1)  # prompt budget: the EHR is cut from its oldest events to fit
    context_length: int = checked(MISSING, ge=1)  # longest training sequence (prompt + answer)
    tokenizer_vocab_size: int = checked(4096, ge=300)  # embedded tokenizer only (256 bytes, specials, merges)
    tokenizer_patients: int = checked(500, ge=1)  # embedded tokenizer: patients whose markdown it is trained on
