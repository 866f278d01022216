"""Every setting has one home: the schema's default (``ehrr1/config/``) or a YAML file's line, never both.

Two rules, checked on every file of ``conf/`` but the experiment presets (overrides by design):

- a YAML line never restates the value its key has without it (its parent option's, else the schema's);
- a schema default is never dead: where an entry point's own YAML, or every option of a group, sets a key,
  the schema leaves it without a default (MISSING), so Python and the command line cannot disagree.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING

from ehrr1.config import (
    DataPipelineConfig,
    EvaluateConfig,
    EveryStageConfig,
    StageConfig,
    SynthesizeConfig,
    TrainConfig,
)
from tests.support import REPO

CONF = REPO / "conf"
PRIMARY = {
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "synthesize": SynthesizeConfig,
    "data_pipeline": DataPipelineConfig,
}
ENTRY_SCHEMAS = (TrainConfig, EvaluateConfig, SynthesizeConfig)
PRESETS = {"experiment"}
NAMED_SCHEMAS = {"stage_schema": StageConfig, "every_stage_schema": EveryStageConfig}  # a YAML names its schema
ABSENT = object()  # no default


@dataclasses.dataclass
class Node:
    """A point of the schema: its class (a dataclass, or None past the schema) and its default there."""

    cls: Any
    default: Any = ABSENT
    present: bool = True  # False: an optional node that is None by default (a YAML setting under it creates it)


def _dataclass_of(hint: Any) -> Any:
    if dataclasses.is_dataclass(hint):
        return hint
    found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
    return found[0] if found else None


def _child(node: Node, key: str) -> Node | None:
    """The schema at ``key`` below ``node``; None where the schema has no such field."""
    if node.cls is None:
        return None
    fields = {f.name: f for f in dataclasses.fields(node.cls)}
    if key not in fields:
        return None
    f = fields[key]
    cls = _dataclass_of(typing.get_type_hints(node.cls)[key])
    if not node.present:
        return Node(cls, ABSENT, present=False)
    if dataclasses.is_dataclass(node.default) and not isinstance(node.default, type):
        default = getattr(node.default, key)  # the parent's own default instance decides
    elif f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = ABSENT
    if default is None and cls is not None:
        return Node(cls, ABSENT, present=False)
    return Node(cls, _plain(default))


def _plain(value: Any) -> Any:
    if value is MISSING or value == MISSING:
        return ABSENT
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def _leaves(content: dict, node: Node | None, path: tuple[str, ...] = ()):
    """(path, value, schema node) of each setting a YAML mapping makes under a schema node."""
    for key, value in content.items():
        if key in ("defaults", "hydra") and not path:
            continue
        child = _child(node, str(key)) if node is not None else None
        if isinstance(value, dict) and child is not None and child.cls is not None and value:
            yield from _leaves(value, child, (*path, str(key)))
        else:
            yield (*path, str(key)), value, child


def _header_package(text: str) -> str | None:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return first.split("@package", 1)[1].strip() if "@package" in first else None


def _schema_of(package: str, root: Any = None) -> Node | None:
    """The schema node a file's content lands on: the entry point's root, or the config that has the group."""
    keys = package.split(".") if package else []
    if root is None:
        root = next((cls for cls in ENTRY_SCHEMAS if keys and _child(Node(cls), keys[0])), TrainConfig)
    node: Node | None = Node(root)
    for key in keys:
        node = _child(node, key) if node is not None else None
    return node


@dataclasses.dataclass
class Option:
    """A YAML file of ``conf/``: where its content lands, and the options it builds on."""

    path: Path
    group: str | None
    package: str
    content: dict
    parents: list[tuple[str, str]]  # (group, option)
    named_schema: Any = None  # the schema its defaults list names (/stage_schema@_here_), if any

    @property
    def schema(self) -> Node | None:
        if self.named_schema is not None:
            return Node(self.named_schema)
        if self.parents and self.group is not None and self.parents[0][0] == self.group:
            return option(*self.parents[0]).schema  # a stage built on another: that one's schema
        return _schema_of(self.package, PRIMARY[self.path.stem] if self.group is None else None)


def option(group: str | None, name: str) -> Option:
    path = CONF / (f"{group}/{name}.yaml" if group else f"{name}.yaml")
    text = path.read_text()
    content = yaml.safe_load(text) or {}
    package = _header_package(text)
    package = (group or "") if package is None else ("" if package == "_global_" else package)
    parents, named = [], None
    for entry in content.get("defaults", []):
        if not isinstance(entry, str) or entry == "_self_":
            continue  # a dict entry places another group's option elsewhere (a curriculum's stages)
        name = entry.split("@")[0]
        if name.endswith("_schema"):
            named = NAMED_SCHEMAS.get(name.strip("/"))
        elif name.startswith("/"):
            parents.append(tuple(name.strip("/").rsplit("/", 1)))
        elif group is not None:
            parents.append((group, name))
    return Option(path, group, package, content, parents, named)


def _set_by(opt: Option) -> dict[tuple[str, ...], Any]:
    """Every setting a file makes, with its parents', as full paths from the config's root."""
    settings: dict[tuple[str, ...], Any] = {}
    for group, name in opt.parents:
        settings.update(_set_by(option(group, name)))
    prefix = tuple(opt.package.split(".")) if opt.package else ()
    for path, value, _ in _leaves(opt.content, opt.schema):
        settings[(*prefix, *path)] = value
    return settings


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return a == b


def _files() -> list[Option]:
    found = [option(None, p.stem) for p in sorted(CONF.glob("*.yaml"))]
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name not in PRESETS):
        found += [option(folder.name, p.stem) for p in sorted(folder.glob("*.yaml"))]
    return found


def _where(opt: Option, path: tuple[str, ...]) -> str:
    return f"{opt.path.relative_to(CONF.parent)}: {'.'.join(path)}"


def restated(opt: Option) -> list[str]:
    inherited: dict[tuple[str, ...], Any] = {}
    for group, name in opt.parents:
        inherited.update(_set_by(option(group, name)))
    prefix = tuple(opt.package.split(".")) if opt.package else ()
    found = []
    for path, value, node in _leaves(opt.content, opt.schema):
        full = (*prefix, *path)
        before = inherited.get(full, ABSENT if node is None else node.default)
        if before is not ABSENT and _same(value, before):
            found.append(f"{_where(opt, full)} = {value!r} restates the value it has without this line")
    return found


def dead_defaults() -> list[str]:
    found = []
    for opt in _files():
        if opt.group is not None:
            continue
        for path, value, node in _leaves(opt.content, opt.schema):
            if node is not None and node.cls is None and node.default is not ABSENT and not _same(value, node.default):
                found.append(f"{_where(opt, path)}: always set here, so the schema's default is never used")
    groups: dict[str, list[Option]] = {}
    for opt in _files():
        if opt.group is not None and opt.package == opt.group:
            groups.setdefault(opt.group, []).append(opt)
    for group, options in groups.items():
        settings = [_set_by(o) for o in options]
        for path in set.intersection(*(set(s) for s in settings)):
            node = _schema_of(".".join(path[:-1]))
            node = _child(node, path[-1]) if node is not None else None
            if node is not None and node.cls is None and node.default is not ABSENT:
                found.append(
                    f"conf/{group}/*.yaml: every option sets {'.'.join(path)}, so the schema's default is never used"
                )
    return found


def test_no_yaml_line_restates_what_it_inherits():
    found = [problem for opt in _files() for problem in restated(opt)]
    assert not found, "\n".join(found)


def test_no_schema_default_is_always_overridden():
    found = dead_defaults()
    assert not found, "\n".join(found)


def test_the_rules_catch_what_they_describe(tmp_path, monkeypatch):
    """A restated line and a default every option overrides are both found (the test can fail)."""
    folder = tmp_path / "conf"
    (folder / "hardware").mkdir(parents=True)
    (folder / "train.yaml").write_text("seed: 0\n")
    (folder / "hardware" / "a.yaml").write_text("name: a\naccelerator: cpu\ndevices: 2\n")
    (folder / "hardware" / "b.yaml").write_text("name: b\ndevices: 4\n")
    monkeypatch.setattr(sys.modules[__name__], "CONF", folder)
    restates = [p for opt in _files() for p in restated(opt)]
    dead = dead_defaults()
    assert any("train.yaml: seed = 0" in p for p in restates)
    assert any("hardware/a.yaml: hardware.accelerator = 'cpu'" in p for p in restates)
    assert any("every option sets hardware.devices" in p for p in dead)
    assert not any("hardware.name" in p for p in restates + dead)  # no schema default: each option states it
