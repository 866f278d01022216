"""Samples of one timeline for one task: anchor, context window, current admission, previous discharge, target.

Pure functions of a :class:`Timeline`. A sample's input is the half-open slice
``[period_begin, period_end)`` of the timeline (minus the task's forbidden event types), optionally
preceded by the current admission event (``admissions_id``) and the previous stay's discharge summary
(``last_discharge_id``), both strictly before the window. Rules:

- decision tasks: the window ends just before the anchor and reaches back ``context_hours``, stopping at
  the first event of another admission (when ``same_admission``) or before the demographics;
- ``ed_stay``: from the ED stay's arrival to its last ED record (its ED diagnoses at ED out-time); the
  admission that may follow starts after the window;
- ``first_hours``: from the anchor for ``context_hours``, same admission; samples whose stay ends within
  the window are dropped (their outcome would be visible or trivial);
- ``before_anchor`` for risk tasks: the ``context_hours`` before the anchor, anchor included (a discharge
  summary is known at discharge).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ehrr1.data.events import DEMOGRAPHICS
from ehrr1.data.markdown import event_title
from ehrr1.data.timeline import Event, Timeline
from ehrr1.tasks.groupings import group
from ehrr1.tasks.registry import ANY_EVENT, ContextRule, OutcomeKind, TaskSpec

ED_EVENT_TYPES = ("edstays", "triage", "vitalsign", "medrecon", "pyxis", "diagnosis")
YES, NO = "yes", "no"


@dataclass(frozen=True)
class Sample:
    subject_id: int
    hadm_id: int | None
    task: str
    event: int  # index of the anchor event
    period_begin: int
    period_end: int
    admissions_id: int | None
    last_discharge_id: int | None
    target: tuple[str, ...]  # decision: the answer lines; risk: ("yes",) or ("no",)


def _time(value: str | None) -> datetime | None:
    return None if value in (None, "") else datetime.fromisoformat(value)


@dataclass
class Facts:
    """What the timeline says about admissions, ICU and ED stays and death (for labels)."""

    dod: datetime | None = None
    admissions: dict[int, dict] = field(default_factory=dict)  # hadm -> admittime, dischtime, index
    admission_starts: list[datetime] = field(default_factory=list)
    icu: list[dict] = field(default_factory=list)  # hadm, intime, outtime
    ed: list[dict] = field(default_factory=list)  # index, hadm, intime, outtime
    last_time: dict[int, datetime] = field(default_factory=dict)  # hadm -> time of its last event
    discharges: list[tuple[int, int | None]] = field(default_factory=list)  # (index, hadm) of discharge notes

    @classmethod
    def of(cls, timeline: Timeline) -> Facts:
        facts = cls()
        for i, event in enumerate(timeline):
            record = event.records[0] if event.records else {}
            if event.event_type == DEMOGRAPHICS:
                facts.dod = _time(record.get("dod"))
            elif event.event_type == "admissions":
                facts.admissions[event.hadm_id] = {
                    "admittime": _time(record["admittime"]),
                    "dischtime": _time(record["dischtime"]),
                    "index": i,
                }
                facts.admission_starts.append(_time(record["admittime"]))
            elif event.event_type == "icustays":
                facts.icu.extend(
                    {"hadm": event.hadm_id, "intime": _time(r["intime"]), "outtime": _time(r["outtime"])}
                    for r in event.records
                )
            elif event.event_type == "edstays":
                facts.ed.extend(
                    {
                        "index": i,
                        "hadm": event.hadm_id,
                        "stay": event.stay_id,
                        "intime": _time(r["intime"]),
                        "outtime": _time(r["outtime"]),
                    }
                    for r in event.records
                )
            elif event.event_type == "discharge":
                facts.discharges.append((i, event.hadm_id))
            if event.hadm_id is not None:
                facts.last_time[event.hadm_id] = event.time
        return facts


# ---- context windows ----------------------------------------------------------------------------
def _window_back(timeline: Timeline, anchor: int, hours: float, same_admission: bool, include_anchor: bool):
    start = timeline[anchor].time - timedelta(hours=hours)
    hadm = timeline[anchor].hadm_id
    begin = anchor
    while begin - 1 >= 1:
        previous = timeline[begin - 1]
        if previous.time < start or (same_admission and previous.hadm_id != hadm):
            break
        begin -= 1
    return begin, anchor + 1 if include_anchor else anchor


def _window_forward(timeline: Timeline, anchor: int, hours: float) -> tuple[int, int, datetime]:
    stop = timeline[anchor].time + timedelta(hours=hours)
    hadm = timeline[anchor].hadm_id
    end = anchor + 1
    while end < len(timeline) and timeline[end].time < stop and timeline[end].hadm_id == hadm:
        end += 1
    return anchor, end, stop


def _ed_window(timeline: Timeline, anchor: int) -> tuple[int, int]:
    stay = timeline[anchor].stay_id
    end = anchor + 1
    for i in range(anchor + 1, len(timeline)):
        event = timeline[i]
        if event.event_type in ED_EVENT_TYPES and event.stay_id == stay:
            end = i + 1
        elif event.event_type == "edstays":
            break
    return anchor, end


def _admission_before(facts: Facts, hadm: int | None, begin: int) -> int | None:
    admission = facts.admissions.get(hadm) if hadm is not None else None
    return admission["index"] if admission and admission["index"] < begin else None


def _discharge_before(facts: Facts, hadm: int | None, begin: int) -> int | None:
    earlier = [i for i, h in facts.discharges if i < begin and (h is None or h != hadm)]
    return earlier[-1] if earlier else None


# ---- targets --------------------------------------------------------------------------------------
def decision_target(task: TaskSpec, timeline: Timeline, anchor: int) -> tuple[str, ...]:
    event = timeline[anchor]
    if task.target == "event_title":
        return (event_title(event.event_type),)
    values = []
    for record in event.records:
        value = record.get(task.target)
        if value is None or str(value).strip() == "":
            continue
        value = str(value).strip()
        if task.grouping is not None:
            value = group(task.grouping, value)
            if value is None:
                continue
        values.append(value)
    return tuple(dict.fromkeys(values))


def risk_label(task: TaskSpec, facts: Facts, timeline: Timeline, anchor: int, context_end: datetime) -> bool | None:
    """True / False for the outcome, or None when the sample is not defined (dropped)."""
    outcome = task.outcome
    assert outcome is not None
    hours = timedelta(hours=outcome.hours or 0)
    event = timeline[anchor]
    kind = outcome.kind
    if kind in (
        OutcomeKind.ed_admitted,
        OutcomeKind.ed_inpatient_death,
        OutcomeKind.ed_icu_transfer,
        OutcomeKind.ed_return,
        OutcomeKind.ed_critical,
    ):
        ed = next(s for s in facts.ed if s["index"] == anchor)
        admitted = ed["hadm"] is not None and ed["hadm"] in facts.admissions
        death = admitted and facts.dod is not None and facts.dod <= facts.last_time[ed["hadm"]]
        icu = admitted and any(s["hadm"] == ed["hadm"] and s["intime"] - ed["outtime"] < hours for s in facts.icu)
        if kind is OutcomeKind.ed_admitted:
            return admitted
        if kind is OutcomeKind.ed_inpatient_death:
            return death
        if kind is OutcomeKind.ed_icu_transfer:
            return icu
        if kind is OutcomeKind.ed_critical:
            return icu or death
        later = [s["intime"] for s in facts.ed if s["intime"] > ed["intime"]]
        return bool(later) and min(later) - ed["outtime"] < hours
    if kind in (OutcomeKind.inpatient_death, OutcomeKind.stay_longer, OutcomeKind.readmission):
        admission = facts.admissions.get(event.hadm_id)
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
    stay = next((s for s in facts.icu if s["hadm"] == event.hadm_id and s["intime"] == event.time), None)
    if stay is None or stay["outtime"] <= context_end:
        return None
    if kind is OutcomeKind.death_after_context:
        return facts.dod is not None and facts.dod < context_end + hours
    if kind is OutcomeKind.icu_stay_at_least:
        return stay["outtime"] - stay["intime"] >= hours
    return any(s["hadm"] == stay["hadm"] and s["intime"] >= stay["outtime"] for s in facts.icu)


# ---- samples ----------------------------------------------------------------------------------------
def anchors(task: TaskSpec, timeline: Timeline) -> list[int]:
    if task.anchor == ANY_EVENT:
        return list(range(1, len(timeline)))
    return [i for i, e in enumerate(timeline) if e.event_type == task.anchor]


def samples_of(task: TaskSpec, timeline: Timeline, facts: Facts | None = None) -> Iterator[Sample]:
    facts = facts or Facts.of(timeline)
    for anchor in anchors(task, timeline):
        event: Event = timeline[anchor]
        if not task.is_risk:
            begin, end = _window_back(timeline, anchor, task.context_hours, task.same_admission, include_anchor=False)
            target = decision_target(task, timeline, anchor)
            if not target:
                continue
        else:
            if task.context is ContextRule.ed_stay:
                begin, end = _ed_window(timeline, anchor)
                context_end = timeline[end - 1].time
            elif task.context is ContextRule.first_hours:
                begin, end, context_end = _window_forward(timeline, anchor, task.context_hours)
            else:
                begin, end = _window_back(
                    timeline, anchor, task.context_hours, task.same_admission, include_anchor=True
                )
                context_end = event.time
            label = risk_label(task, facts, timeline, anchor, context_end)
            if label is None:
                continue
            target = (YES if label else NO,)
        yield Sample(
            timeline.subject_id,
            event.hadm_id,
            task.name,
            anchor,
            begin,
            end,
            _admission_before(facts, event.hadm_id, begin),
            _discharge_before(facts, event.hadm_id, begin),
            target,
        )
