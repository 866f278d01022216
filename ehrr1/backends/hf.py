"""Hugging Face ``generate`` on CPU or GPU: batches left-padded, greedy or sampled."""

from __future__ import annotations

import logging
from typing import Any, cast

import torch

from ehrr1.backends import (
    Generation,
    SamplingParams,
    answer_token_ids,
    choice_token_ids,
    yes_share,
)
from ehrr1.config import ModelConfig
from ehrr1.models.factory import load_model, resolve_attention
from ehrr1.models.tokenizer import load_tokenizer
from ehrr1.think import answer_prefix, reached_answer

log = logging.getLogger(__name__)


def answer_p_yes(logits: torch.Tensor, answer_ids: tuple[list[int], list[int]]) -> list[float | None]:
    """P(yes) / (P(yes) + P(no)) of each row of next-token logits [B, V], each word's spellings summed."""
    probs = logits.float().softmax(-1)
    yes, no = (probs[:, ids].sum(-1).tolist() for ids in answer_ids)
    return [yes_share(y, n) for y, n in zip(yes, no, strict=True)]


class HFBackend:
    name = "hf"
    batch_size = 8

    def __init__(
        self, model_path: str, dtype: str = "float32", attn_implementation: str = "auto", device: str = "auto"
    ):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.tokenizer = load_tokenizer(model_path)
        self.tokenizer.padding_side = "left"
        attention = resolve_attention(attn_implementation, self.device.type == "cuda")
        self.model: Any = cast(Any, load_model(model_path, dtype, attention)).to(self.device).eval()
        self.answer_ids = answer_token_ids(self.tokenizer)

    @classmethod
    def for_model(cls, model_path: str, model: ModelConfig, seed: int = 0, device: str = "auto") -> HFBackend:
        """``backend=hf``: the model's weights in its dtype, with its attention."""
        return cls(model_path, model.dtype.value, model.attn_implementation.value, device)

    @classmethod
    def around(cls, model: torch.nn.Module, tokenizer: Any) -> HFBackend:
        """A backend generating with a live model (e.g. the policy being trained), not a loaded copy."""
        backend = cls.__new__(cls)
        backend.model, backend.device = model, next(model.parameters()).device
        backend.tokenizer = tokenizer
        backend.tokenizer.padding_side = "left"
        backend.answer_ids = answer_token_ids(tokenizer)
        return backend

    @torch.no_grad()
    def sample_ids(self, prompts: list[str], sampling: SamplingParams, n: int) -> list[list[int]]:
        """``n`` sampled completions per prompt as token ids (grouped by prompt), each cut after its end of
        turn; one without it reached ``max_tokens``."""
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        shared = self.shared_prefill(ids, mask, n) if ids.shape[1] > 1 else None
        torch.manual_seed(sampling.seed)
        out = self.model.generate(
            input_ids=ids.repeat_interleave(n, 0),
            attention_mask=mask.repeat_interleave(n, 0),
            past_key_values=shared,
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature or None,
            top_p=sampling.top_p,
            top_k=sampling.top_k or None,
            max_new_tokens=sampling.max_tokens,
            use_cache=True,  # also when training turned it off in the model's config
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        completions = []
        for row in out[:, ids.shape[1] :].tolist():
            end = row.index(self.tokenizer.eos_token_id) + 1 if self.tokenizer.eos_token_id in row else len(row)
            completions.append(row[:end])
        return completions

    def shared_prefill(self, ids: torch.Tensor, mask: torch.Tensor, n: int) -> Any:
        """The KV cache of each left-padded prompt but its last token, computed once and repeated for its ``n``
        samples: generate then runs only the last token and the completions (not ``n`` prefills per prompt)."""
        from transformers import DynamicCache

        head, head_mask = ids[:, :-1], mask[:, :-1]
        positions = (head_mask.long().cumsum(-1) - 1).masked_fill(head_mask == 0, 1)  # as generate counts them
        cache = DynamicCache(config=self.model.config)
        self.model(
            input_ids=head, attention_mask=head_mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        cache.batch_repeat_interleave(n)
        return cache

    @torch.no_grad()
    def generate(
        self, prompts: list[str], sampling: SamplingParams, answer_scores: list[bool] | None = None
    ) -> list[Generation]:
        if sampling.choices:
            return self.choose(prompts, sampling.choices)
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs = (
            {"do_sample": False}
            if sampling.temperature == 0
            else {
                "do_sample": True,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k or None,
            }
        )
        if sampling.temperature > 0:
            torch.manual_seed(sampling.seed)
        out = self.model.generate(
            **encoded,
            max_new_tokens=sampling.max_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **kwargs,
        )
        new = out[:, encoded["input_ids"].shape[1] :]
        texts: list[str] = []
        reasons: list[str] = []
        for row in new:
            ended = (row == self.tokenizer.eos_token_id).nonzero()
            stop = int(ended[0]) if len(ended) else len(row)
            texts.append(str(self.tokenizer.decode(row[:stop], skip_special_tokens=True)))  # one sequence: a str
            reasons.append("stop" if len(ended) else "length")
        scores: list[float | None] = [None] * len(prompts)
        wanted = [i for i, want in enumerate(answer_scores or []) if want and reached_answer(prompts[i], texts[i])]
        if wanted:
            for i, p in zip(wanted, self.p_yes([prompts[i] + answer_prefix(texts[i]) for i in wanted]), strict=True):
                scores[i] = p
        return [Generation(t, r, s) for t, r, s in zip(texts, reasons, scores, strict=True)]

    @torch.no_grad()
    def choose(self, prompts: list[str], words: tuple[str, ...]) -> list[Generation]:
        """One token among the words' first tokens (greedy); P(first word) among them as the score."""
        ids = choice_token_ids(self.tokenizer, words)
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        probs = self.model(**encoded).logits[:, -1, ids].float().softmax(-1)  # [B, len(words)]
        best = probs.argmax(-1).tolist()
        return [Generation(words[b], "stop", float(p[0])) for b, p in zip(best, probs.tolist(), strict=True)]

    @torch.no_grad()
    def p_yes(self, prefixes: list[str]) -> list[float | None]:
        """P(yes) / (P(yes) + P(no)) of the next token after each prefix (summed over spellings)."""
        encoded = self.tokenizer(prefixes, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        logits = self.model(**encoded).logits[:, -1]  # [B, V], left padding: the last position
        return answer_p_yes(logits, self.answer_ids)
