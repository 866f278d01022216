"""The package's imports point one way: no circle, and no module importing a layer above its own.

Every import counts, those inside functions too (they hide a dependency, they do not remove it).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ehrr1"

# Lowest first. A module belongs to the layer of its longest listed prefix; it may import its own layer's
# modules (without a circle) and those of the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("ehrr1.errors", "ehrr1.utils", "ehrr1.resumable", "ehrr1.think", "ehrr1.run_config"),  # foundations
    ("ehrr1.config",),  # the schema: a leaf over the foundations
    ("ehrr1.tracking",),  # experiment loggers' settings
    ("ehrr1.data",),  # raw tables -> events -> timelines -> markdown
    ("ehrr1.tasks",),  # task registry, sample index, selection, prompts, export
    ("ehrr1.models", "ehrr1.backends"),  # tokenizers, models, generation backends
    ("ehrr1.reasoning", "ehrr1.training", "ehrr1.evaluation"),  # the components of the three pipelines
    ("ehrr1.artefacts",),  # data artefacts built on demand (timelines, index, instructions, reasoning)
    # what entry points call
    ("ehrr1.evaluation.evaluate", "ehrr1.training.curriculum", "ehrr1.training.run_folder", "ehrr1.inference"),
    ("ehrr1",),  # the package's public names
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of the package's own modules (``from a import b`` counts ``a.b`` if a module)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer(name: str) -> int:
    matches = [
        (len(prefix), k)
        for k, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".")
    ]
    assert matches, f"{name} is in no layer: add it to LAYERS"
    return max(matches)[1]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_imports_inside_functions():
    graph = imports(module_names())
    assert "ehrr1.evaluation.evaluate" in graph["ehrr1.training.curriculum"]  # imported inside train()
    assert "ehrr1.models.tokenizer" in graph["ehrr1.artefacts.instructions"]  # in prepare_tokenizer()


def test_no_import_circle():
    assert circles(imports(module_names())) == []


def test_no_import_points_up():
    upward = [
        f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
        for source, targets in imports(module_names()).items()
        for target in sorted(targets)
        if layer(target) > layer(source)
    ]
    assert upward == []


def test_circles_and_upward_imports_are_caught():
    graph = {"ehrr1.data.a": {"ehrr1.data.b"}, "ehrr1.data.b": {"ehrr1.data.a"}, "ehrr1.tasks.c": set()}
    assert circles(graph) == [["ehrr1.data.a", "ehrr1.data.b"]]
    assert layer("ehrr1.evaluation.evaluate") > layer("ehrr1.artefacts.graph") > layer("ehrr1.evaluation.report")


def test_sft_and_grpo_are_siblings_on_one_base():
    from ehrr1.training.base import CausalLMModule
    from ehrr1.training.grpo import GRPOModule
    from ehrr1.training.sft import SFTModule

    assert issubclass(SFTModule, CausalLMModule) and issubclass(GRPOModule, CausalLMModule)
    assert not issubclass(GRPOModule, SFTModule)
    sft_only = {"forward_loss", "weighted_loss", "on_before_optimizer_step", "on_validation_epoch_end"}
    assert not {name for name in sft_only if getattr(GRPOModule, name, None) is getattr(SFTModule, name)}


def test_the_artefact_table_matches_the_declared_graph():
    from ehrr1.artefacts.graph import ARTEFACTS, STEPS
    from ehrr1.config import Pipeline

    assert set(STEPS) == {pipeline.value for pipeline in Pipeline}

    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = {
        cells[0]: cells
        for line in text.splitlines()
        if line.startswith("| ") and len(cells := [c.strip() for c in line.strip("|").split("|")]) == 6
    }
    names = {artefact.name for artefact in ARTEFACTS}
    for artefact in ARTEFACTS:
        assert artefact.name in rows, f"ARCHITECTURE.md has no row for {artefact.name}"
        assert f"`{artefact.producer.removeprefix('ehrr1.')}`" == rows[artefact.name][2]
        assert ", ".join(f"`{key}`" for key in artefact.reads) == rows[artefact.name][4]
        module, function = artefact.producer.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), function))
        assert set(artefact.inputs) <= names - {artefact.name}


def test_a_builder_gets_only_the_config_nodes_its_artefact_and_their_inputs_declare():
    from omegaconf.errors import ConfigAttributeError

    from ehrr1.artefacts.graph import config_for, upstream
    from tests.support import compose_config

    cfg = compose_config("train")
    assert upstream("reasoning data") == ["instructions", "sample index", "embedded tokenizer", "timelines",
                                          "synthetic cohort"]  # fmt: skip
    timelines = config_for("timelines", cfg)
    assert set(timelines) == {"data", "timelines", "progress"}
    assert timelines.timelines.dir == f"{cfg.data_root}/timelines/{cfg.data.name}"  # resolved where it points
    with pytest.raises(ConfigAttributeError):
        timelines.task_mix  # noqa: B018 - a node it does not declare
    instructions = set(config_for("instructions", cfg))
    assert {"data", "timelines", "model", "export"} <= instructions and not {"stage", "hardware"} & instructions
