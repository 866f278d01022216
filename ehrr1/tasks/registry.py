"""The task registry: every EHR-R1 task as typed, declarative data.

The built-in catalogue (``catalogue.yaml``) holds the reference's 46 tasks (the paper's 45 plus the
``discharge`` note generation), spelled as the reference spells them (``ED_ICU_Tranfer_12hour``
included) and with its instructions verbatim. Users add tasks through config (``tasks.extra``) with
the same keys: a next-X task on another table, or a risk outcome with another time window. Every spec
is validated against :class:`TaskSpec`, so a typo names the key and an unknown option lists the choices.
"""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from importlib.resources import files
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from ehrr1.config.checks import path_name_problem
from ehrr1.data.events import EVENT_TYPES
from ehrr1.data.markdown import REFERENCE_TITLES
from ehrr1.errors import UserError, shown

ANY_EVENT = "*"
INSTRUCTION_PREFIX = "Given the sequence of events that have occurred in a hospital, please"


class TaskKind(str, Enum):
    decision = "decision"
    risk = "risk"


class Metric(str, Enum):
    f1 = "f1"
    recall = "recall"
    accuracy = "accuracy"
    auroc = "auroc"
    rouge1 = "rouge1"  # generation (the discharge note)


class ContextRule(str, Enum):
    before_anchor = "before_anchor"  # from the earliest same-admission event < context_hours before the anchor
    through_anchor = "through_anchor"  # the same, the anchor included (a discharge note is known at discharge)
    ed_stay = "ed_stay"  # the ED stay up to its last event that starts before ED out-time
    first_hours = "first_hours"  # the anchor up to its admission's last event < context_hours after it


class OutcomeKind(str, Enum):
    ed_admitted = "ed_admitted"
    ed_inpatient_death = "ed_inpatient_death"
    ed_icu_transfer = "ed_icu_transfer"
    ed_return = "ed_return"
    ed_critical = "ed_critical"
    inpatient_death = "inpatient_death"
    stay_longer = "stay_longer"
    readmission = "readmission"
    death_after_context = "death_after_context"
    icu_stay_at_least = "icu_stay_at_least"
    icu_readmission = "icu_readmission"


class Grouping(str, Enum):
    ccs_diagnosis = "ccs_diagnosis"
    ccs_procedure = "ccs_procedure"
    atc = "atc"


@dataclass
class Outcome:
    kind: OutcomeKind
    hours: float | None = None


@dataclass
class TaskSpec:
    """One task. Decision tasks predict the anchor's records; risk tasks answer yes or no."""

    name: str
    kind: TaskKind
    anchor: str  # event type whose events are the samples' anchors ("*": every event)
    metric: Metric = Metric.f1
    target: str | None = None  # decision: record field of the anchor's rows ("event_type": its table name)
    fallback: str | None = None  # decision: the field used where ``target`` is missing ("nan")
    grouping: Grouping | None = None  # decision: the target is a CCS / ATC class (the concept namespace)
    generation: bool = False  # decision: the target is one free text (not a set of lines)
    max_targets: int | None = None  # decision: samples with more target values are not selected
    admission_in_window: bool = False  # selected only when the current admission is not before the window
    context: ContextRule = ContextRule.before_anchor
    context_hours: float = 24.0
    forbidden: list[str] = field(default_factory=list)  # event types never shown in the input
    balance: bool = False  # sample by inverse label frequency (risk tasks: equal count per label)
    outcome: Outcome | None = None  # risk: when the answer is yes
    instruction: str | None = None  # the user turn's last line (derived from the anchor when unset)
    version: int = 2  # change when the definition, prompt or scoring changes

    @property
    def is_risk(self) -> bool:
        return self.kind is TaskKind.risk

    @property
    def prompt_instruction(self) -> str:
        if self.instruction:
            return self.instruction
        title = REFERENCE_TITLES.get(self.anchor, self.anchor.replace("_", " ").title())
        return f"{INSTRUCTION_PREFIX} give the next {title} suggestion for the patients."


class TaskError(UserError, ValueError):
    """An unknown task name or an invalid task definition."""


def _check(spec: TaskSpec) -> TaskSpec:
    where = f"task '{spec.name}'"
    known = (ANY_EVENT, *EVENT_TYPES)
    if spec.anchor not in known:
        raise TaskError(f"{where}: anchor '{spec.anchor}' is not an event type; choose one of {', '.join(known)}")
    unknown = [t for t in spec.forbidden if t not in EVENT_TYPES]
    if unknown:
        raise TaskError(f"{where}: forbidden event types {unknown} are unknown; choose from {', '.join(EVENT_TYPES)}")
    if spec.is_risk:
        if spec.outcome is None or not spec.instruction:
            raise TaskError(f"{where}: a risk task needs an outcome and an instruction")
        if spec.metric is not Metric.auroc:
            raise TaskError(f"{where}: risk tasks are scored by auroc")
        needs_hours = {
            OutcomeKind.ed_icu_transfer,
            OutcomeKind.ed_return,
            OutcomeKind.ed_critical,
            OutcomeKind.stay_longer,
            OutcomeKind.readmission,
            OutcomeKind.death_after_context,
            OutcomeKind.icu_stay_at_least,
        }
        if spec.outcome.kind in needs_hours and not spec.outcome.hours:
            raise TaskError(f"{where}: outcome '{spec.outcome.kind.value}' needs hours")
    elif not spec.target:
        raise TaskError(f"{where}: a decision task needs a target field")
    return spec


def make_task(name: str, kind: str, fields: Mapping[str, Any]) -> TaskSpec:
    """Validate one task definition (as written in YAML) into a TaskSpec."""
    written: dict[str, Any] = {
        "name": name,
        "kind": kind,
        **({"metric": "auroc"} if kind == TaskKind.risk.value else {}),
        **fields,
    }
    try:
        node = OmegaConf.merge(OmegaConf.structured(TaskSpec), written)
        spec = cast(TaskSpec, OmegaConf.to_object(node))
    except Exception as exc:  # OmegaConf names the key and the allowed values
        raise TaskError(f"task '{name}': {str(exc).splitlines()[0]}") from exc
    return _check(spec)


def _from_sections(sections: Mapping[str, Any]) -> dict[str, TaskSpec]:
    tasks: dict[str, TaskSpec] = {}
    for kind, defs in sections.items():
        if kind not in (TaskKind.decision.value, TaskKind.risk.value):
            raise TaskError(f"task section '{kind}' is unknown; use 'decision' or 'risk'")
        for name, fields in (defs or {}).items():
            problem = path_name_problem(f"tasks.extra.{kind}.<name>", name)  # it names the task's index folder
            if problem:
                raise TaskError(problem)
            tasks[name] = make_task(name, kind, fields)
    return tasks


def builtin_tasks() -> dict[str, TaskSpec]:
    """The 46 EHR-R1 tasks, in catalogue order (copies: a caller may change its own)."""
    return copy.deepcopy(_catalogue())


@functools.cache
def _catalogue() -> dict[str, TaskSpec]:
    """Validated once per process: a registry is built at several steps of a run, ~0.6 s each."""
    text = files("ehrr1.tasks").joinpath("catalogue.yaml").read_text(encoding="utf-8")
    return _from_sections(cast(dict[str, Any], OmegaConf.to_container(OmegaConf.create(text))))


class TaskRegistry:
    """Built-in tasks plus user-defined ones, looked up by exact name."""

    def __init__(self, extra: Mapping[str, Any] | None = None):
        """``extra``: task sections of user-defined tasks (``tasks.extra``; a dict or its config node)."""
        self.tasks = builtin_tasks()
        if isinstance(extra, DictConfig):
            extra = cast(dict[str, Any], OmegaConf.to_container(extra))
        self.tasks.update(_from_sections(extra or {}))

    @property
    def names(self) -> list[str]:
        return list(self.tasks)

    def __getitem__(self, name: str) -> TaskSpec:
        try:
            return self.tasks[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise TaskError(f"unknown task {shown(name)}.{hint} Valid tasks: {', '.join(self.names)}") from None

    def select(self, names: Iterable[str]) -> list[TaskSpec]:
        return [self[n] for n in names]
