"""A prompt's exact token count from its pieces, each tokenised once, for tokenizers that allow it.

A byte-level BPE tokenizer encodes each pre-token on its own, so a text's token count is the sum of its
parts' counts wherever the parts are cut at pre-token boundaries. With the regex splits listed below
(GPT-2's, Qwen2/Qwen3's, Llama 3's), the position after a newline that is followed by a non-whitespace
character is always such a boundary: no pattern reaches over a newline into a following non-space
character, and the patterns that look ahead (``\\s+(?!\\S)``) only ask whether that character is a
non-space. So a piece that ends at such a position has the same tokens alone, followed by any non-space
character (``SENTINEL``), as in the prompt. EHR sections are joined by blank lines and start with a
non-space character, so the prompt is cut before each section, and each section's count is reused by
every prompt that shows it. Any other tokenizer (a normaliser that rewrites text, another split, a chat
template that changes the user's text) is counted whole, by the chat template.
"""

from __future__ import annotations

import json
from typing import Any

# Qwen2/Qwen3's pre-tokenizer split: single digits, and punctuation that absorbs the newlines after it.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# Llama 3's (tiktoken cl100k's): Qwen2's with up to three digits together.
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
LINE_START_SPLITS = (QWEN2_SPLIT, LLAMA3_SPLIT)
SENTINEL = "x"
_MARK = "\x00ehrr1-user-content\x00"


def _cuts_at_line_starts(backend: dict[str, Any]) -> bool:
    """Whether a ``tokenizer.json`` (as a dict) always splits after a newline followed by a non-space."""
    normalizer = backend.get("normalizer")
    if normalizer is not None and normalizer.get("type") != "NFC":  # NFC never joins a newline to anything
        return False
    if (backend.get("model") or {}).get("type") != "BPE":
        return False
    if any("\n" in token["content"] for token in backend.get("added_tokens", [])):
        return False
    pre = backend.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel":
        return bool(pre.get("use_regex", True))
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        split, byte_level = pre["pretokenizers"]
        return (
            split.get("type") == "Split"
            and (split.get("pattern") or {}).get("Regex") in LINE_START_SPLITS
            and split.get("behavior") == "Isolated"
            and not split.get("invert", False)
            and byte_level.get("type") == "ByteLevel"
            and not byte_level.get("use_regex", True)
        )
    return False


class PieceCounter:
    """Counts of prompt pieces (cached by text) that add up to the chat-templated prompt's count."""

    def __init__(self, backend: Any, prefix: str, suffix: str):
        self.backend, self.prefix, self.suffix = backend, prefix, suffix
        self._sentinel = len(backend.encode(SENTINEL, add_special_tokens=False).ids)
        self._counts: dict[tuple[str, bool], int] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, system: str) -> PieceCounter | None:
        """The counter for a Hugging Face tokenizer's prompts with ``system``; None where counts do not add up."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or not getattr(tokenizer, "chat_template", None):
            return None
        if not _cuts_at_line_starts(json.loads(backend.to_str())):
            return None

        def rendered(user: str) -> str:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

        prefix, found, suffix = rendered(_MARK).partition(_MARK)
        probe = "# a\n\nb | c\n"
        if not found or rendered(probe) != prefix + probe + suffix:
            return None  # the template changes the user's text: only whole prompts can be counted
        return cls(backend, prefix, suffix)

    def counts(self, pieces: list[str], last: bool = False) -> list[int]:
        """Tokens of each piece; ``last``: the pieces end the prompt (else a non-space character follows)."""
        missing = list(dict.fromkeys(p for p in pieces if (p, last) not in self._counts))
        if missing:
            texts = missing if last else [p + SENTINEL for p in missing]
            encoded = self.backend.encode_batch(texts, add_special_tokens=False)
            less = 0 if last else self._sentinel
            self._counts.update(((p, last), len(e.ids) - less) for p, e in zip(missing, encoded, strict=True))
        return [self._counts[(p, last)] for p in pieces]

    def clear(self) -> None:
        self._counts.clear()
