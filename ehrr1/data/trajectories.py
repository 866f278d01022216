"""The reference's preprocessed patient trajectories (the PhysioNet release's ``patients_ehr/``) as timelines.

The release (MIMIC-IV-Ext-EHR-Analysis) ships each patient as ``patients_ehr/<subject_id>.parquet``, the
output of the reference's ``merge_patient.py`` / ``rank.py`` / ``combination.py``: one row per event with
``file_name`` (the table), ``starttime``, ``endtime``, ``hadm_id`` and ``items`` (the JSON list of the
event's table rows, every cell as pandas' text), and the dictionaries in ``index_mapping/<module>/``.
Index rows address those events by position, so a trajectory becomes a :class:`Timeline` event for event:
the items are the records, with the names the reference looks up at render time (item names, ICD
titles, CCS and ATC classes, radiology exam names) joined from ``index_mapping`` the way our timeline
build joins them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ehrr1.data.build import DICTIONARY_TEXTS, dictionary_query, infer_kinds, sql_text
from ehrr1.data.events import SOURCES, Mapping
from ehrr1.data.mappings import MAPPING_COLUMNS, pad_ndc
from ehrr1.data.timeline import Event, Timeline
from ehrr1.errors import MissingInputError, UserError

COLUMNS = ("file_name", "starttime", "endtime", "hadm_id", "items")
_MISSING = ("", "nan", "NaN", "None", "NaT")


class TrajectoryError(UserError, ValueError):
    """A trajectory or dictionary file of the release that is missing or not in the reference's layout."""


def _lookup(path: Path, kind: str) -> dict[Any, Any]:
    """One dictionary of ``index_mapping`` as a lookup keyed as the timeline build's joins key it
    (:func:`ehrr1.data.build.dictionary_query`)."""
    with duckdb.connect() as con:
        return _read_lookup(con, path, kind)


def _read_lookup(con: duckdb.DuckDBPyConnection, path: Path, kind: str) -> dict[Any, Any]:
    scan = f"read_csv({sql_text(path)}, all_varchar=true, header=true)"
    try:
        header = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
    except duckdb.Error as exc:
        raise TrajectoryError(f"{path}: not a readable CSV file ({exc})") from None
    needed = {"item": ("itemid", "label"), "icd": ("icd_version", "icd_code", "long_title"),
              "ndc": MAPPING_COLUMNS["d_atc_prescriptions"],
              "exam_names": ("note_id", "field_name", "field_value")}[kind]  # fmt: skip
    missing = [c for c in needed if c not in header]
    if missing:
        raise TrajectoryError(f"{path}: missing column(s) {', '.join(missing)} (the release's {path.name} has "
                              f"{', '.join(needed)})")  # fmt: skip
    kinds = infer_kinds(con, scan, list(DICTIONARY_TEXTS[kind]))
    rows = con.execute(dictionary_query(kind, scan, kinds)).fetchall()
    return {tuple(key) if len(key) > 1 else key[0]: value for *key, value in rows}


@dataclass
class Dictionaries:
    """The dictionaries of a release's ``index_mapping/`` folder, read when an event first needs one.

    Each event type reads its own module's copy (``ed/d_ccs_diagnoses.csv`` for ED diagnoses), as the
    reference does; a missing file is an error naming it."""

    root: Path

    def __post_init__(self) -> None:
        self._loaded: dict[tuple[str, str], dict[Any, Any]] = {}

    def lookup(self, module: str, mapping: Mapping) -> dict[Any, Any]:
        key = (module, mapping.table)
        if key not in self._loaded:
            path = self.root / module / f"{mapping.table}.csv"
            if not path.is_file():
                raise TrajectoryError(
                    f"{path} not found: the release's index_mapping/{module}/ needs {mapping.table}.csv to name "
                    f"the {mapping.output!r} of its events"
                )
            self._loaded[key] = _lookup(path, mapping.kind)
        return self._loaded[key]

    def mapped(self, event_type: str, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` with the names its event type looks up (None where the code is not in the dictionary)."""
        source = SOURCES.get(event_type)
        if source is None or not source.mappings:
            return record
        for mapping in source.mappings:
            lookup = self.lookup(source.module, mapping)
            if mapping.kind == "icd":
                key: Any = (record.get("icd_version"), record.get("icd_code"))
            elif mapping.kind == "ndc":
                key = pad_ndc(str(record.get("ndc", "")))
            elif mapping.kind == "item":
                key = record.get("itemid")
            else:
                key = record.get("note_id")
            record[mapping.output] = lookup.get(key)
        return record


def _time(text: Any, path: Path, row: int) -> datetime | None:
    if text is None or text in _MISSING:
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise TrajectoryError(f"{path}, event {row}: time {text!r} is not YYYY-MM-DD HH:MM:SS") from None


def _id(text: Any) -> int | None:
    if text is None or text in _MISSING:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None


def read_trajectory(path: Path, subject_id: int, dictionaries: Dictionaries) -> Timeline:
    """One patient's ``patients_ehr/<subject_id>.parquet`` as a timeline, event for event."""
    if not path.is_file():
        raise MissingInputError(f"{path} not found: the trajectory of subject {subject_id} (patients_ehr/)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise TrajectoryError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise TrajectoryError(f"{path}: missing column(s) {', '.join(missing)} (a trajectory of the release has "
                              f"{', '.join(COLUMNS)})")  # fmt: skip
    columns = table.select(list(COLUMNS)).to_pydict()
    events = []
    for row in range(table.num_rows):
        event_type = columns["file_name"][row]
        try:
            items = json.loads(columns["items"][row])
        except (TypeError, json.JSONDecodeError):
            raise TrajectoryError(f"{path}, event {row}: items is not a JSON list of rows") from None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise TrajectoryError(f"{path}, event {row}: items is not a JSON list of rows")
        records = tuple(dictionaries.mapped(event_type, item) for item in items)
        events.append(Event(
            event_type, _time(columns["starttime"][row], path, row), _id(columns["hadm_id"][row]), None, records,
            _time(columns["endtime"][row], path, row),
        ))  # fmt: skip
    return Timeline(subject_id, tuple(events))
