"""Tokenizers: the embedded byte-level BPE tokenizer trained on EHR markdown, and loading real ones.

The embedded tokenizer is trained (``tokenizers`` library) on rendered timelines, carries a Qwen-style
chat template that honours ``enable_thinking``, and is saved in Hugging Face format so every HF tool
loads it. ``<think>`` and ``</think>`` are ordinary added tokens, as in Qwen3.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ehrr1.errors import MissingInputError, ModelLoadError, UserError
from ehrr1.resumable import reusable
from ehrr1.tasks.token_count import QWEN2_SPLIT
from ehrr1.think import THINK_CLOSE, THINK_OPEN
from ehrr1.utils import BUILT_WITH, atomic_output, digest, locked, record_settings

log = logging.getLogger(__name__)

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# Qwen3-style ChatML. With enable_thinking=false the generation prompt ends in an empty think block.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, split: str = "gpt2") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, with chat template and think tokens.

    ``split`` is the pre-tokenizer: ``gpt2`` (byte-level BPE's own) or ``qwen2`` (Qwen's, see QWEN2_SPLIT).
    """
    tokenizer = Tokenizer(models.BPE())
    if split == "qwen2":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    elif split == "gpt2":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        raise ValueError(f"unknown tokenizer split '{split}': choose gpt2 or qwen2")
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=None,
        padding_side="left",
        model_max_length=1 << 20,
    )
    fast.add_tokens([THINK_OPEN, THINK_CLOSE])
    fast.chat_template = CHAT_TEMPLATE
    return fast


# what a saved Hugging Face tokenizer consists of (a rebuild refuses to replace a folder holding anything else)
TOKENIZER_FILES = (
    "tokenizer*", "special_tokens_map.json", "chat_template.*", "vocab.*", "merges.txt", "added_tokens.json",
)  # fmt: skip


def build_embedded_tokenizer(
    texts: Iterator[str], out_dir: str | Path, vocab_size: int = 4096, settings: dict[str, Any] | None = None
) -> Path:
    """Train and save the embedded tokenizer atomically, with the ``settings`` that decide it (its vocabulary,
    the texts it learns from) recorded beside it; reused while they are unchanged, retrained when they differ."""
    out = Path(out_dir)
    settings = {"vocab_size": vocab_size, **(settings or {})}
    with locked(out):
        if reusable(out, "tokenizer.json", settings, "embedded tokenizer", TOKENIZER_FILES):
            return out
        with atomic_output(out, fresh=True) as tmp:
            log.info("training the embedded %d-token BPE tokenizer -> %s", vocab_size, out)
            train_tokenizer(texts, vocab_size).save_pretrained(tmp)
            record_settings(tmp, settings)
    return out


def tokenizer_identity(path: str | Path) -> str:
    """A digest of a saved tokenizer's files: what a model built for it depends on."""
    files = sorted(p for p in Path(path).iterdir() if p.is_file() and p.name != BUILT_WITH)
    return digest([[p.name, hashlib.sha256(p.read_bytes()).hexdigest()] for p in files])


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a local directory or a hub id (hub ids need network access or a local cache).

    A plain fast tokenizer (the embedded one) loads as such, without ``AutoTokenizer``: that imports
    transformers' model registry, ~9 s per process (each export worker's too) on a slow 2-core machine."""
    try:
        if _plain_fast(Path(path)):
            return PreTrainedTokenizerFast.from_pretrained(str(path))
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise unloadable(path, "a tokenizer", "tokenizer files", exc) from None


def _plain_fast(path: Path) -> bool:
    """Whether ``path`` is a local tokenizer whose config names the generic fast tokenizer class."""
    config = path / "tokenizer_config.json"
    if not (config.is_file() and (path / "tokenizer.json").is_file()):
        return False
    try:
        named = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return False  # AutoTokenizer reports it
    return named in ("TokenizersBackend", "PreTrainedTokenizerFast")


def missing_local(path: str | Path) -> bool:
    """Whether ``path`` names a local directory (not a hub id "<org>/<name>") that does not exist."""
    text = str(path)
    local = text.startswith(("/", ".", "~")) or text.count("/") != 1
    return local and not Path(text).expanduser().exists()


def unloadable(path: str | Path, what: str, holding: str, exc: BaseException) -> UserError:
    """One message for a model or tokenizer that cannot be loaded: a missing directory says so plainly."""
    text = str(path)
    if missing_local(text):
        return MissingInputError(f"could not load {what} from '{text}': no such directory")
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return ModelLoadError(
        f"could not load {what} from '{text}': give a local directory holding {holding} or a Hugging Face hub id "
        f"available here (network or local cache); {type(exc).__name__}: {reason}"
    )
