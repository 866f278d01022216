"""The EHR markdown format: the one renderer from timeline events to model input text, in two styles.

``reference`` (the default) is byte for byte what the EHR-R1 reference renders
(``mimiciv_dataset/input_format.py``: ``input_process``), i.e. the text the released EHR-R1 models were
trained on: ``## <Event Name> [<start time>]``, then for one row ``- <Key.title()>: <value>`` per info key of
the table, for several rows a table; values as the reference's text (``110.0``, ``nan``, ``None``), no
escaping; hcpcsevents and drgcodes render nothing, ICU stays their title only.

``clean`` is ehrr1's own: missing values empty, numbers without a trailing ``.0``, clinically named
columns, escaped table cells, no DRG / HCPCS sections.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ehrr1.config import MarkdownStyle
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
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, datetime):
        return format_time(value)
    text = str(value)
    if text.strip().lower() == "nan":
        return ""
    return text[:-2] if text.endswith(".0") and text[:-2].lstrip("-").isdigit() else text


def format_time(value: datetime) -> str:
    """``%Y-%m-%d %H:%M:%S`` (``isoformat``, which is faster, where it writes the same)."""
    if value.tzinfo is None and value.year >= 1000:
        return value.isoformat(" ", "seconds")
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _age(record: dict[str, Any], event: Event) -> Any:
    try:
        age, year = int(float(record["anchor_age"])), int(float(record["anchor_year"]))
    except (KeyError, TypeError, ValueError):
        return None
    return age if event.time is None else age + event.time.year - year


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


_ITEM = ("Item Name", "item_name")
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
        "Procedures on International Classification of Diseases", (("Procedure", "procedures"),), "values"
    ),
    "diagnoses_icd": EventView(
        "Diagnoses on International Classification of Diseases", (("Diagnosis", "diagnoses"),), "values"
    ),
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


# The reference's section names (input_format.py EVENT_NAME) and info keys per table (event_info).
REFERENCE_TITLES = {
    "patients": "Patient Demographics", "omr": "Online Medical Record", "pharmacy": "Pharmacy",
    "poe": "Provider Order Entry", "procedures_icd": "Procedures on International Classification of Diseases",
    "prescriptions": "Prescriptions", "services": "Services", "labevents": "Labotary Test Events",
    "microbiologyevents": "Microbiology Test Events", "admissions": "Admissions", "transfers": "Transfers",
    "emar": "Electronic Medicine Administration Record", "hcpcsevents": "Hcpcs Events",
    "diagnoses_icd": "Diagnoses on International Classification of Diseases", "drgcodes": "Drgcodes",
    "radiology": "Radiology Examinations", "discharge": "Discharge", "edstays": "EDstays", "triage": "Triage",
    "medrecon": "Medrecon", "pyxis": "Pyxis", "vitalsign": "Vitalsign",
    "diagnosis": "ED Diagnoses on International Classification of Diseases", "icustays": "ICUstays",
    "chartevents": "Chart Events", "ingredientevents": "Ingredient Events", "datetimeevents": "Datetime Events",
    "procedureevents": "Procedure Events", "inputevents": "Input Events", "outputevents": "Output Events",
}  # fmt: skip
_AMOUNT_KEYS = ("item_name", "amount", "amountuom", "rate", "rateuom")
_VITAL_KEYS = ("temperature", "heartrate", "resprate", "o2sat", "sbp", "dbp", "pain")
REFERENCE_KEYS: dict[str, tuple[str, ...]] = {
    "patients": ("anchor_age", "gender"),
    "omr": ("result_name", "result_value"),
    "pharmacy": ("medication", "proc_type", "status"),
    "prescriptions": ("drug", "ATC Type", "prod_strength", "dose_val_rx", "dose_unit_rx"),
    "poe": ("order_type", "order_subtype"),
    "procedures_icd": ("procedures", "CCS Type"),
    "services": ("curr_service",),
    "labevents": ("item_name", "valuenum", "valueuom", "ref_range_lower", "ref_range_upper", "flag", "comments"),
    "microbiologyevents": ("test_name", "dilution_text", "interpretation", "comments", "ab_name"),
    "admissions": ("admission_type", "admission_location", "admission_info"),
    "transfers": ("eventtype", "careunit"),
    "emar": ("medication", "event_txt"),
    "diagnoses_icd": ("diagnoses", "CCS Type"),
    "radiology": ("note_type", "exam_name", "text"),
    "discharge": ("note_type", "text"),
    "edstays": ("gender", "race"),
    "triage": (*_VITAL_KEYS, "acuity", "chiefcomplaint"),
    "medrecon": ("name", "ATC Type"),
    "pyxis": ("name",),
    "vitalsign": (*_VITAL_KEYS, "rhythm"),
    "diagnosis": ("icd_title", "CCS Type"),
    "icustays": (),
    "chartevents": ("item_name", "valuenum", "valueuom", "warning"),
    "ingredientevents": _AMOUNT_KEYS,
    "datetimeevents": ("item_name",),
    "procedureevents": ("item_name", "value", "valueuom", "location", "locationcategory"),
    "inputevents": _AMOUNT_KEYS,
    "outputevents": ("item_name", "value", "valueuom"),
}
NOT_RENDERED = ("hcpcsevents", "drgcodes")  # both styles: these never enter a model input
# per event type: its keys with their titles, and the table head of several records (built once)
_REFERENCE_TITLED = {t: tuple(zip(keys, (k.title() for k in keys), strict=True)) for t, keys in REFERENCE_KEYS.items()}
_REFERENCE_HEADS = {
    t: [f"| {' | '.join(title for _, title in titled)} |", f"| {' | '.join(['------'] * len(titled))} |"]
    for t, titled in _REFERENCE_TITLED.items()
}


def render_reference(event: Event) -> str:
    """The reference's ``input_process`` of one event ("" for tables it does not render)."""
    keys = REFERENCE_KEYS.get(event.event_type)
    if keys is None:
        return ""
    start = "None" if event.time is None else format_time(event.time)
    title = f"## {REFERENCE_TITLES[event.event_type]} [{start}]"
    if len(event.records) == 1:
        record = event.records[0]
        lines = [f"- {titled}: {record.get(key)}" for key, titled in _REFERENCE_TITLED[event.event_type]]
    else:
        lines = [*_REFERENCE_HEADS[event.event_type]]
        lines += [f"| {' | '.join(map(str, map(r.get, keys)))} |" for r in event.records]
    return title + "\n" + "\n".join(lines)


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


def render_clean(event: Event) -> str:
    """ehrr1's own rendering of one event ("" for DRG and HCPCS codes)."""
    if event.event_type in NOT_RENDERED:
        return ""
    view = _view(event)
    lines = [f"## {view.title}" + ("" if event.time is None else f" [{format_time(event.time)}]")]
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


def render_event(event: Event, style: MarkdownStyle = MarkdownStyle.reference) -> str:
    return render_reference(event) if MarkdownStyle(style) is MarkdownStyle.reference else render_clean(event)


def join_sections(sections: Iterable[str], style: MarkdownStyle = MarkdownStyle.reference) -> str:
    """Sections joined by a blank line; the reference keeps empty sections (its blank lines), clean drops them."""
    if MarkdownStyle(style) is MarkdownStyle.clean:
        sections = [s for s in sections if s]
    return "\n\n".join(sections)


def render_events(events: Iterable[Event], style: MarkdownStyle = MarkdownStyle.reference) -> str:
    """Markdown of a sequence of events."""
    return join_sections((render_event(e, style) for e in events), style)
