"""Medical concepts of a sample: what its EHR shows (history) and what its answer names (targets).

Concepts are ids ``<namespace>:<normalised name>``. The licence-free default reads them from the EHR markdown
the model sees (one parser of the one renderer's output): per event type, the field that names the thing
(lab item, drug, diagnosis title, ...), so a concept is exactly what the dataset's own dictionaries call
it. Targets of decision tasks live in the namespace of the task's event type (or of its CCS / ATC grouping);
a risk task's target is its outcome (``outcome:<task>=yes|no``). With a UMLS installation, QuickUMLS maps
the same names to CUIs instead (``umls:<CUI>``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ehrr1.data.markdown import REFERENCE_KEYS, REFERENCE_TITLES, VIEWS
from ehrr1.errors import ConfigError
from ehrr1.tasks.registry import TaskSpec

HEADER = re.compile(r"^## (.+?)(?: \[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|None)\])?$")
CELL_SPLIT = re.compile(r"(?<!\\)\|")

# The field naming the concept, per event type, in the clean style (values / pairs layouts: their first
# field) and in the reference style. Event types without one (demographics, vital signs) give no concepts.
_ITEM = ("Item Name", "Item_Name")
CONCEPT_FIELDS = {
    "admissions": ("Admission_Type",),
    "labevents": _ITEM,
    "microbiologyevents": ("Test_Name",),
    "prescriptions": ("Drug",),
    "pharmacy": ("Medication",),
    "emar": ("Medication",),
    "radiology": ("Exam_Name",),
    "triage": ("Chiefcomplaint",),
    "medrecon": ("Name",),
    "pyxis": ("Name",),
    "icustays": ("First_Careunit",),
    "chartevents": _ITEM,
    "ingredientevents": _ITEM,
    "inputevents": _ITEM,
    "datetimeevents": _ITEM,
    "procedureevents": _ITEM,
    "outputevents": _ITEM,
    "transfers": ("Careunit",),
    "services": ("Curr_Service",),
    "poe": ("Order_Type",),
    "omr": ("Result_Name",),
    "procedures_icd": ("Procedures",),
    "diagnoses_icd": ("Diagnoses",),
    "diagnosis": ("Icd_Title",),
}
# Free text the reference runs QuickUMLS over (concept_extraction.py): notes and the admission's information.
FREE_TEXT_FIELDS = {"radiology": ("Text",), "discharge": ("Text",), "admissions": ("Admission_Info",)}
LIST_LAYOUTS = {name for name, view in VIEWS.items() if view.layout in ("values", "pairs")}
TITLES = {**{title: name for name, title in REFERENCE_TITLES.items()}, **{v.title: n for n, v in VIEWS.items()}}
_REFERENCE_FIRST_KEY = {name: keys[0].title() for name, keys in REFERENCE_KEYS.items() if keys}


@dataclass(frozen=True)
class Mention:
    concept: str  # <namespace>:<normalised name>
    label: str  # the name as the EHR writes it
    section: str  # the event type it was seen in


def normalise(name: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: 'Creatinine, Serum ' -> 'creatinine, serum'."""
    return re.sub(r"\s+", " ", name).strip(" .;:,-").lower()


def concept_id(namespace: str, name: str) -> str | None:
    text = normalise(name)
    return f"{namespace}:{text}" if text else None


def sections(markdown: str) -> Iterator[tuple[str, list[dict[str, str]] | list[str]]]:
    """(event type, records) per section of EHR markdown; list layouts give their lines' first field."""
    event_type: str | None = None
    lines: list[str] = []
    for line in [*markdown.split("\n"), ""]:
        header = HEADER.match(line)
        if header or (not line.strip() and event_type):
            if event_type:
                yield event_type, _records(event_type, lines)
            event_type, lines = (TITLES.get(header.group(1), header.group(1)) if header else None), []
        elif event_type:
            lines.append(line)


def _reference_layout(event_type: str, lines: list[str]) -> bool:
    first = next((line for line in lines if line.startswith(("- ", "| "))), "")
    key = _REFERENCE_FIRST_KEY.get(event_type)
    return key is not None and (first.startswith(f"- {key}: ") or first.startswith(f"| {key} |"))


def _records(event_type: str, lines: list[str]) -> list[dict[str, str]] | list[str]:
    if event_type in LIST_LAYOUTS and not _reference_layout(event_type, lines):
        items = [line[2:] for line in lines if line.startswith("- ")]
        if VIEWS[event_type].layout == "pairs":
            items = [item.split(": ", 1)[0] for item in items]
        return items
    table = [line for line in lines if line.startswith("| ")]
    if table:
        cells = [[c.strip().replace("\\|", "|") for c in CELL_SPLIT.split(row)[1:-1]] for row in table]
        header, rows = cells[0], cells[2:]
        return [dict(zip(header, row, strict=False)) for row in rows]
    record = dict(line[2:].split(": ", 1) for line in lines if line.startswith("- ") and ": " in line)
    return [record] if record else []


class Extractor(Protocol):
    name: str

    def history(self, markdown: str) -> list[Mention]: ...

    def targets(self, task: TaskSpec, target: list[str]) -> list[Mention]: ...


class DictionaryExtractor:
    """Concepts named by the dataset's own dictionaries (item labels, drug names, ICD titles); no licence."""

    name = "dictionary"

    def names(self, markdown: str) -> Iterator[tuple[str, str]]:
        """(event type, name) of every concept-bearing field in the markdown."""
        for event_type, records in sections(markdown):
            for record in records:
                if isinstance(record, str):
                    yield event_type, record
                    continue
                name = next((record[f] for f in CONCEPT_FIELDS.get(event_type, ()) if record.get(f)), None)
                if name and name not in ("nan", "None"):
                    for item in _listed(name):
                        yield event_type, item

    def free_texts(self, markdown: str) -> Iterator[tuple[str, str]]:
        """(event type, text) of every free-text field in the markdown (see ``FREE_TEXT_FIELDS``)."""
        for event_type, records in sections(markdown):
            for record in records:
                if isinstance(record, dict):
                    for field in FREE_TEXT_FIELDS.get(event_type, ()):
                        if record.get(field, "") not in ("", "nan", "None"):
                            yield event_type, record[field]

    def history(self, markdown: str) -> list[Mention]:
        seen: dict[str, Mention] = {}
        for event_type, name in self.names(markdown):
            concept = self.concept(event_type, name)
            if concept and concept not in seen:
                seen[concept] = Mention(concept, name.strip(), event_type)
        return list(seen.values())

    def concept(self, namespace: str, name: str) -> str | None:
        return concept_id(namespace, name)

    def targets(self, task: TaskSpec, target: list[str]) -> list[Mention]:
        if task.is_risk:
            label = f"{task.name.replace('_', ' ')}: {target[0]}"
            return [Mention(f"outcome:{task.name}={target[0]}", label, "outcome")]
        namespace = target_namespace(task)
        out: dict[str, Mention] = {}
        for name in target:
            concept = self.concept(namespace, name)
            if concept:
                out.setdefault(concept, Mention(concept, name.strip(), namespace))
        return list(out.values())


def _listed(name: str) -> list[str]:
    """A reference-style list of names (``['CHEST (PA AND LAT)']``) as its items; other names as they are."""
    if name.startswith("[") and name.endswith("]"):
        try:
            items = ast.literal_eval(name)
        except (SyntaxError, ValueError):
            return [name]
        return [str(i) for i in items] if isinstance(items, list) else [name]
    return [name]


def target_namespace(task: TaskSpec) -> str:
    if task.grouping is not None:
        return task.grouping.value
    return "event" if task.target == "event_type" else task.anchor


class QuickUMLSExtractor(DictionaryExtractor):
    """UMLS CUIs of the same names through QuickUMLS (``pip install quickumls`` and a QuickUMLS index built
    from your UMLS release: ``synthesis.extractor.quickumls_path``). Names it cannot match are left out. With
    ``free_text`` the terms QuickUMLS finds in notes and admission information are history concepts too, as
    in the reference (which keeps the terms of the first match only; we keep every match's best CUI)."""

    name = "quickumls"

    def __init__(self, quickumls_path: str, threshold: float = 0.9, free_text: bool = True):
        try:
            from quickumls import QuickUMLS
        except ImportError as exc:
            raise ImportError(
                f"synthesis.extractor.name=quickumls needs QuickUMLS ({exc}): pip install quickumls, then build "
                "its index from your UMLS release and set synthesis.extractor.quickumls_path"
            ) from exc
        self.matcher = QuickUMLS(quickumls_path, threshold=threshold, similarity_name="jaccard")
        self.free_text = free_text
        self.cache: dict[str, str | None] = {}

    def history(self, markdown: str) -> list[Mention]:
        mentions = super().history(markdown)
        if not self.free_text:
            return mentions
        seen = {m.concept for m in mentions}
        for event_type, text in self.free_texts(markdown):
            for group in self.matcher.match(text, best_match=True, ignore_syntax=False):
                best = max(group, key=lambda m: m["similarity"], default=None)
                concept = f"umls:{best['cui']}" if best else None
                if best and concept and concept not in seen:
                    seen.add(concept)
                    mentions.append(Mention(concept, best["term"], event_type))
        return mentions

    def concept(self, namespace: str, name: str) -> str | None:
        key = normalise(name)
        if key not in self.cache:
            matches = self.matcher.match(key, best_match=True, ignore_syntax=True)
            best = max((m for group in matches for m in group), key=lambda m: m["similarity"], default=None)
            self.cache[key] = f"umls:{best['cui']}" if best else None
        return self.cache[key]


def build_extractor(settings: Any) -> Extractor:
    if settings.name == "dictionary":
        return DictionaryExtractor()
    if settings.name == "quickumls":
        if not settings.quickumls_path:
            raise ConfigError("synthesis.extractor.name=quickumls: set synthesis.extractor.quickumls_path")
        return QuickUMLSExtractor(settings.quickumls_path, settings.threshold, settings.free_text)
    raise ConfigError(f"synthesis.extractor.name={settings.name}: choose from dictionary, quickumls")
