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

Each piece's own count comes from ``PreTokenCounter``, which adds up memoised counts of the piece's chunks
by the same argument one level down (cut before spaces), so the tokenizer itself runs only on what it has
not seen.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import regex

# Qwen2/Qwen3's pre-tokenizer split: single digits, and punctuation that absorbs the newlines after it.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# GPT-2's, the split of a ByteLevel pre-tokenizer that uses its own regex.
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Llama 3's (tiktoken cl100k's): Qwen2's with up to three digits together.
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
LINE_START_SPLITS = (QWEN2_SPLIT, LLAMA3_SPLIT)
SENTINEL = "x"
_CUTS = re.compile(r"(?<=\S) ").split  # at each space after a non-space character (``str.split`` cuts at all)
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


def _split_of(backend: dict[str, Any]) -> str | None:
    """The regex a byte-level BPE ``tokenizer.json`` (as a dict) splits by, where no prefix space is added."""
    pre = backend.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return GPT2_SPLIT
    if pre.get("type") == "Sequence" and not pre["pretokenizers"][1].get("add_prefix_space"):
        return pre["pretokenizers"][0]["pattern"]["Regex"]
    return None


def _byte_level_chars() -> list[str]:
    """GPT-2's byte-to-character map: printable bytes stand for themselves, the others for characters from 256."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) if b in printable else chr(256 + others.index(b)) for b in range(256)]


class PreTokenCounter:
    """A text's exact token count without the tokenizer's per-call work, from memos of its chunks' counts.

    The tokenizer cuts the text at its added tokens (one token each; none strips the text beside it) and
    pre-tokenises each stretch between them alone. Within a stretch, the position before a space that follows
    a non-whitespace character is always a pre-token boundary: no pattern of these splits ends with a space or
    runs from a non-space character into one, and the chunk before such a space ends with a non-space
    character, which no pattern looks past. So a stretch is cut at every space (``str.split``) or, where a
    space follows whitespace, at the others only (``_CUTS``); each chunk is looked up in a memo, and only a
    chunk not seen before is split by the tokenizer's regex (here, in ``regex``) into pre-tokens, each
    counted once by the tokenizer's BPE model. EHR markdown repeats its chunks (labels, units, times,
    values), so most lookups hit. Texts with a character other than tab, newline, carriage return, printable
    ASCII and the Latin letters and signs up to U+024F are left to the tokenizer (``count`` returns None):
    there the two regex engines' character classes (Oniguruma's in the tokenizer, ``regex``'s here) agree.
    """

    MEMO_LIMIT = 1 << 20  # distinct chunks or pre-tokens remembered before a memo starts over

    def __init__(self, model: Any, split: str, added: list[str], nfc: bool):
        self._model, self._nfc = model, nfc
        self._split = regex.compile(split).findall
        self._unsafe = re.compile(r"[^\t\n\r\x20-\x7e\xa0-\u024f]").search
        longest_first = sorted(added, key=len, reverse=True)
        self._added = re.compile("|".join(map(re.escape, longest_first))).split if added else None
        self._added_starts = {token[0] for token in added}
        self._chars = _byte_level_chars()
        self._ascii = str.maketrans(dict(enumerate(self._chars[:128])))
        self._pre_tokens: dict[str, int] = {}
        self._first: dict[str, int] = {}  # a stretch's first chunk
        self._spaced: dict[str, int] = {}  # a later chunk, keyed without its leading space

    @classmethod
    def for_backend(cls, backend: Any, spec: dict[str, Any] | None = None) -> PreTokenCounter | None:
        """The counter for a ``tokenizers.Tokenizer`` whose counts add up by line (``_cuts_at_line_starts``);
        ``spec``: its ``tokenizer.json`` as a dict, where the caller has parsed it already."""
        spec = json.loads(backend.to_str()) if spec is None else spec
        split = _split_of(spec) if _cuts_at_line_starts(spec) else None
        added = spec.get("added_tokens", [])
        if split is None or any(t.get(flag) for t in added for flag in ("lstrip", "rstrip", "single_word")):
            return None
        return cls(backend.model, split, [t["content"] for t in added], spec.get("normalizer") is not None)

    def count(self, text: str) -> int | None:
        if self._unsafe(text):
            return None
        if self._nfc and not text.isascii():
            text = unicodedata.normalize("NFC", text)
        if self._added is None or not any(c in text for c in self._added_starts):
            return self._stretch(text)
        parts = self._added(text)  # stretches between the added tokens
        return len(parts) - 1 + sum(self._stretch(part) for part in parts)

    def _stretch(self, text: str) -> int:
        if "  " in text or "\n " in text or "\t " in text or "\r " in text or "\xa0 " in text:
            first, *rest = _CUTS(text)  # a space follows whitespace somewhere: not every space is a cut
        else:
            first, *rest = text.split(" ")
        try:
            return self._first[first] + sum(map(self._spaced.__getitem__, rest))
        except KeyError:
            for memo in (self._first, self._spaced, self._pre_tokens):
                if len(memo) > self.MEMO_LIMIT:
                    memo.clear()
            if first not in self._first:
                self._first[first] = self._by_pre_tokens(first)
            for chunk in set(rest).difference(self._spaced):
                self._spaced[chunk] = self._by_pre_tokens(" " + chunk)
            return self._first[first] + sum(map(self._spaced.__getitem__, rest))

    def _by_pre_tokens(self, text: str) -> int:
        pieces = self._split(text)
        for piece in set(pieces).difference(self._pre_tokens):
            self._pre_tokens[piece] = len(self._model.tokenize(self._byte_level(piece)))
        return sum(map(self._pre_tokens.__getitem__, pieces))

    def _byte_level(self, piece: str) -> str:
        if piece.isascii():
            return piece.translate(self._ascii)
        return "".join(self._chars[b] for b in piece.encode())


class PieceCounter:
    """Counts of prompt pieces (cached by text) that add up to the chat-templated prompt's count."""

    def __init__(self, backend: Any, prefix: str, suffix: str, spec: dict[str, Any] | None = None):
        self.backend, self.prefix, self.suffix = backend, prefix, suffix
        self._sentinel = len(backend.encode(SENTINEL, add_special_tokens=False).ids)
        self._counts: dict[tuple[str, bool], int] = {}
        self._pre_tokens = PreTokenCounter.for_backend(backend, spec)

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, system: str) -> PieceCounter | None:
        """The counter for a Hugging Face tokenizer's prompts with ``system``; None where counts do not add up."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or not getattr(tokenizer, "chat_template", None):
            return None
        spec = json.loads(backend.to_str())  # a Qwen-sized vocabulary takes a while: parsed once, here
        if not _cuts_at_line_starts(spec):
            return None

        def rendered(user: str) -> str:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

        prefix, found, suffix = rendered(_MARK).partition(_MARK)
        probe = "# a\n\nb | c\n"
        if not found or rendered(probe) != prefix + probe + suffix:
            return None  # the template changes the user's text: only whole prompts can be counted
        return cls(backend, prefix, suffix, spec)

    def counts(self, pieces: list[str], last: bool = False) -> list[int]:
        """Tokens of each piece; ``last``: the pieces end the prompt (else a non-space character follows)."""
        missing = list(dict.fromkeys(p for p in pieces if (p, last) not in self._counts))
        less = 0 if last else self._sentinel
        if missing and self._pre_tokens is not None:
            found = {p: self._pre_tokens.count(p if last else p + SENTINEL) for p in missing}
            self._counts.update(((p, last), n - less) for p, n in found.items() if n is not None)
            missing = [p for p, n in found.items() if n is None]
        if missing:
            texts = missing if last else [p + SENTINEL for p in missing]
            encoded = self.backend.encode_batch(texts, add_special_tokens=False)
            self._counts.update(((p, last), len(e.ids) - less) for p, e in zip(missing, encoded, strict=True))
        return [self._counts[(p, last)] for p in pieces]

    def clear(self) -> None:
        self._counts.clear()
