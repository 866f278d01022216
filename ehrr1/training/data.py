"""Chat examples -> token ids with assistant-only labels -> packed (or padded) micro-batches.

Examples are tokenised as a model sees them at inference: the generation prompt (chat template plus the
thinking switch) followed by the assistant's text and the end-of-turn token; only the assistant tokens
are labelled. Packing puts several examples in one sequence with positions restarting at each example,
which Hugging Face attention turns into a block-diagonal mask (varlen with flash-attention), so examples
never attend to each other. Without packing, micro-batches hold examples of similar length (little
padding). The micro-batches are fixed once (seeded); each epoch visits them in a seeded order, and a
resumed run starts at the first micro-batch its checkpoint had not trained on.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ehrr1.config import LossOn, LossPer
from ehrr1.errors import ConfigError, DataError, MissingInputError
from ehrr1.tasks.prompt import ThinkingSwitch, generation_prompt
from ehrr1.tasks.records import Message
from ehrr1.think import THINK_OPEN

log = logging.getLogger(__name__)

IGNORE = -100  # label of tokens the loss skips (prompt, padding)


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    answer_start: int = 0  # the first assistant token
    answer_weight: float = 1.0  # the loss weight of the assistant's tokens (the prompt's: 1)

    @property
    def n_labels(self) -> int | float:
        """The loss mass of the example: labelled prompt tokens count 1, assistant tokens ``answer_weight``."""
        prompt = sum(1 for label in self.labels[: self.answer_start] if label != IGNORE)
        answer = len(self.labels) - self.answer_start
        return prompt + answer if self.answer_weight == 1.0 else prompt + self.answer_weight * answer


def read_chat_jsonl(path: str | Path) -> list[list[Message]]:
    """The ``messages`` of every record of an exported JSONL file, with file and line in any error."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            try:
                messages = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{path}, line {n}: expected a JSON record with 'messages' ({exc})") from exc
            if not messages or messages[-1].get("role") != "assistant":
                raise DataError(f"{path}, line {n}: the last message must be the assistant's answer")
            out.append(messages)
    return out


def encode_chats(
    tokenizer: Any,
    chats: list[list[Message]],
    switch: ThinkingSwitch = ThinkingSwitch.enable_thinking,
    loss_on: LossOn = LossOn.completion,
    answer_weight: float = 1.0,
    loss_per: LossPer = LossPer.token,
) -> list[Encoded]:
    """Prompt ids + assistant ids and end-of-turn, for a list of chats; labelled: the assistant's part, or
    every token with ``loss_on=all`` (the assistant's then weigh ``answer_weight`` times a prompt token's:
    the answer is a few tokens after hundreds of EHR tokens). With ``loss_per=example`` an answer's tokens
    share ``answer_weight`` between them, so a yes / no weighs as much as a list of twenty lab tests.

    The assistant text starting with ``<think>`` (a reasoning chain) is trained with thinking on; any other
    answer with thinking off, exactly as evaluation prompts the model in each mode.
    """
    prompts, answers = [], []
    for messages in chats:
        answer = messages[-1]["content"]
        prompts.append(generation_prompt(tokenizer, messages[:-1], answer.startswith(THINK_OPEN), switch))
        answers.append(answer + tokenizer.eos_token)
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    every = LossOn(loss_on) is LossOn.all
    per_example = LossPer(loss_per) is LossPer.example
    return [
        Encoded(
            p + a,
            (p if every else [IGNORE] * len(p)) + a,
            len(p),
            answer_weight / len(a) if per_example else answer_weight,
        )
        for p, a in zip(prompt_ids, answer_ids, strict=True)
    ]


def pack(lengths: list[int], max_len: int, order: list[int], open_bins: int = 32) -> list[list[int]]:
    """Example indices grouped into bins of at most ``max_len`` tokens (first fit over the last open bins)."""
    bins: list[list[int]] = []
    room: list[int] = []  # free tokens of the open bins, aligned with ``open_ids``
    open_ids: list[int] = []
    for i in order:
        for slot, free in enumerate(room):
            if lengths[i] <= free:
                bins[open_ids[slot]].append(i)
                room[slot] -= lengths[i]
                break
        else:
            if len(open_ids) == open_bins:
                room.pop(0)
                open_ids.pop(0)
            bins.append([i])
            open_ids.append(len(bins) - 1)
            room.append(max_len - lengths[i])
    return bins


def group_by_length(lengths: list[int], order: list[int], micro_batch_size: int, window: int = 64) -> list[list[int]]:
    """Single-example rows, sorted by length within windows of ``window`` micro-batches of the (shuffled)
    order, so a padded micro-batch holds examples of similar length and little padding."""
    span = window * micro_batch_size
    rows = []
    for start in range(0, len(order), span):
        rows += [[i] for i in sorted(order[start : start + span], key=lambda i: lengths[i])]
    return rows


def collate(examples: list[list[Encoded]], pad_id: int, packed: bool) -> dict[str, Any]:
    """Rows of examples -> ``input_ids``, ``labels``, ``position_ids`` [B, T] (+ ``attention_mask`` if padded)
    and ``n_tokens``, the count of real (non-padding) tokens (a host int: reading it never waits for a GPU).

    Positions restart at 0 for every example; the padding after a row's last example gets positions of its
    own, so under packing it forms a separate (fully ignored) segment.
    """
    width = max(sum(len(e.input_ids) for e in row) for row in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, row in enumerate(examples):
        start = 0
        for e in row:
            end = start + len(e.input_ids)
            input_ids[r, start:end] = torch.tensor(e.input_ids)
            labels[r, start:end] = torch.tensor(e.labels)
            positions[r, start:end] = torch.arange(end - start)
            start = end
        mask[r, :start] = 1
        positions[r, start:] = torch.arange(width - start)
    n_tokens = int(mask.sum())
    batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "position_ids": positions, "n_tokens": n_tokens}
    if any(e.answer_weight != 1.0 for row in examples for e in row):
        batch["label_weights"] = label_weights(examples, width)
    if not packed:
        batch["attention_mask"] = mask
    return batch


def label_weights(examples: list[list[Encoded]], width: int) -> torch.Tensor:
    """[B, T] loss weight of each label position: 1 on the prompt, ``answer_weight`` on the answer, 0 elsewhere."""
    weights = torch.zeros((len(examples), width))
    for r, row in enumerate(examples):
        start = 0
        for e in row:
            labelled = torch.tensor([label != IGNORE for label in e.labels], dtype=torch.float)
            labelled[e.answer_start :] *= e.answer_weight
            weights[r, start : start + len(e.labels)] = labelled
            start += len(e.labels)
    return weights


class MicroBatches(Dataset):
    """Fixed micro-batches (each a list of rows; a row is a list of examples); indexed by sampler items."""

    def __init__(
        self, examples: list[Encoded], rows: list[list[int]], micro_batch_size: int, pad_id: int, packed: bool
    ):
        self.examples = examples
        self.batches = [rows[i : i + micro_batch_size] for i in range(0, len(rows), micro_batch_size)]
        self.pad_id = pad_id
        self.packed = packed
        self.label_tokens = [sum(examples[i].n_labels for row in b for i in row) for b in self.batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, item: tuple[int, int, int, int]) -> dict[str, Any]:
        index, epoch, position, step_label_tokens = item
        rows = [[self.examples[i] for i in row] for row in self.batches[index]]
        batch = collate(rows, self.pad_id, self.packed)
        batch["epoch"], batch["position"] = epoch, position  # host ints, left on the host by Lightning
        batch["step_label_tokens"] = torch.tensor(step_label_tokens)
        return batch


class EpochOrder(Sampler):
    """A seeded order of micro-batches per epoch, this rank's share of it, from a resume position on.

    Items are (micro-batch, epoch, position in this rank's epoch order, label tokens of the optimiser
    step the micro-batch belongs to): the loss is normalised by the step's tokens, not the micro-batch's.
    Lightning calls ``set_epoch`` before each epoch; the order is drawn when iteration starts.
    """

    def __init__(self, dataset: MicroBatches, seed: int, grad_accum: int, rank: int = 0, world_size: int = 1):
        self.dataset = dataset
        self.seed = seed
        self.grad_accum = grad_accum
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0  # first position to yield in this epoch (a resumed run skips what it trained on)

    def __len__(self) -> int:
        return len(self.dataset) // self.world_size

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def resume(self, epoch: int, position: int) -> None:
        self.epoch, self.start = epoch, position

    def order(self, epoch: int) -> list[int]:
        ids = list(range(len(self.dataset)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(ids)
        return ids[self.rank : len(self) * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int, int, float]]:  # (example, epoch, position, step's label tokens)
        epoch, start = self.epoch, self.start
        self.start = 0
        ids = self.order(epoch)
        for position in range(start, len(ids)):
            group = position - position % self.grad_accum
            tokens = sum(self.dataset.label_tokens[i] for i in ids[group : group + self.grad_accum])
            yield ids[position], epoch, position, tokens


class ResumableDataModule(pl.LightningDataModule):
    """A data module whose training order resumes where a checkpointed run stopped: the LightningModule's
    ``data_position`` (epoch, next position) is saved with each checkpoint and handed back once on resume."""

    def __init__(self):
        super().__init__()
        self.resume_at: tuple[int, int] | None = None  # (epoch, position) of the next batch to train on

    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def take_resume_position(self) -> tuple[int, int] | None:
        position, self.resume_at = self.resume_at, None
        return position

    def state_dict(self) -> dict[str, Any]:
        module = self.trainer.lightning_module if self.trainer is not None else None
        position = getattr(module, "data_position", None)
        return {"next": list(position) if position is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume_at = tuple(state_dict["next"]) if state_dict.get("next") else None


class ChatDataModule(ResumableDataModule):
    """``train.jsonl`` / ``val.jsonl`` of a stage's data directory as packed or padded micro-batches."""

    def __init__(
        self,
        data_dir: str | Path,
        tokenizer: Any,
        max_seq_len: int,
        micro_batch_size: int = 1,
        grad_accum: int = 1,
        packing: bool = True,
        seed: int = 0,
        switch: ThinkingSwitch = ThinkingSwitch.enable_thinking,
        num_workers: int = 0,
        loss_on: LossOn = LossOn.completion,
        answer_weight: float = 1.0,
        loss_per: LossPer = LossPer.token,
    ):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.packing = packing
        self.seed = seed
        self.switch = switch
        self.loss_on = loss_on
        self.answer_weight = answer_weight
        self.loss_per = loss_per
        self.num_workers = num_workers
        self.splits: dict[str, MicroBatches] = {}
        self.dropped: dict[str, int] = {}

    def load_split(self, split: str) -> MicroBatches:
        path = self.data_dir / f"{split}.jsonl"
        if not path.exists():
            raise MissingInputError(f"no {split} data at {path} (stage.data): run synthesize.py for this task mix")
        chats = read_chat_jsonl(path)
        encoded = encode_chats(self.tokenizer, chats, self.switch, self.loss_on, self.answer_weight, self.loss_per)
        kept = [e for e in encoded if len(e.input_ids) <= self.max_seq_len]
        self.dropped[split] = len(encoded) - len(kept)
        if self.dropped[split]:
            log.warning(
                "%s: %d of %d examples are longer than %d tokens and left out",
                path,
                self.dropped[split],
                len(encoded),
                self.max_seq_len,
            )
        if not kept:
            raise ConfigError(f"{path}: no example fits in {self.max_seq_len} tokens (stage.max_seq_len)")
        order = list(range(len(kept)))
        random.Random(self.seed).shuffle(order)
        lengths = [len(e.input_ids) for e in kept]
        rows = (
            pack(lengths, self.max_seq_len, order)
            if self.packing
            else group_by_length(lengths, order, self.micro_batch_size)
        )
        return MicroBatches(kept, rows, self.micro_batch_size, self.tokenizer.pad_token_id, self.packing)

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            if split not in self.splits:
                self.splits[split] = self.load_split(split)

    def train_dataloader(self) -> DataLoader:
        order = EpochOrder(self.splits["train"], self.seed, self.grad_accum, *self._rank())
        if (position := self.take_resume_position()) is not None:
            order.resume(*position)
        return DataLoader(self.splits["train"], batch_size=None, sampler=order, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        dataset = self.splits["val"]
        rank, world = self._rank()
        items = [(i, 0, i, dataset.label_tokens[i]) for i in range(rank, len(dataset), world)]
        return DataLoader(dataset, batch_size=None, sampler=items, num_workers=self.num_workers)
