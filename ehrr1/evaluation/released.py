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
import random
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ehrr1.data.markdown import REFERENCE_TITLES
from ehrr1.data.timeline import Timeline
from ehrr1.errors import UserError
from ehrr1.tasks.export import sample_id
from ehrr1.tasks.prompt import SYSTEM_PROMPT, PromptBuilder
from ehrr1.tasks.records import InstructionRecord
from ehrr1.tasks.registry import ContextRule, TaskError, TaskRegistry, TaskSpec
from ehrr1.tasks.samples import Sample
from ehrr1.think import with_reasoning
from ehrr1.utils import digest

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


_HEADER_SECTIONS = ("Patient Demographics", "Discharge", "Admissions")  # before the window in every input
_SECTION = re.compile(r"^## (.+) \[[^\]\n]*\]$", re.MULTILINE)


def _first_window_section(text: str) -> str | None:
    """The title of the first event the input shows after its fixed sections (demographics, the previous
    discharge note, the admission), None when it shows none."""
    for title in _SECTION.findall(text):
        if title not in _HEADER_SECTIONS:
            return title
    return None


def _told_apart(matches: list[TaskSpec], item: dict[str, Any], info: dict[str, Any]) -> list[TaskSpec]:
    """The tasks among ``matches`` (one instruction) that the item's anchor fits: ``task_info.event`` (or
    ``events``) where it names an anchor, else the anchor the input shows. An ED task's window opens with its
    ED stay; an admission task's anchor is never shown (admissions stay out of every window)."""
    named = info.get("event", info.get("events"))
    if isinstance(named, str) and any(t.anchor == named for t in matches):
        return [t for t in matches if t.anchor == named]
    first = _first_window_section(str(item.get("input", "")))
    if first is None:
        return matches
    shown = [t for t in matches if t.anchor != "admissions" and REFERENCE_TITLES.get(t.anchor) == first]
    return shown or [t for t in matches if t.anchor == "admissions"]


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
    fitting = _told_apart(matches, item, info)
    if len(fitting) == 1:
        return fitting[0]
    raise ReleasedBenchError(
        f"{where}: no task_info.task, and the instruction is shared by {', '.join(t.name for t in matches)}; "
        "neither task_info.event nor the input's first event tells them apart"
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


def _item_id(task: TaskSpec, item: dict[str, Any], subject: Any, anchor: Any) -> str:
    """``task/subject/anchor`` where the item has them; else its ``idx`` (the Hub's items carry no
    identifiers), else a digest of its text: never where it was read, so a moved file keeps its ids."""
    if subject is not None and anchor is not None:
        return f"{task.name}/{subject}/{anchor}"
    if item.get("idx") is not None:
        return f"{task.name}/item/{item['idx']}"
    return f"{task.name}/text/{digest([item['input'], item['instruction']])}"


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
        "id": _item_id(task, item, subject, anchor),
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


# ---- the PhysioNet release (MIMIC-IV-Ext-EHR-Analysis): index rows over patient trajectories ----------
INDEX_COLUMNS = ("subject_id", "task", "period_begin", "period_end", "target")
TRAJECTORIES, DICTIONARIES = "patients_ehr", "index_mapping"
# the index files a setting reads from a release folder (bench.path: all of EHR-Bench)
BUNDLE_INDEX = {
    "bench.path": "ehr_bench",
    "bench.train_path": "ehr_ins/ehr_ins.csv",
    "task_mix.released": "ehr_ins/ehr_ins.csv",
    "synthesis.released": "ehr_ins/ehr_ins_reasoning.csv",
}
MAX_BUNDLE_CANDIDATES = 100  # the reference's make_candidates
BATCH_ROWS = 4096


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle), [])


def _is_release(folder: Path) -> bool:
    return (folder / DICTIONARIES).is_dir() or (folder / TRAJECTORIES).is_dir() or (
        folder / f"{TRAJECTORIES}.tar.gz").is_file()  # fmt: skip


def release_of(path: Path) -> Path | None:
    """The release folder ``path`` is, or holds as an index CSV (``<release>/ehr_bench/x.csv``); None for
    the Hub's item files."""
    if path.is_dir():
        return path if _is_release(path) else None
    if path.suffix == ".csv" and path.is_file() and "period_begin" in _csv_header(path):
        for folder in (path.parent.parent, path.parent):
            if _is_release(folder):
                return folder
        raise ReleasedBenchError(f"{path} is an index file (period_begin / period_end) outside a release folder: "
                                 f"the folder above it needs {TRAJECTORIES}/ and {DICTIONARIES}/")  # fmt: skip
    return None


def _release_files(root: Path, path: Path, key: str) -> list[Path]:
    """The index CSVs to read, after checking the release has what rendering them needs."""
    trajectories = root / TRAJECTORIES
    if not trajectories.is_dir():
        packed = root / f"{TRAJECTORIES}.tar.gz"
        if packed.is_file():
            raise ReleasedBenchError(f"{key}: {packed} is still packed: extract it first "
                                     f"(tar -xzf {packed} -C {root})")  # fmt: skip
        raise ReleasedBenchError(f"{key}: {trajectories} not found (the release's patient trajectories, "
                                 "<subject_id>.parquet)")  # fmt: skip
    if not (root / DICTIONARIES).is_dir():
        raise ReleasedBenchError(f"{key}: {root / DICTIONARIES} not found (the release's dictionaries: "
                                 "hosp/, icu/, ed/, note/)")  # fmt: skip
    if path != root:
        return [path]
    default = root / BUNDLE_INDEX.get(key, BUNDLE_INDEX["bench.path"])
    files = sorted(default.glob("*.csv")) if default.is_dir() else [default] if default.is_file() else []
    if not files:
        raise ReleasedBenchError(f"{key}: {default} not found or holds no .csv (the release's index files; or "
                                 f"name one: {key}=<release>/<folder>/<file>.csv)")  # fmt: skip
    return files


def _index_batches(path: Path, tasks: list[str] | None, limit: int | None) -> Iterator[list[dict[str, Any]]]:
    """The rows of an index CSV, one patient's after another (sorted out of core by DuckDB), each with its
    ``_row`` in the file; only ``tasks``, at most ``limit`` rows per task (the first in the file)."""
    import duckdb

    from ehrr1.data.build import sql_text

    missing = [c for c in INDEX_COLUMNS if c not in _csv_header(path)]
    if missing:
        raise ReleasedBenchError(f"{path}: missing column(s) {', '.join(missing)} (an index file of the release "
                                 f"has {', '.join(INDEX_COLUMNS)}, admissions_id, last_discharge_id)")  # fmt: skip
    con = duckdb.connect()
    spill = tempfile.TemporaryDirectory(prefix="ehrr1-index-sort-")  # a large index sorts out of core here
    con.execute(f"SET temp_directory = {sql_text(spill.name)}")
    scan = f"read_csv({sql_text(path)}, all_varchar=true, header=true)"
    where = f"WHERE task IN ({', '.join('?' for _ in tasks)})" if tasks else ""
    keep = f"QUALIFY row_number() OVER (PARTITION BY task ORDER BY _row) <= {int(limit)}" if limit is not None else ""
    query = (f"SELECT * FROM (SELECT row_number() OVER () AS _row, * FROM {scan}) {where} {keep} "
             "ORDER BY subject_id, _row")  # fmt: skip
    try:
        reader = con.sql(query, params=list(tasks or [])).to_arrow_reader(BATCH_ROWS)
        for batch in reader:
            yield batch.to_pylist()
    except duckdb.Error as exc:
        raise ReleasedBenchError(f"{path}: not a readable CSV file ({exc})") from None
    finally:
        con.close()
        spill.cleanup()


def _position(row: dict[str, Any], name: str, where: str) -> int | None:
    text = row.get(name)
    if text is None or text.strip() in ("", "nan", "NaN", "None"):
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ReleasedBenchError(f"{where}: {name} {text!r} is not an event position") from None


def _index_target(row: dict[str, Any]) -> Any:
    """The index's target as the reference's ``eval`` reads it: a list, or the text itself."""
    text = row["target"] or ""
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        return text


class _Release:
    """One release folder's trajectories, dictionaries and candidate files."""

    def __init__(self, root: Path):
        from ehrr1.data.trajectories import Dictionaries

        self.root = root
        self.dictionaries = Dictionaries(root / DICTIONARIES)
        self.builder = PromptBuilder()  # the reference's markdown, whole (as its test.py renders it)
        self._similar: dict[str, dict[str, list[str]] | None] = {}

    def timeline(self, subject: int) -> Timeline:
        from ehrr1.data.trajectories import read_trajectory

        return read_trajectory(self.root / TRAJECTORIES / f"{subject}.parquet", subject, self.dictionaries)

    def similar_items(self, task: str) -> dict[str, list[str]] | None:
        """``cache/similar_item/<task>.csv`` (an item, then the items like it), None where there is none."""
        if task not in self._similar:
            path = self.root / "cache" / "similar_item" / f"{task}.csv"
            table = None
            if path.is_file():
                with path.open(encoding="utf-8", newline="") as handle:
                    rows = list(csv.reader(handle))[1:]
                table = {row[0]: [v for v in row[1:] if v.strip()] for row in rows if row}
            self._similar[task] = table
        return self._similar[task]

    def candidates(self, task: TaskSpec, target: list[str], record_id: str) -> list[str] | None:
        """The reference's ``make_candidates``: yes / no for risk tasks; else the similar items of the
        answers (at most 100, the answers always among them) or, for a short list, all of it; shuffled
        with a seed of the record (the reference's global random state is not reproducible)."""
        if task.is_risk:
            return ["yes", "no"]
        similar = self.similar_items(task.name)
        if similar is None:
            return None
        rng = random.Random(f"candidates:{record_id}")
        if len(similar) > MAX_BUNDLE_CANDIDATES:
            pool = [v for answer in target for v in similar.get(answer, [])]
            chosen = sorted(set(rng.sample(pool, min(len(pool), MAX_BUNDLE_CANDIDATES)) + target))
        else:
            chosen = list(similar)
        rng.shuffle(chosen)
        return chosen

    def record(self, row: dict[str, Any], timeline: Timeline, task: TaskSpec, where: str) -> InstructionRecord:
        begin, end = _position(row, "period_begin", where), _position(row, "period_end", where)
        if begin is None or end is None or not 0 <= begin <= end <= len(timeline):
            raise ReleasedBenchError(f"{where}: window period_begin={row['period_begin']}, period_end="
                                     f"{row['period_end']} outside the {len(timeline)} events of subject "
                                     f"{timeline.subject_id}")  # fmt: skip
        # the anchor as the index builds it: a decision task's answer event, a risk window's first event,
        # the discharge note closing a readmission window
        event = begin if task.is_risk else end
        if task.is_risk and task.context is ContextRule.through_anchor:
            event = end - 1
        if not 0 <= event < len(timeline):
            raise ReleasedBenchError(f"{where}: the anchor, event {event}, is outside the {len(timeline)} events "
                                     f"of subject {timeline.subject_id}")  # fmt: skip
        target = _target({}, {"label": _index_target(row)}, task, where)
        hadm = _position(row, "hadm_id", where)
        sample = Sample(timeline.subject_id, hadm, task.name, event, begin, end,
                        _position(row, "admissions_id", where), _position(row, "last_discharge_id", where),
                        tuple(target))  # fmt: skip
        prompt = self.builder.build(timeline, sample, task)
        reasoning = _reasoning(row.get("reasoning"), where)
        answer = with_reasoning(reasoning, prompt.answer) if reasoning else prompt.answer
        record_id = sample_id(task.name, sample.subject_id, event)
        return {
            "id": record_id,
            "messages": [*prompt.messages, {"role": "assistant", "content": answer}],
            "task": task.name,
            "kind": task.kind.value,
            "metric": task.metric.value,
            "subject_id": sample.subject_id,
            "hadm_id": hadm,
            "target": target,
            "candidates": self.candidates(task, target, record_id),
            "reasoning": bool(reasoning),
            "split": "test",
            "source": where,
        }


def _release_records(
    root: Path, path: Path, registry: TaskRegistry, tasks: list[str] | None, limit: int | None, key: str
) -> Iterator[InstructionRecord]:
    """The index rows of a release rendered from its trajectories, one patient at a time."""
    release = _Release(root)
    for file in _release_files(root, path, key):
        subject, timeline = None, None
        for rows in _index_batches(file, tasks, limit):
            for row in rows:
                where = f"{file}, row {row['_row']}"
                try:
                    task = registry[str(row["task"])]
                except TaskError as exc:
                    raise ReleasedBenchError(f"{where}: task: {exc}") from None
                id_ = _position(row, "subject_id", where)
                if id_ is None:
                    raise ReleasedBenchError(f"{where}: no subject_id")
                if id_ != subject:
                    try:
                        subject, timeline = id_, release.timeline(id_)
                    except UserError as exc:  # a missing trajectory or dictionary: say which row needs it
                        raise ReleasedBenchError(f"{where}: {exc}") from None
                assert timeline is not None
                yield release.record(row, timeline, task, where)


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
    release = release_of(path)
    records = (
        _release_records(release, path, registry, tasks, limit, key) if release is not None
        else (released_record(item, registry, where) for where, item in _items(path, key))
    )  # fmt: skip
    for record in records:
        task = record["task"]
        if (tasks and task not in tasks) or (limit is not None and taken.get(task, 0) >= limit):
            continue
        if record["id"] in seen:
            record["id"] = f"{record['id']}@{record['source']}"
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
