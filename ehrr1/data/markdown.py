"""The EHR markdown format: the one renderer from timeline events to model input text.

Byte-stable by construction: values are formatted by one function (:func:`format_value`), records are
already in a canonical order in the timeline, and every event type has a fixed view below. Only fields
that were known at the event's time and matter clinically are shown: never ids, store times, discharge
information on an admission, or the outcome of an ED or ICU stay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ehrr1.data.timeline import Event

Field = str | Callable[[dict[str, Any], Event], Any]


@dataclass(frozen=True)
class EventView:
    """How one event type renders.

    ``layout``: ``fields`` renders one record as ``- Key: Value`` lines and several as a table;
    ``pairs`` renders each record as ``- <first field>: <second field>``; ``values`` renders each
    record as ``- <first field>``.
    """

    title: str
    columns: tuple[tuple[str, Field], ...]
    layout: str = "fields"


def format_value(value: Any) -> str:
    """Canonical text of a field value; missing values (None, NaN, "nan") are empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return format_time(value)
    text = str(value)
    return "" if text.strip().lower() == "nan" else text


def format_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _age(record: dict[str, Any], event: Event) -> Any:
    if record.get("anchor_age") is None or record.get("anchor_year") is None:
        return None
    return int(record["anchor_age"]) + event.time.year - int(record["anchor_year"])


def _gender(record: dict[str, Any], _: Event) -> str:
    return {"M": "Male", "F": "Female"}.get(record.get("gender") or "", format_value(record.get("gender")))


def _lab_range(record: dict[str, Any], _: Event) -> str:
    low, high = format_value(record.get("ref_range_lower")), format_value(record.get("ref_range_upper"))
    return f"{low}-{high}" if low or high else ""


def _lab_flag(record: dict[str, Any], _: Event) -> str:
    return format_value(record.get("flag")) or "normal"


def _unit_or_event(record: dict[str, Any], _: Event) -> Any:
    return record.get("careunit") or record.get("eventtype")


def _titled(*fields: str) -> tuple[tuple[str, Field], ...]:
    return tuple((f.title(), f) for f in fields)


_ITEM = ("Item Name", "label")
_AMOUNTS = (_ITEM, ("Amount", "amount"), ("Amount Unit", "amountuom"), ("Rate", "rate"), ("Rate Unit", "rateuom"))
_MEASURE = (_ITEM, ("Value", "value"), ("Unit", "valueuom"))
_VITALS = ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp")

VIEWS: dict[str, EventView] = {
    "patients": EventView("Patient Demographics", (("Age", _age), ("Gender", _gender))),
    "admissions": EventView(
        "Admissions", _titled("admission_type", "admission_location", "insurance", "language", "marital_status", "race")
    ),
    "transfers": EventView("Transfers", (("Care Unit", _unit_or_event),), "values"),
    "services": EventView("Services", (("Service", "curr_service"),), "values"),
    "labevents": EventView(
        "Labotary Test Events",
        (
            _ITEM,
            ("Value", "value"),
            ("Unit", "valueuom"),
            ("Range (lower-upper)", _lab_range),
            ("Flag", _lab_flag),
            ("Comments", "comments"),
        ),
    ),
    "microbiologyevents": EventView(
        "Microbiology Test Events",
        _titled("spec_type_desc", "test_name", "org_name", "ab_name", "interpretation", "comments"),
    ),
    "prescriptions": EventView("Prescriptions", _titled("drug", "prod_strength", "dose_val_rx", "dose_unit_rx")),
    "pharmacy": EventView("Pharmacy", _titled("medication", "route", "frequency")),
    "emar": EventView("Electronic Medicine Administration Record", _titled("medication", "event_txt")),
    "poe": EventView(
        "Provider Order Entry", (("Order Type", "order_type"), ("Order Subtype", "order_subtype")), "pairs"
    ),
    "omr": EventView(
        "Online Medical Record", (("Result Name", "result_name"), ("Result Value", "result_value")), "pairs"
    ),
    "procedures_icd": EventView(
        "Procedures on International Classification of Diseases", (("Procedure", "long_title"),), "values"
    ),
    "diagnoses_icd": EventView(
        "Diagnoses on International Classification of Diseases", (("Diagnosis", "long_title"),), "values"
    ),
    "hcpcsevents": EventView("Hcpcs Events", (("Description", "short_description"),), "values"),
    "drgcodes": EventView("Drgcodes", _titled("drg_type", "drg_code", "description")),
    "radiology": EventView("Radiology Examinations", _titled("exam_name", "text")),
    "discharge": EventView("Discharge", _titled("text")),
    "edstays": EventView("EDstays", _titled("arrival_transport")),
    "triage": EventView("Triage", _titled(*_VITALS, "pain", "acuity", "chiefcomplaint")),
    "vitalsign": EventView("Vitalsign", _titled(*_VITALS, "rhythm", "pain")),
    "medrecon": EventView("Medrecon", _titled("name", "etcdescription")),
    "pyxis": EventView("Pyxis", _titled("name")),
    "diagnosis": EventView(
        "ED Diagnoses on International Classification of Diseases", (("Diagnosis", "icd_title"),), "values"
    ),
    "icustays": EventView("ICUstays", _titled("first_careunit")),
    "chartevents": EventView("Chart Events", _MEASURE),
    "ingredientevents": EventView("Ingredient Events", _AMOUNTS),
    "inputevents": EventView("Input Events", _AMOUNTS),
    "datetimeevents": EventView("Datetime Events", (_ITEM, ("Value", "value"))),
    "procedureevents": EventView("Procedure Events", _MEASURE),
    "outputevents": EventView("Output Events", _MEASURE),
}


def event_title(event_type: str) -> str:
    """The section title of an event type (also the answer of the next_event task)."""
    view = VIEWS.get(event_type)
    return view.title if view else event_type.replace("_", " ").title()


def _view(event: Event) -> EventView:
    view = VIEWS.get(event.event_type)
    if view is not None:
        return view
    keys = sorted({k for r in event.records for k in r})
    return EventView(event_title(event.event_type), _titled(*keys))


def _cell(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("|", "\\|")


def render_event(event: Event) -> str:
    view = _view(event)
    lines = [f"## {view.title} [{format_time(event.time)}]"]
    rows = [[format_value(f(r, event) if callable(f) else r.get(f)) for _, f in view.columns] for r in event.records]
    if view.layout == "values":
        lines += [f"- {row[0]}" for row in rows]
    elif view.layout == "pairs":
        lines += [f"- {row[0]}: {row[1]}" for row in rows]
    elif len(rows) == 1:
        lines += [f"- {key}: {value}" for (key, _), value in zip(view.columns, rows[0], strict=True)]
    else:
        lines.append("| " + " | ".join(key for key, _ in view.columns) + " |")
        lines.append("| " + " | ".join("------" for _ in view.columns) + " |")
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_events(events: Iterable[Event]) -> str:
    """Markdown of a sequence of events, sections joined by a blank line."""
    return "\n\n".join(render_event(e) for e in events)
