"""The thinking graph of a sample: paths from its target concepts to concepts in its history.

Relations come from pluggable sources, merged into one undirected, labelled graph per task:
- ``cooccurrence``: the task's kept (target, history) pairs (lift above threshold, training split only);
- ``hierarchy``: code hierarchies from the dataset's dictionaries and the task groupings (ICD title -> ICD
  category and CCS category, drug -> ATC class, lab / chart item -> its category);
- ``umls``: relations among CUIs read from the user's UMLS ``MRREL.RRF`` (with the QuickUMLS extractor).
A breadth-first search bounded by ``max_hops`` finds, for each target, the shortest paths to history
concepts present in the sample (at most ``max_paths`` per target: shortest first, then by lift).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from ehrr1.reasoning.concepts import concept_id, normalise
from ehrr1.tasks.groupings import atc_class, group
from ehrr1.tasks.registry import Grouping

DRUG_TYPES = ("prescriptions", "pharmacy", "emar", "medrecon", "pyxis")
ITEM_TYPES = ("chartevents", "ingredientevents", "inputevents", "datetimeevents", "procedureevents", "outputevents")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    relation: str  # read source -> target, e.g. "is a", "co-occurs with"
    weight: float = 0.0  # lift for co-occurrence


@dataclass
class RelationGraph:
    """Adjacency lists (both directions: a relation read backwards gets its inverse name)."""

    adjacency: dict[str, list[tuple[str, str, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, edge: Edge, inverse: str) -> None:
        self.adjacency[edge.source].append((edge.target, edge.relation, edge.weight))
        self.adjacency[edge.target].append((edge.source, inverse, edge.weight))

    def over(self, base: RelationGraph) -> RelationGraph:
        """A view with this graph's edges on top of ``base``'s, without copying ``base``."""
        return RelationGraph(_Layers(self.adjacency, base.adjacency))  # type: ignore[arg-type]

    def merged(self, other: RelationGraph) -> RelationGraph:
        out = RelationGraph()
        for graph in (self, other):
            for node, edges in graph.adjacency.items():
                out.adjacency[node].extend(edges)
        return out

    def paths(self, start: str, goals: set[str], max_hops: int, max_paths: int) -> list[list[tuple[str, str, float]]]:
        """Shortest paths (as [(node, relation to it, weight)], starting with (start, '', 0)) to goals."""
        found = []
        if start in goals:
            found.append([(start, "", 0.0)])
        parent: dict[str, tuple[str, str, float] | None] = {start: None}
        frontier = deque([(start, 0)])
        while frontier:
            node, hops = frontier.popleft()
            if hops == max_hops:
                continue
            for nxt, relation, weight in sorted(self.adjacency.get(node, ()), key=lambda e: (-e[2], e[0])):
                if nxt in parent:
                    continue
                parent[nxt] = (node, relation, weight)
                if nxt in goals:
                    found.append(_trace(parent, nxt))
                frontier.append((nxt, hops + 1))
        found.sort(key=lambda p: (len(p), -max(w for _, _, w in p)))
        return found[:max_paths]


class _Layers:
    """The adjacency of stacked graphs: a node's edges in every layer (read-only, as ``paths`` reads it)."""

    def __init__(self, *layers: dict[str, list[tuple[str, str, float]]]):
        self.layers = layers

    def get(self, node: str, default=()):
        edges = [e for layer in self.layers for e in layer.get(node, ())]
        return edges or default


def sample_cooccurrence(graph: RelationGraph, targets: list[str], history: set[str], top_k: int) -> RelationGraph:
    """The reference's evidence of one sample: per target, its ``top_k`` co-occurring concepts by lift among
    the sample's own history (evidence_generation.py), as a graph of their edges."""
    own = RelationGraph()
    for target in dict.fromkeys(targets):
        neighbours = {n: w for n, relation, w in graph.adjacency.get(target, ()) if n in history}
        for n in sorted(neighbours, key=lambda n: (-neighbours[n], n))[:top_k]:
            own.add(Edge(target, n, "co-occurs with", neighbours[n]), "co-occurs with")
    return own


def _trace(parent: dict[str, tuple[str, str, float] | None], node: str) -> list[tuple[str, str, float]]:
    path = []
    while (step := parent[node]) is not None:
        previous, relation, weight = step
        path.append((node, relation, weight))
        node = previous
    path.append((node, "", 0.0))
    return path[::-1]


def cooccurrence_graphs(pairs: list[dict[str, Any]]) -> dict[str, RelationGraph]:
    """One graph per task from its kept pairs (rows of the co-occurrence table)."""
    graphs: dict[str, RelationGraph] = defaultdict(RelationGraph)
    for p in pairs:
        edge = Edge(p["target"], p["history"], "co-occurs with", round(float(p["lift"]), 2))
        graphs[p["task"]].add(edge, "co-occurs with")
    return graphs


class Dictionaries:
    """Name -> code lookups from the dataset's dictionary tables (whichever of them exist)."""

    def __init__(self, reader: Any):
        con = duckdb.connect()
        reader.register(con, validate=False)
        self.diagnoses = self._names(con, reader, "d_icd_diagnoses", "long_title", "icd_code, icd_version")
        self.procedures = self._names(con, reader, "d_icd_procedures", "long_title", "icd_code, icd_version")
        self.lab_categories = self._names(con, reader, "d_labitems", "label", "coalesce(fluid || ' ', '') || category")
        self.item_categories = self._names(con, reader, "d_items", "label", "category")

    @staticmethod
    def _names(con, reader, table: str, name: str, value: str) -> dict[str, list[Any]]:
        if not reader.has(table):
            return {}
        out: dict[str, list[Any]] = defaultdict(list)
        for row in con.execute(f"SELECT {name}, {value} FROM {table} WHERE {name} IS NOT NULL").fetchall():
            out[normalise(row[0])].append(row[1] if len(row) == 2 else row[1:])
        return out


def hierarchy_edges(concepts: Iterable[str], dictionaries: Dictionaries | None) -> list[Edge]:
    """'is a' edges from concepts to their classes (ICD category, CCS, ATC, item category)."""
    edges = []
    for concept in concepts:
        namespace, _, name = concept.partition(":")
        for parent in _parents(namespace, name, dictionaries):
            if parent and parent != concept:
                edges.append(Edge(concept, parent, "is a"))
    return edges


def _parents(namespace: str, name: str, d: Dictionaries | None) -> list[str | None]:
    if namespace in DRUG_TYPES:
        return [concept_id(Grouping.atc.value, atc_class(name) or "")]
    if d is None:
        return []
    if namespace in ("diagnoses_icd", "diagnosis"):
        out = []
        for code, version in d.diagnoses.get(name, [])[:3]:
            out.append(concept_id("icd_category", f"{code[:3]} (ICD-{version})"))
            if int(version) == 10:
                out.append(concept_id(Grouping.ccs_diagnosis.value, group(Grouping.ccs_diagnosis, code) or ""))
        return out
    if namespace == "procedures_icd":
        return [
            concept_id(Grouping.ccs_procedure.value, group(Grouping.ccs_procedure, code) or "")
            for code, version in d.procedures.get(name, [])[:3]
            if int(version) == 10
        ]
    if namespace == "labevents":
        return [concept_id("lab_category", c) for c in d.lab_categories.get(name, [])[:1] if c]
    if namespace in ITEM_TYPES:
        return [concept_id("item_category", c) for c in d.item_categories.get(name, [])[:1] if c]
    return []


def hierarchy_graph(edges: Iterable[Edge]) -> RelationGraph:
    graph = RelationGraph()
    for edge in edges:
        graph.add(edge, "includes")
    return graph


def umls_graph(mrrel: str | Path, concepts: Iterable[str], relations: list[str]) -> RelationGraph:
    """Relations among the given ``umls:<CUI>`` concepts from MRREL.RRF (REL in ``relations``, e.g. RO, RB)."""
    cuis = sorted({c.split(":", 1)[1] for c in concepts if c.startswith("umls:")})
    graph = RelationGraph()
    if not cuis:
        return graph
    con = duckdb.connect()
    rows = con.execute(
        "SELECT DISTINCT column00 AS cui1, column03 AS rel, column04 AS cui2, column07 AS rela "
        "FROM read_csv(?, delim='|', header=false, all_varchar=true, quote='') "
        "WHERE column00 IN (SELECT unnest(?)) AND column04 IN (SELECT unnest(?)) AND column03 IN (SELECT unnest(?))",
        [str(mrrel), cuis, cuis, relations],
    ).fetchall()
    for cui1, rel, cui2, rela in rows:
        # MRREL reads "CUI2 has relation REL to CUI1": e.g. RB = CUI2 is broader than CUI1
        name = (rela or rel).replace("_", " ")
        graph.add(Edge(f"umls:{cui2}", f"umls:{cui1}", name), f"inverse of {name}")
    return graph


def sample_graph(
    graph: RelationGraph, targets: list[str], history: set[str], max_hops: int, max_paths: int
) -> list[list[tuple[str, str, float]]]:
    """The thinking graph of one sample: the paths from each target to its history concepts."""
    out = []
    for target in targets:
        out += graph.paths(target, history, max_hops, max_paths)
    return out
