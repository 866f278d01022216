"""Samples of a timeline shard: anchor, context window, current admission, previous discharge, target.

The rules are the EHR-R1 reference's (``mimiciv_dataset/task_sample_info_gen.py``), read on our timeline:

- **decision tasks**: the window runs from the earliest event of the anchor's admission (an equal
  ``hadm_id``, missing included) that starts less than 24 h before the anchor, up to the anchor
  (exclusive), keeping every event in between whatever its admission. ICD diagnoses carry no time of
  their own: as anchors and inside later windows they take the time of the event before them.
- ``ed_stay``: from the ED stay to the last event that starts strictly before ED out-time (ED diagnoses,
  at out-time, are outside).
- ``first_hours``: from the anchor to the last event of its admission that starts less than 24 h after it.
- ``through_anchor`` (readmission): the decision window with the discharge note itself included.
- the current admission is the latest admission event at or before the anchor when it has the sample's
  admission; the previous discharge note is the latest at or before the anchor when its admission differs.

Labels: ED outcomes from the ED out-time (admission with the stay's hadm, death by the admission's last
event, ICU within 12 h, return within 72 h); length of stay only when the stay outlasts the context;
in-hospital death when the date of death is not after discharge; ICU death counted from the last
context event; ICU stay length from in- and out-time; readmission counted from the discharge note.
Patients with more than ``MAX_EVENTS`` events are not indexed, as in the reference.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ehrr1.data.events import DEMOGRAPHICS
from ehrr1.data.markdown import NOT_RENDERED
from ehrr1.data.timeline import subject_runs
from ehrr1.errors import ConfigError
from ehrr1.tasks.registry import ANY_EVENT, ContextRule, OutcomeKind, TaskSpec

YES, NO = "yes", "no"
MAX_EVENTS = 1200
DAY = 24 * 3600
_MISSING_TEXT = ("", "nan", "NaN", "None")


@dataclass(frozen=True, slots=True)
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


def _seconds(text: Any) -> int | None:
    """Seconds of a record's time text ("YYYY-MM-DD HH:MM:SS" or a date), None when missing."""
    if not isinstance(text, str) or text in _MISSING_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(text if len(text) > 10 else text + " 00:00:00")
    except ValueError:
        return None
    return int((moment - datetime(1970, 1, 1)).total_seconds())


def decision_target(task: TaskSpec, records: Sequence[dict[str, Any]], event_type: str) -> tuple[str, ...]:
    """The answer lines of a decision task for the anchor's rows (empty: no sample)."""
    if task.target == "event_type":
        return (event_type,)
    field, fallback = task.target, task.fallback
    if field is None:
        raise ConfigError(f"task {task.name}: a decision task needs a target field")
    values: list[Any] = []
    for record in records:
        value = record.get(field)
        if fallback:
            if value in (None, "nan"):
                value = record.get(fallback)
            if isinstance(value, str):
                values.append(value)
        elif value and (isinstance(value, list) or value not in _MISSING_TEXT):
            values.append(value)
    if task.generation:
        return (values[0],) if len(values) == 1 else ()
    lines: dict[str, None] = {}
    for value in values:
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, str) and item.strip():
                lines[item.strip()] = None
    return tuple(lines)


class PatientTimeline:
    """One patient's events as the columns the rules read (records parsed on demand)."""

    def __init__(self, subject_id: int, types: list[str], start: list[int | None], hadm: list[int | None],
                 records: Sequence[str] | pa.StringArray):  # fmt: skip
        self.subject_id, self.types, self.start, self.hadm, self._records = subject_id, types, start, hadm, records
        self.n = len(types)
        # ICD diagnoses take the time of the event before them (the reference sets it when it reaches them)
        self.borrowed: list[int | None] = []
        for i, (kind, moment) in enumerate(zip(types, start, strict=True)):
            self.borrowed.append(self.borrowed[i - 1] if kind == "diagnoses_icd" and i else moment)
        self._parsed: dict[int, list[dict[str, Any]]] = {}
        self._timed: tuple[list[int], list[int], dict[int | None, list[int]]] | None = None
        self._in_time_order: bool | None = None

    def records(self, i: int) -> list[dict[str, Any]]:
        if i not in self._parsed:
            raw = self._records[i]  # a str, or an Arrow scalar (records stay in Arrow until read)
            self._parsed[i] = json.loads(raw if isinstance(raw, str) else raw.as_py())
        return self._parsed[i]

    def first(self, i: int, name: str) -> Any:
        return self.records(i)[0].get(name)

    def _timed_positions(self) -> tuple[list[int], list[int], dict[int | None, list[int]]] | None:
        """Positions with a time, their times and those positions per admission; None if times go back."""
        if self._in_time_order is None:
            timed = [(j, t) for j in range(1, self.n) if (t := self.borrowed[j]) is not None]
            positions, times = [j for j, _ in timed], [t for _, t in timed]
            self._in_time_order = all(a <= b for a, b in zip(times, times[1:], strict=False))
            per_admission: dict[int | None, list[int]] = defaultdict(list)
            for j in positions:
                per_admission[self.hadm[j]].append(j)
            self._timed = (positions, times, per_admission)
        return self._timed if self._in_time_order else None

    def window_back(self, anchor: int, hours: float = 24.0) -> int | None:
        """Earliest event (after the demographics) of the anchor's admission starting < ``hours`` before it.

        Walking back from the anchor, the window stops at the first event ``hours`` or more before it. On
        a timeline in time order (every one ehrr1 builds) that is a binary search; otherwise the walk.
        """
        now = self.borrowed[anchor]
        if now is None:
            return None
        timed = self._timed_positions()
        if timed is None:
            return self._walk_back(anchor, now, hours)
        positions, times, per_admission = timed
        cut = bisect_right(times, now - hours * 3600)
        stop = positions[cut - 1] if cut else 0
        same = per_admission.get(self.hadm[anchor], [])
        first = bisect_right(same, stop)
        return same[first] if first < len(same) and same[first] < anchor else None

    def _walk_back(self, anchor: int, now: int, hours: float) -> int | None:
        begin = None
        for j in range(anchor - 1, 0, -1):
            moment = self.borrowed[j]
            if moment is None:
                continue
            if now - moment >= hours * 3600:
                break
            if self.hadm[j] == self.hadm[anchor]:
                begin = j
        return begin

    def window_forward(self, anchor: int, since: int | None, hours: float = 24.0) -> int | None:
        """Last later event of the anchor's admission starting < ``hours`` after ``since``."""
        if since is None or self.hadm[anchor] is None:
            return None
        end = None
        for j in range(anchor + 1, self.n):
            moment = self.start[j]
            if moment is not None and moment - since < hours * 3600 and self.hadm[j] == self.hadm[anchor]:
                end = j
        return end

    def next_of(self, anchor: int, event_type: str, same_admission: bool) -> int | None:
        for j in range(anchor + 1, self.n):
            if self.types[j] == event_type and (not same_admission or (
                    self.hadm[anchor] is not None and self.hadm[j] == self.hadm[anchor])):  # fmt: skip
                return j
        return None


def _label(yes: bool) -> tuple[str, ...]:
    return (YES,) if yes else (NO,)


def ed_samples(p: PatientTimeline, a: int, tasks: list[TaskSpec]) -> list[tuple[TaskSpec, int, int, tuple[str, ...]]]:
    out_time = _seconds(p.first(a, "outtime"))
    if out_time is None:
        return []
    end = None
    last_of_admission = None
    for j in range(a + 1, p.n):
        moment = p.start[j]
        if moment is None:
            continue
        if moment < out_time:
            end = j
        if p.hadm[a] is not None and p.hadm[j] == p.hadm[a]:
            last_of_admission = moment
    if end is None:
        return []
    admission = p.next_of(a, "admissions", same_admission=True)
    icu = p.next_of(a, "icustays", same_admission=True)
    next_ed = p.next_of(a, "edstays", same_admission=False)
    dod = _seconds(p.first(0, "dod"))
    death = dod is not None and last_of_admission is not None and not last_of_admission < dod
    out = []
    for task in tasks:
        assert task.outcome is not None
        hours = (task.outcome.hours or 0) * 3600
        icu_start = None if icu is None else p.start[icu]
        icu_soon = icu_start is not None and icu_start - out_time < hours
        kind = task.outcome.kind
        if kind is OutcomeKind.ed_admitted:
            yes = admission is not None
        elif kind is OutcomeKind.ed_inpatient_death:
            yes = death
        elif kind is OutcomeKind.ed_icu_transfer:
            yes = icu_soon
        elif kind is OutcomeKind.ed_critical:
            yes = icu_soon or death
        elif kind is OutcomeKind.ed_return:
            return_start = None if next_ed is None else p.start[next_ed]
            yes = return_start is not None and return_start - out_time < hours
        else:
            raise ConfigError(f"task {task.name}: outcome {kind.value} does not apply to ED stays")
        out.append((task, a, end + 1, _label(yes)))
    return out


def admission_samples(p: PatientTimeline, a: int, tasks: list[TaskSpec]) -> list[tuple]:
    admit, discharge = _seconds(p.first(a, "admittime")), _seconds(p.first(a, "dischtime"))
    end = p.window_forward(a, p.start[a], tasks[0].context_hours)
    if end is None or discharge is None or admit is None:
        return []
    dod = _seconds(p.first(0, "dod"))
    out = []
    for task in tasks:
        assert task.outcome is not None
        kind = task.outcome.kind
        if kind is OutcomeKind.stay_longer:
            context_end = p.start[end]
            if context_end is None or not context_end < discharge:  # the stay must outlast the context
                continue
            yes = discharge - admit > (task.outcome.hours or 0) * 3600
        elif kind is OutcomeKind.inpatient_death:
            yes = dod is not None and not discharge < dod
        else:
            raise ConfigError(f"task {task.name}: outcome {kind.value} does not apply to admissions")
        out.append((task, a, end + 1, _label(yes)))
    return out


def icu_samples(p: PatientTimeline, a: int, tasks: list[TaskSpec]) -> list[tuple]:
    intime, outtime = _seconds(p.first(a, "intime")), _seconds(p.first(a, "outtime"))
    end = p.window_forward(a, intime, tasks[0].context_hours)
    if end is None or intime is None or outtime is None:
        return []
    context_end = p.start[end]
    assert context_end is not None
    dod = _seconds(p.first(0, "dod"))
    again = p.next_of(a, "icustays", same_admission=True)
    out = []
    for task in tasks:
        assert task.outcome is not None
        hours = (task.outcome.hours or 0) * 3600
        kind = task.outcome.kind
        if kind is OutcomeKind.death_after_context:
            yes = dod is not None and dod - context_end < hours
        elif kind is OutcomeKind.icu_stay_at_least:
            yes = not outtime - intime < hours
        elif kind is OutcomeKind.icu_readmission:
            yes = again is not None
        else:
            raise ConfigError(f"task {task.name}: outcome {kind.value} does not apply to ICU stays")
        out.append((task, a, end + 1, _label(yes)))
    return out


def readmission_samples(p: PatientTimeline, a: int, tasks: list[TaskSpec]) -> list[tuple]:
    begin, discharged = p.window_back(a, tasks[0].context_hours), p.start[a]
    if begin is None or discharged is None:
        return []
    later = p.next_of(a, "admissions", same_admission=False)
    out = []
    for task in tasks:
        assert task.outcome is not None
        if task.outcome.kind is not OutcomeKind.readmission:
            raise ConfigError(f"task {task.name}: outcome {task.outcome.kind.value} does not apply to discharge notes")
        readmitted = None if later is None else p.start[later]
        gap = None if readmitted is None else readmitted - discharged
        yes = gap is not None and gap < (task.outcome.hours or 0) * 3600
        out.append((task, begin, a + 1, _label(yes)))
    return out


def _risk_rule(task: TaskSpec):
    if task.context is ContextRule.first_hours:
        return icu_samples if task.anchor == "icustays" else admission_samples
    if task.context is ContextRule.ed_stay:
        return ed_samples
    if task.context is ContextRule.through_anchor:
        return readmission_samples
    raise ConfigError(f"task {task.name}: risk tasks take context ed_stay, first_hours or through_anchor")


def patient_samples(p: PatientTimeline, tasks: Sequence[TaskSpec]) -> list[Sample]:
    """Every sample of ``tasks`` in one patient's timeline, in timeline order then task order."""
    by_anchor: dict[str, list[TaskSpec]] = defaultdict(list)
    any_event = [t for t in tasks if t.anchor == ANY_EVENT]
    for task in tasks:
        if task.anchor != ANY_EVENT:
            by_anchor[task.anchor].append(task)
    samples: list[Sample] = []
    last_admission = last_discharge = None
    for a, kind in enumerate(p.types):
        if kind == "admissions":
            last_admission = a
        if kind == "discharge":
            last_discharge = a
        anchored = by_anchor.get(kind, [])
        wildcard = any_event if kind not in NOT_RENDERED else []
        if not anchored and not wildcard:
            continue
        found: list[tuple] = []
        decision = [t for t in anchored if not t.is_risk] + wildcard
        if decision:
            begins = {h: p.window_back(a, h) for h in {t.context_hours for t in decision}}
            for task in decision:
                begin = begins[task.context_hours]
                if task.target == "event_type" and (kind == DEMOGRAPHICS or p.borrowed[a] is None):
                    continue
                target = decision_target(task, p.records(a), kind) if task.target != "event_type" else (kind,)
                if target and begin is not None:
                    found.append((task, begin, a, target))
        risk = [t for t in anchored if t.is_risk]
        rules: dict[Any, list[TaskSpec]] = defaultdict(list)
        for task in risk:
            rules[(_risk_rule(task), task.context_hours)].append(task)
        for (rule, _), rule_tasks in rules.items():
            found += rule(p, a, rule_tasks)
        hadm = p.hadm[a]
        admission = last_admission if last_admission is not None and hadm is not None and (
            p.hadm[last_admission] == hadm) else None  # fmt: skip
        discharge = last_discharge if last_discharge is not None and p.hadm[last_discharge] != hadm else None
        for task, begin, end, target in found:
            samples.append(Sample(p.subject_id, hadm, task.name, a, begin, end, admission, discharge, tuple(target)))
    return samples


def shard_patients(table: pa.Table) -> Iterator[PatientTimeline]:
    """The patients of a timeline shard table (rows sorted by subject, then event index), one at a time so
    that only one patient's parsed records are held."""
    columns = table.select(["subject_id", "event_type", "hadm_id"]).to_pydict()
    records = table.column("records").combine_chunks()
    times = pc.cast(table.column("time"), pa.timestamp("s")).cast(pa.int64()).to_pylist()
    for start, stop in subject_runs(columns["subject_id"]):
        yield PatientTimeline(
            columns["subject_id"][start],
            columns["event_type"][start:stop],
            times[start:stop],
            columns["hadm_id"][start:stop],
            records.slice(start, stop - start),
        )


def shard_samples(tasks: Sequence[TaskSpec], table: pa.Table) -> dict[str, list[Sample]]:
    """Every sample of ``tasks`` in a shard, per task (patients over ``MAX_EVENTS`` events are skipped)."""
    out: dict[str, list[Sample]] = {t.name: [] for t in tasks}
    for patient in shard_patients(table):
        if patient.n > MAX_EVENTS:
            continue
        for sample in patient_samples(patient, tasks):
            out[sample.task].append(sample)
    return out


def samples_table(samples: Sequence[Sample], schema: pa.Schema) -> pa.Table:
    return pa.table({name: [getattr(s, name) for s in samples] for name in schema.names}, schema=schema)
