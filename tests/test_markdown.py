"""The EHR markdown format is byte-stable: every event type is pinned by a golden file."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from ehrr1.data.events import EVENT_TYPES
from ehrr1.data.markdown import VIEWS, format_value, render_event, render_events
from ehrr1.data.timeline import Event

GOLDEN = Path(__file__).parent / "golden"


def golden_events() -> dict[str, Event]:
    raw = json.loads((GOLDEN / "events.json").read_text())
    return {
        name: Event(name, datetime.fromisoformat(e["time"]), e["hadm_id"], e["stay_id"], tuple(e["records"]))
        for name, e in raw.items()
    }


def test_every_event_type_has_a_view_and_a_golden_file():
    assert set(EVENT_TYPES) == set(VIEWS) == set(golden_events())
    assert {p.stem for p in GOLDEN.glob("*.md")} == set(VIEWS)


@pytest.mark.parametrize("event_type", sorted(VIEWS))
def test_golden_markdown(event_type):
    event = golden_events()[event_type]
    expected = (GOLDEN / f"{event_type}.md").read_bytes()
    assert render_event(event).encode("utf-8") == expected


def test_missing_values_render_empty_never_nan():
    assert [format_value(v) for v in (None, float("nan"), "nan", "NaN", float("inf"))] == [""] * 5
    assert format_value(7.0) == "7" and format_value(0.06) == "0.06" and format_value(-2.5) == "-2.5"
    assert format_value(datetime(2180, 1, 2, 3, 4, 5)) == "2180-01-02 03:04:05"
    text = render_events(golden_events().values())
    assert "nan" not in text.lower().replace("nacl", "").replace("pneumonia", "").replace("finance", "")


def test_hidden_fields_never_render():
    """Fields known only later (discharge, ED disposition, ICU outcome, death) are not in the input."""
    events = golden_events()
    for name, hidden in (
        ("admissions", ("HOME", "2180-05-09")),
        ("edstays", ("ADMITTED", "2180-05-07")),
        ("icustays", ("1.4", "2180-05-08")),
        ("patients", ("2185",)),
        ("prescriptions", ("2180-05-09", "IV")),
    ):
        text = render_event(events[name])
        assert not any(h in text for h in hidden), name


def test_sections_are_joined_by_a_blank_line_in_timeline_order():
    events = golden_events()
    text = render_events([events["patients"], events["admissions"]])
    assert text == render_event(events["patients"]) + "\n\n" + render_event(events["admissions"])


def test_unknown_event_type_still_renders_deterministically():
    event = Event("my_custom_table", datetime(2180, 1, 1), records=({"b": 1, "a": "x"},))
    assert render_event(event) == "## My Custom Table [2180-01-01 00:00:00]\n- A: x\n- B: 1"
