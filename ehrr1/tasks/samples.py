"""Samples of a timeline shard for one task: anchor, context window, current admission, previous discharge, target.

A sample's input is the half-open slice ``[period_begin, period_end)`` of a patient's timeline (minus the
task's forbidden event types), optionally preceded by the current admission event (``admissions_id``) and
the previous stay's discharge summary (``last_discharge_id``), both strictly before the window. Rules:

- decision tasks: the window ends just before the anchor and reaches back ``context_hours``, stopping at
  the first event of another admission (when ``same_admission``) and after the demographics;
- ``ed_stay``: from the ED stay's arrival to its last ED record (its ED diagnoses at ED out-time); the
  admission that may follow starts after the window;
- ``first_hours``: from the anchor for ``context_hours``, same admission; samples whose stay ends within
  the window are dropped (their outcome would be visible or trivial);
- ``before_anchor`` for risk tasks: the ``context_hours`` before the anchor, anchor included (a discharge
  summary is known at discharge).

Computed column-wise over a whole shard: windows come from ``searchsorted`` on (patient, time) keys and
from the runs of equal admission ids, target fields are pulled out of the records' JSON by DuckDB, and
Python only parses the few events that risk labels need. Times are compared at one-second resolution
(MIMIC-IV's own).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ehrr1.data.events import DEMOGRAPHICS
from ehrr1.data.markdown import event_title
from ehrr1.tasks.groupings import group
from ehrr1.tasks.registry import ANY_EVENT, ContextRule, OutcomeKind, TaskSpec

ED_EVENT_TYPES = ("edstays", "triage", "vitalsign", "medrecon", "pyxis", "diagnosis")
YES, NO = "yes", "no"
NONE = -1  # missing hadm_id / stay_id in the integer columns
EPOCH = datetime(1970, 1, 1)  # timeline times are naive, as in MIMIC-IV


@dataclass(frozen=True)
class Sample:
    subject_id: int
    hadm_id: int | None
    task: str
    event: int  # index of the anchor event in the patient's timeline
    period_begin: int
    period_end: int
    admissions_id: int | None
    last_discharge_id: int | None
    target: tuple[str, ...]  # decision: the answer lines; risk: ("yes",) or ("no",)


def _time(value: str | None) -> datetime | None:
    return None if value in (None, "") else datetime.fromisoformat(value)


@dataclass
class Facts:
    """What one patient's timeline says about admissions, ICU and ED stays and death (for labels)."""

    dod: datetime | None = None
    admissions: dict[int, dict] = field(default_factory=dict)  # hadm -> admittime, dischtime
    admission_starts: list[datetime] = field(default_factory=list)
    icu: list[dict] = field(default_factory=list)  # hadm, intime, outtime
    ed: dict[int, dict] = field(default_factory=dict)  # shard row of the edstays event -> hadm, intime, outtime


class ShardEvents:
    """The events of one timeline shard as columns (rows sorted by subject, then timeline order)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.n = table.num_rows
        self.subject = table.column("subject_id").to_numpy()
        self.seconds = pc.cast(table.column("time"), pa.timestamp("s")).cast(pa.int64()).to_numpy()
        self.hadm = table.column("hadm_id").fill_null(NONE).to_numpy()
        self.stay = table.column("stay_id").fill_null(NONE).to_numpy()
        encoded = table.column("event_type").combine_chunks().dictionary_encode()
        self.type_codes = {name: code for code, name in enumerate(encoded.dictionary.to_pylist())}
        self.codes = encoded.indices.to_numpy()
        self.types = np.array(encoded.dictionary.to_pylist(), dtype=object)[self.codes]
        rows = np.arange(self.n)
        new_patient = np.r_[True, self.subject[1:] != self.subject[:-1]] if self.n else np.zeros(0, bool)
        self.patient_start = np.maximum.accumulate(np.where(new_patient, rows, 0)) if self.n else rows
        new_run = new_patient | np.r_[True, self.hadm[1:] != self.hadm[:-1]] if self.n else new_patient
        self.run_start = np.maximum.accumulate(np.where(new_run, rows, 0)) if self.n else rows
        run_end = np.minimum.accumulate(np.where(np.r_[new_run[1:], True], rows + 1, self.n)[::-1])[::-1]
        self.run_end = run_end if self.n else rows
        # (patient, time) keys that sort like the rows: windows become binary searches
        span = int(self.seconds.max() - self.seconds.min()) + 10**7 if self.n else 1
        self.key = np.cumsum(new_patient) * span + (self.seconds - (self.seconds.min() if self.n else 0))

    def rows_of(self, *event_types: str) -> np.ndarray:
        wanted = [self.type_codes[t] for t in event_types if t in self.type_codes]
        return np.flatnonzero(np.isin(self.codes, wanted)) if wanted else np.zeros(0, dtype=np.int64)

    def records(self, rows: np.ndarray) -> list[list[dict]]:
        """Parsed records of ``rows`` (for the few events whose records Python needs)."""
        return [json.loads(text) for text in self.table.column("records").take(pa.array(rows)).to_pylist()]

    def field_values(self, rows: np.ndarray, name: str) -> pa.ChunkedArray:
        """Per row of ``rows``: the distinct non-empty values of field ``name`` over its records, in record
        order, as a list of strings (the JSON is parsed by DuckDB, not Python)."""
        con = duckdb.connect()
        records = self.table.column("records").take(pa.array(rows))
        con.register("wanted", pa.table({"i": pa.array(np.arange(len(rows))), "records": records}))
        query = """
            WITH v AS (
              SELECT i, list_filter(list_transform(json_extract_string(records, ?), lambda x: trim(x)),
                                    lambda x: x IS NOT NULL AND x <> '') AS vals
              FROM wanted)
            SELECT list_filter(vals, lambda x, i: list_position(vals, x) = i) AS target FROM v ORDER BY i"""
        return con.sql(query, params=["$[*]." + json.dumps(name)]).to_arrow_table().column("target")

    def time(self, row: int) -> datetime:
        return EPOCH + timedelta(seconds=int(self.seconds[row]))

    def hadm_of(self, row: int) -> int | None:
        return None if self.hadm[row] == NONE else int(self.hadm[row])

    # ---- per-patient facts --------------------------------------------------------------------
    @cached_property
    def facts(self) -> dict[int, Facts]:
        facts: dict[int, Facts] = defaultdict(Facts)
        rows = self.rows_of(DEMOGRAPHICS, "admissions", "icustays", "edstays")
        for row, records in zip(rows.tolist(), self.records(rows), strict=True):
            patient, kind, hadm, first = facts[int(self.subject[row])], self.types[row], self.hadm_of(row), records[0]
            if kind == DEMOGRAPHICS:
                patient.dod = _time(first.get("dod"))
            elif kind == "admissions":
                admit = _time(first["admittime"])
                patient.admissions[hadm] = {"admittime": admit, "dischtime": _time(first["dischtime"])}
                patient.admission_starts.append(admit)
            elif kind == "icustays":
                patient.icu += [
                    {"hadm": hadm, "intime": _time(r["intime"]), "outtime": _time(r["outtime"])} for r in records
                ]
            else:
                patient.ed[row] = {"hadm": hadm, "intime": _time(first["intime"]), "outtime": _time(first["outtime"])}
        return facts

    @cached_property
    def last_time(self) -> dict[int, datetime]:
        """Time of the last event of each admission (hadm -> time)."""
        rows = np.flatnonzero(self.hadm != NONE)
        last = {}
        for row in rows:  # rows are in time order within a patient, so the last write wins
            last[int(self.hadm[row])] = int(self.seconds[row])
        return {h: EPOCH + timedelta(seconds=s) for h, s in last.items()}

    @cached_property
    def admission_row(self) -> dict[int, int]:
        return {int(self.hadm[r]): int(r) for r in self.rows_of("admissions") if self.hadm[r] != NONE}

    @cached_property
    def discharge_rows(self) -> np.ndarray:
        return self.rows_of("discharge")


# ---- context windows (vectorised over anchors) -----------------------------------------------------
def window_back(ev: ShardEvents, anchors: np.ndarray, hours: float, same_admission: bool) -> np.ndarray:
    """First row of the window that ends just before each anchor."""
    begin = np.searchsorted(ev.key, ev.key[anchors] - int(round(hours * 3600)), side="left")
    begin = np.maximum(begin, ev.patient_start[anchors] + 1)
    if same_admission:
        begin = np.maximum(begin, ev.run_start[anchors])
    return np.minimum(begin, anchors)


def window_forward(ev: ShardEvents, anchors: np.ndarray, hours: float) -> np.ndarray:
    """End row (exclusive) of the window that starts at each anchor."""
    end = np.searchsorted(ev.key, ev.key[anchors] + int(round(hours * 3600)), side="left")
    return np.maximum(np.minimum(end, ev.run_end[anchors]), anchors + 1)


def ed_window(ev: ShardEvents, anchors: np.ndarray) -> np.ndarray:
    """End row (exclusive) of each ED stay's window: its last ED record."""
    ed_rows = ev.rows_of(*ED_EVENT_TYPES)
    last: dict[tuple[int, int], int] = {}
    for row in ed_rows:
        last[(int(ev.subject[row]), int(ev.stay[row]))] = int(row)
    return np.array([last[(int(ev.subject[a]), int(ev.stay[a]))] + 1 for a in anchors], dtype=np.int64)


def admissions_before(ev: ShardEvents, anchors: np.ndarray, begin: np.ndarray) -> np.ndarray:
    """Row of each anchor's admission event when it lies before the window, else -1."""
    rows = ev.rows_of("admissions")
    rows = rows[ev.hadm[rows] != NONE]
    order = np.argsort(ev.hadm[rows], kind="stable")
    keys, rows = ev.hadm[rows][order], rows[order]
    hadm = ev.hadm[anchors]
    pos = np.minimum(np.searchsorted(keys, hadm), max(len(keys) - 1, 0))
    found = (hadm != NONE) & (len(keys) > 0) & (keys[pos] == hadm) if len(keys) else np.zeros(len(anchors), bool)
    row = rows[pos] if len(rows) else np.full(len(anchors), NONE)
    return np.where(found & (row < begin), row, NONE)


def discharges_before(ev: ShardEvents, anchors: np.ndarray, begin: np.ndarray) -> np.ndarray:
    """Row of the last discharge summary of another stay before each window, else -1."""
    rows = ev.discharge_rows
    result = np.full(len(anchors), NONE)
    if not len(rows):
        return result
    k = np.searchsorted(rows, begin, side="left") - 1
    pending = np.ones(len(anchors), bool)
    while pending.any():
        candidate = rows[np.maximum(k, 0)]
        alive = pending & (k >= 0) & (candidate >= ev.patient_start[anchors])
        other_stay = (ev.hadm[candidate] == NONE) | (ev.hadm[candidate] != ev.hadm[anchors])
        hit = alive & other_stay
        result[hit] = candidate[hit]
        pending = alive & ~other_stay
        k = k - 1
    return result


# ---- targets ----------------------------------------------------------------------------------------
def decision_targets(task: TaskSpec, ev: ShardEvents, anchors: np.ndarray) -> pa.Array:
    """The target of each anchor: its records' distinct values of the target field (mapped when grouped)."""
    if task.target == "event_title":
        titles = pa.array([event_title(t) for t in ev.types[anchors]], type=pa.string())
        return pa.ListArray.from_arrays(pa.array(np.arange(len(anchors) + 1), type=pa.int32()), titles)
    values = ev.field_values(anchors, task.target).combine_chunks()
    if task.grouping is None:
        return values
    mapped: dict[str, str | None] = {}
    grouped = []
    for row in values.to_pylist():
        classes = (mapped[v] if v in mapped else mapped.setdefault(v, group(task.grouping, v)) for v in row)
        grouped.append(list(dict.fromkeys(c for c in classes if c is not None)))
    return pa.array(grouped, type=pa.list_(pa.string()))


def risk_label(task: TaskSpec, ev: ShardEvents, anchor: int, context_end: datetime) -> bool | None:
    """True / False for the outcome, or None when the sample is not defined (dropped)."""
    outcome = task.outcome
    assert outcome is not None
    facts = ev.facts[int(ev.subject[anchor])]
    hours = timedelta(hours=outcome.hours or 0)
    kind = outcome.kind
    if kind in (
        OutcomeKind.ed_admitted,
        OutcomeKind.ed_inpatient_death,
        OutcomeKind.ed_icu_transfer,
        OutcomeKind.ed_return,
        OutcomeKind.ed_critical,
    ):
        ed = facts.ed[anchor]
        admitted = ed["hadm"] is not None and ed["hadm"] in facts.admissions
        death = admitted and facts.dod is not None and facts.dod <= ev.last_time[ed["hadm"]]
        icu = admitted and any(s["hadm"] == ed["hadm"] and s["intime"] - ed["outtime"] < hours for s in facts.icu)
        if kind is OutcomeKind.ed_admitted:
            return admitted
        if kind is OutcomeKind.ed_inpatient_death:
            return death
        if kind is OutcomeKind.ed_icu_transfer:
            return icu
        if kind is OutcomeKind.ed_critical:
            return icu or death
        later = [s["intime"] for s in facts.ed.values() if s["intime"] > ed["intime"]]
        return bool(later) and min(later) - ed["outtime"] < hours
    hadm = ev.hadm_of(anchor)
    if kind in (OutcomeKind.inpatient_death, OutcomeKind.stay_longer, OutcomeKind.readmission):
        admission = facts.admissions.get(hadm)
        if admission is None:
            return None
        if kind is OutcomeKind.inpatient_death:
            return facts.dod is not None and facts.dod <= admission["dischtime"]
        if kind is OutcomeKind.stay_longer:
            if admission["dischtime"] <= context_end:
                return None
            return admission["dischtime"] - admission["admittime"] > hours
        later = [t for t in facts.admission_starts if t > admission["dischtime"]]
        return bool(later) and min(later) - admission["dischtime"] < hours
    start = ev.time(anchor)
    stay = next((s for s in facts.icu if s["hadm"] == hadm and s["intime"] == start), None)
    if stay is None or stay["outtime"] <= context_end:
        return None
    if kind is OutcomeKind.death_after_context:
        return facts.dod is not None and facts.dod < context_end + hours
    if kind is OutcomeKind.icu_stay_at_least:
        return stay["outtime"] - stay["intime"] >= hours
    return any(s["hadm"] == stay["hadm"] and s["intime"] >= stay["outtime"] for s in facts.icu)


# ---- samples ----------------------------------------------------------------------------------------
def anchor_rows(task: TaskSpec, ev: ShardEvents) -> np.ndarray:
    if task.anchor == ANY_EVENT:
        return np.flatnonzero(ev.types != DEMOGRAPHICS)
    return ev.rows_of(task.anchor)


def shard_samples(task: TaskSpec, ev: ShardEvents) -> dict[str, Any]:
    """Every sample of ``task`` in the shard, as index columns (rows in shard order)."""
    anchors = anchor_rows(task, ev)
    context_end: list[datetime] | None = None
    if not task.is_risk:
        begin = window_back(ev, anchors, task.context_hours, task.same_admission)
        end = anchors
    elif task.context is ContextRule.ed_stay:
        begin, end = anchors, ed_window(ev, anchors)
        context_end = [ev.time(e - 1) for e in end]
    elif task.context is ContextRule.first_hours:
        begin, end = anchors, window_forward(ev, anchors, task.context_hours)
        context_end = [ev.time(a) + timedelta(hours=task.context_hours) for a in anchors]
    else:
        begin, end = window_back(ev, anchors, task.context_hours, task.same_admission), anchors + 1
        context_end = [ev.time(a) for a in anchors]
    if context_end is None:
        targets = decision_targets(task, ev, anchors) if len(anchors) else pa.array([], pa.list_(pa.string()))
    else:
        labels = [risk_label(task, ev, a, c) for a, c in zip(anchors.tolist(), context_end, strict=True)]
        targets = pa.array([[] if label is None else [YES if label else NO] for label in labels], pa.list_(pa.string()))
    keep = pc.greater(pc.list_value_length(targets), 0).to_numpy(zero_copy_only=False).astype(bool)
    anchors, begin, end = anchors[keep], np.asarray(begin)[keep], np.asarray(end)[keep]
    targets = targets.filter(pa.array(keep))
    first = ev.patient_start[anchors]

    def relative(rows: np.ndarray) -> pa.Array:
        return pa.array(np.where(rows == NONE, 0, rows - first), mask=rows == NONE, type=pa.int32())

    return {
        "subject_id": pa.array(ev.subject[anchors], type=pa.int64()),
        "hadm_id": pa.array(ev.hadm[anchors], mask=ev.hadm[anchors] == NONE, type=pa.int64()),
        "task": pa.array([task.name] * len(anchors), type=pa.string()),
        "event": pa.array(anchors - first, type=pa.int32()),
        "period_begin": pa.array(begin - first, type=pa.int32()),
        "period_end": pa.array(end - first, type=pa.int32()),
        "admissions_id": relative(admissions_before(ev, anchors, begin)),
        "last_discharge_id": relative(discharges_before(ev, anchors, begin)),
        "target": targets,
    }
