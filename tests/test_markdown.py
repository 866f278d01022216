"""The EHR markdown is byte-stable in both styles; the reference style is the reference's own text.

``golden/reference/*.md`` are the EHR-R1 reference's renderings of the events in ``golden/events.json``,
written by its own code through the reforacle tool (experiments/reference/make_fixtures.py), so these
tests pin ehrr1 to the text the released models were trained on.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from ehrr1.data.events import EVENT_TYPES
from ehrr1.data.markdown import (
    NOT_RENDERED,
    REFERENCE_KEYS,
    VIEWS,
    MarkdownStyle,
    format_value,
    render_event,
    render_events,
)
from ehrr1.data.timeline import Event

GOLDEN = Path(__file__).parent / "golden"


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def golden_events() -> dict[str, Event]:
    raw = json.loads((GOLDEN / "events.json").read_text())
    return {
        name: Event(
            e["event_type"], _time(e["time"]), e["hadm_id"], e["stay_id"], tuple(e["records"]), _time(e["endtime"])
        )
        for name, e in raw.items()
    }


def test_every_event_type_has_views_and_golden_files():
    events = golden_events()
    assert {e.event_type for e in events.values()} == set(EVENT_TYPES)
    assert set(REFERENCE_KEYS) | set(NOT_RENDERED) == set(EVENT_TYPES)
    assert set(VIEWS) | set(NOT_RENDERED) == set(EVENT_TYPES)
    assert {p.stem for p in (GOLDEN / "clean").glob("*.md")} == set(events)
    oracle = {p.stem for p in (GOLDEN / "reference").glob("*.md")}
    assert oracle == {n for n, e in events.items() if e.event_type not in ("pharmacy", *NOT_RENDERED)}
    assert any(len(e.records) > 1 for e in events.values()) and any(len(e.records) == 1 for e in events.values())


@pytest.mark.parametrize("name", sorted(p.stem for p in (GOLDEN / "reference").glob("*.md")))
def test_reference_style_is_the_references_text(name):
    event = golden_events()[name]
    assert render_event(event).encode("utf-8") == (GOLDEN / "reference" / f"{name}.md").read_bytes()


@pytest.mark.parametrize("name", sorted(p.stem for p in (GOLDEN / "clean").glob("*.md")))
def test_clean_style_golden(name):
    event = golden_events()[name]
    expected = (GOLDEN / "clean" / f"{name}.md").read_bytes()
    assert render_event(event, MarkdownStyle.clean).encode("utf-8") == expected


def test_reference_details_titles_keys_and_missing_values():
    events = golden_events()
    assert render_event(events["patients"]).startswith("## Patient Demographics [None]\n- Anchor_Age: ")
    assert render_event(events["icustays"]).endswith("]\n")  # title only, as the reference writes it
    assert "- Admission_Info: None" in render_event(events["admissions"])  # a key the rows never have
    assert "| Item_Name | Valuenum |" in render_event(events["labevents-rows"])
    assert "Atc Type" in render_event(events["prescriptions-rows"]) and "Ccs Type" in render_event(events["diagnosis"])
    pharmacy = render_event(events["pharmacy"])
    assert (
        pharmacy
        == "## Pharmacy [2180-05-07 10:00:00]\n- Medication: Heparin\n- Proc_Type: Unit Dose\n- Status: Discontinued"
    )


def test_drg_and_hcpcs_never_render_in_either_style():
    events = golden_events()
    for name in NOT_RENDERED:
        assert render_event(events[name]) == "" and render_event(events[name], MarkdownStyle.clean) == ""
    reference = render_events([events["patients"], events["drgcodes"], events["admissions"]])
    assert "SEPTICEMIA" not in reference and "\n\n\n\n## Admissions" in reference  # the reference's blank section
    clean = render_events([events["patients"], events["drgcodes"], events["admissions"]], MarkdownStyle.clean)
    assert "SEPTICEMIA" not in clean and "\n\n\n" not in clean


def test_clean_values_are_empty_when_missing_and_without_float_noise():
    assert [format_value(v) for v in (None, float("nan"), "nan", "NaN", float("inf"))] == [""] * 5
    assert format_value("7.0") == "7" and format_value(7.0) == "7" and format_value("0.06") == "0.06"
    assert format_value(["A", "B"]) == "A, B"
    assert format_value(datetime(2180, 1, 2, 3, 4, 5)) == "2180-01-02 03:04:05"
    text = render_events(golden_events().values(), MarkdownStyle.clean)
    assert "| nan |" not in text and ": nan\n" not in text


def test_clean_style_hides_fields_known_only_later():
    events = golden_events()
    for name, hidden in (("admissions", ("Dischtime", "HOME")), ("icustays", ("Los",)), ("patients", ("Dod",))):
        assert not any(h in render_event(events[name], MarkdownStyle.clean) for h in hidden), name


def test_unknown_event_type_still_renders_deterministically():
    event = Event("my_custom_table", datetime(2180, 1, 1), records=({"b": 1, "a": "x"},))
    assert render_event(event, MarkdownStyle.clean) == "## My Custom Table [2180-01-01 00:00:00]\n- A: x\n- B: 1"
    assert render_event(event) == ""  # the reference renders only its own tables
