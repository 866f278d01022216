"""The released EHR-Bench / EHR-Ins files as a benchmark source (Hugging Face ``BlueZeros/EHR-Bench``).

Each released item, as the reference's dataset class writes it, holds ``instruction``, ``input``,
``output``, ``candidates`` and ``task_info`` (the task's settings: ``task``, ``task_type``, ``metric``,
``target_key``, ``event`` ..., the index row: ``subject_id``, ``context_begin``, ``context_end`` ..., and
``label``). Items become ehrr1's instruction records, prompted as the reference prompts them (user turn =
input + "\\n" + instruction) and scored with the task's metric of our catalogue. The task is
``task_info.task``; without it, the item's instruction names it when only one task has that instruction.

Files: ``.jsonl`` / ``.json`` (read line by line, so a bad line is named), ``.parquet``, ``.csv`` (the
PhysioNet release: nested fields as Python literals, as pandas wrote them), a folder of such files, or a
folder written by ``datasets.Dataset.save_to_disk`` (read with ``datasets``). An item whose ``task_info``
holds ``reasoning`` (EHR-Ins reasoning data) gets the assistant turn the reference trains on,
``<think>\n{reasoning}\n</think>\n\n{output}``.
"""

from __future__ import annotations

import ast
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ehrr1.errors import UserError
from ehrr1.tasks.prompt import SYSTEM_PROMPT
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import TaskError, TaskRegistry, TaskSpec
from ehrr1.think import with_reasoning

REQUIRED = ("instruction", "input", "task_info")
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
KINDS = ".jsonl, .json, .parquet or .csv"


class ReleasedBenchError(UserError, ValueError):
    """A released file that is missing, unreadable, or holds an item we cannot map."""


def _files(path: Path, key: str) -> list[Path]:
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise ReleasedBenchError(f"{key}: {path} is not a {KINDS} file")
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        if found:
            return found
        raise ReleasedBenchError(f"{key}: {path} holds no {KINDS} file")
    if path.exists():  # /dev/zero, a pipe: a read would never end
        raise ReleasedBenchError(f"{key}: {path} is not a regular file or folder (a device, a pipe or a socket)")
    raise ReleasedBenchError(f"{key}: {path} does not exist (a released EHR-Bench / EHR-Ins file or folder)")


def _first_character(path: Path) -> str:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return line.lstrip()[0]
    return ""


def _items_of_file(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, item) for each item of one file, read a batch or a line at a time (released EHR-Ins is
    millions of items); ``where`` names the file and line or row."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
            n = 0
            for batch in batches:
                for row in batch.to_pylist():
                    n += 1
                    yield f"{path}, row {n}", row
        except pa.ArrowException as exc:  # not Parquet, or a cut file
            raise ReleasedBenchError(f"{path}: not a readable Parquet file ({exc})") from exc
        return
    if path.suffix == ".csv":
        csv.field_size_limit(sys.maxsize)  # an EHR is one cell
        with path.open(encoding="utf-8", newline="") as handle:
            try:
                for n, row in enumerate(csv.DictReader(handle), 2):
                    yield f"{path}, line {n}", row
            except csv.Error as exc:
                raise ReleasedBenchError(f"{path}: not a readable CSV file ({exc})") from exc
        return
    if _first_character(path) == "[":  # one JSON array
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ReleasedBenchError(f"{path}: not valid JSON ({exc})") from exc
        for n, item in enumerate(items, 1):
            yield f"{path}, item {n}", item
        return
    with path.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReleasedBenchError(f"{path}, line {n}: not a JSON object ({exc.msg})") from exc
            yield f"{path}, line {n}", item


def _items(path: Path, key: str) -> Iterator[tuple[str, Any]]:
    if path.is_dir() and (path / "dataset_info.json").exists() and (path / "state.json").exists():
        try:
            import datasets
        except ModuleNotFoundError as exc:
            raise ReleasedBenchError(f"{path} is a saved Hugging Face dataset: pip install datasets") from exc
        for n, row in enumerate(datasets.load_from_disk(str(path)), 1):
            yield f"{path}, row {n}", row
        return
    for file in _files(path, key):
        yield from _items_of_file(file)


def _task_of(item: dict[str, Any], info: dict[str, Any], registry: TaskRegistry, where: str) -> TaskSpec:
    name = info.get("task")
    if name is not None:
        try:
            return registry[str(name)]
        except TaskError as exc:
            raise ReleasedBenchError(f"{where}: task_info.task: {exc}") from None
    matches = [registry[n] for n in registry.names if registry[n].prompt_instruction == item["instruction"]]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ReleasedBenchError(f"{where}: no task_info.task and no task of ours has this instruction")
    raise ReleasedBenchError(
        f"{where}: no task_info.task, and the instruction is shared by {', '.join(t.name for t in matches)}"
    )


def _structured(value: Any) -> Any:
    """A nested field as an object: JSON text and Python literals (pandas' CSV of dicts and lists) are read."""
    if not isinstance(value, str) or value.strip()[:1] not in ("{", "["):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(value)
    except (SyntaxError, ValueError):
        return value


def _reasoning(value: Any, where: str) -> str:
    """The chain of an EHR-Ins reasoning item, as the reference's sft_reasoning.py reads it: a text, the
    first of a list of filtered chains, or the first choice of the raw API answer."""
    value = _structured(value)
    if isinstance(value, list):
        value = value[0] if value else ""
    elif isinstance(value, dict):
        try:
            value = value["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ReleasedBenchError(f"{where}: task_info.reasoning is an object without choices[0].message") from None
    if value is None or (isinstance(value, float) and value != value):  # absent, or pandas' NaN
        return ""
    if not isinstance(value, str):
        raise ReleasedBenchError(f"{where}: task_info.reasoning must be a text, a list of texts or an API answer")
    return value.strip()


def _target(item: dict[str, Any], info: dict[str, Any], task: TaskSpec, where: str) -> list[str]:
    label = info.get("label", item.get("output"))
    if isinstance(label, str):
        lines = [label] if task.is_risk or task.generation else label.split("\n")
    elif isinstance(label, list) and all(isinstance(v, str) for v in label):
        lines = label
    else:
        raise ReleasedBenchError(f"{where}: task_info.label (or output) must be a text or a list of texts")
    lines = [v.strip() for v in lines if v.strip()]
    if not lines:
        raise ReleasedBenchError(f"{where}: empty label")
    if task.is_risk and (len(lines) != 1 or lines[0].lower() not in ("yes", "no")):
        raise ReleasedBenchError(f"{where}: risk task {task.name} needs the label yes or no, found {lines}")
    return [v.lower() for v in lines] if task.is_risk else lines


def released_record(item: Any, registry: TaskRegistry, where: str) -> InstructionRecord:
    """One released item as an ehrr1 instruction record (the fields ``evaluate`` reads)."""
    if not isinstance(item, dict):
        raise ReleasedBenchError(f"{where}: expected an object with {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in item]
    if missing:
        raise ReleasedBenchError(f"{where}: missing field(s) {', '.join(missing)} (a released item has "
                                 "instruction, input, output, candidates, task_info)")  # fmt: skip
    info = _structured(item["task_info"])
    if not isinstance(info, dict):
        raise ReleasedBenchError(f"{where}: task_info must be an object (or its JSON / Python text)")
    if not isinstance(item["input"], str) or not isinstance(item["instruction"], str):
        raise ReleasedBenchError(f"{where}: input and instruction must be texts")
    task = _task_of(item, info, registry, where)
    target = _target(item, info, task, where)
    answer = "\n".join(target)
    reasoning = _reasoning(info.get("reasoning"), where)
    assistant = with_reasoning(reasoning, answer) if reasoning else answer
    subject, anchor = info.get("subject_id"), info.get("context_end")
    return {
        "id": f"{task.name}/{subject}/{anchor}" if subject is not None and anchor is not None else where,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": item["input"] + "\n" + item["instruction"]},
            {"role": "assistant", "content": assistant},
        ],
        "task": task.name,
        "kind": task.kind.value,
        "metric": task.metric.value,
        "subject_id": subject,
        "hadm_id": info.get("hadm_id"),
        "target": target,
        "candidates": _structured(item.get("candidates")) or None,  # a CSV writes none as an empty cell
        "reasoning": bool(reasoning),
        "split": "test",
        "source": where,
    }


def released_path(path: str | Path | None, key: str = "bench.path") -> Path:
    """The released files' path a setting (``key``) gives, refused when unset."""
    if not path:
        raise ReleasedBenchError(f"{key} is not set: {key}=<the released EHR-Bench / EHR-Ins file or folder>")
    return Path(path)


def iter_released(
    path: str | Path | None,
    registry: TaskRegistry,
    tasks: list[str] | None = None,
    limit: int | None = None,
    key: str = "bench.path",
) -> Iterator[InstructionRecord]:
    """Records of the released files at ``path``, an item at a time, optionally only some tasks, at most
    ``limit`` per task; ids made unique (the resume key). ``key``: the setting that named ``path``."""
    path = released_path(path, key)
    if tasks:
        registry.select(tasks)  # unknown names fail here, listing the valid ones
    taken: dict[str, int] = {}
    seen: set[str] = set()
    for where, item in _items(path, key):
        record = released_record(item, registry, where)
        task = record["task"]
        if (tasks and task not in tasks) or (limit is not None and taken.get(task, 0) >= limit):
            continue
        if record["id"] in seen:
            record["id"] = f"{record['id']}@{where}"
        seen.add(record["id"])
        taken[task] = taken.get(task, 0) + 1
        yield record


def read_released(
    path: str | Path | None,
    registry: TaskRegistry,
    tasks: list[str] | None = None,
    limit: int | None = None,
    key: str = "bench.path",
) -> list[InstructionRecord]:
    """Records of the released files at ``path``, optionally only some tasks, at most ``limit`` per task."""
    records = list(iter_released(path, registry, tasks, limit, key))
    if not records:
        raise ReleasedBenchError(f"{key}: {path} holds no item" + (f" of {', '.join(tasks)}" if tasks else ""))
    return records
