"""How a setting is checked: ranges on fields (:func:`checked`), "did you mean" hints, and :func:`validate`,
which walks a composed config and reports every problem in one message before any work starts."""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any, TypeVar, cast, get_type_hints
from urllib.parse import urlparse

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ehrr1.errors import ConfigError, shown

SPLITS = ("train", "val", "test")


T = TypeVar("T")


LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def remote_refusal(base_url: str, opt_in_key: str) -> str | None:
    """Why ``base_url`` may not receive EHR text without ``opt_in_key=true``; None for a server on this machine."""
    if (urlparse(base_url).hostname or "") in LOCAL_HOSTS:
        return None
    return (
        f"{base_url} is not on this machine: sending EHR text to a remote server breaks the MIMIC-IV data use "
        f"agreement (no sharing with third parties) unless that server is yours to use for it; set "
        f"{opt_in_key}=true to allow it"
    )


@dataclass(frozen=True)
class Range:
    """Where a numeric setting may lie: its bounds, and sentinel values allowed outside them (-1: all)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple[float, ...] = ()

    def expected(self) -> str:
        limits = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        bounds = " and ".join(f"{op} {v:g}" for op, v in limits if v is not None)
        return " or ".join([bounds, *(f"{v:g}" for v in self.also)])

    def holds(self, value: float) -> bool:
        if value in self.also:
            return True
        if not math.isfinite(value):
            return False
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )


def checked(default: Any, **bounds: Any) -> Any:
    """A dataclass field whose value :func:`validate` checks against ``Range(**bounds)`` (None always passes)."""
    return field(default=default, metadata={"range": Range(**bounds)})


def path_name(default: Any = MISSING) -> Any:
    """A dataclass field whose value names a folder or file (``model.name`` in ``instructions/<mix>/<model>``):
    :func:`validate` refuses one that would reach outside it (:func:`path_name_problem`)."""
    return field(default=default, metadata={"path_name": True})


MAX_NAME_BYTES = 200  # file systems take 255 bytes per path component; suffixes are added to some


def path_name_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be one component of a path (a separator, ``.`` / ``..``, a character nobody can see,
    too long), shown with escapes; None for a plain name."""
    if value is None:
        return None
    text = str(value)
    if not text.strip():
        why = "it is empty"
    elif text in (".", ".."):
        why = f"'{text}' is the folder itself or its parent"
    elif "/" in text or "\\" in text:
        why = "it holds a path separator (/ or \\)"
    elif shown(text) != f"'{text}'":
        why = "it holds a character that cannot be seen (a control, zero-width or format character)"
    elif len(text.encode()) > MAX_NAME_BYTES:
        why = f"it is longer than {MAX_NAME_BYTES} bytes"
    else:
        return None
    name = shown(text) if len(text) <= 80 else f"{shown(text[:60])[:-1]}...' ({len(text.encode())} bytes)"
    return f"{key}={name} names a folder, so it must be one plain name: {why}"


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}choose from {', '.join(choices)}"


def known_split(at: str, value: str | None) -> list[str]:
    if value is None or value in SPLITS:
        return []
    return [f"{at}={value}: unknown split; {did_you_mean(value, SPLITS)}"]


def unset_by_default(cls: type[T]) -> type[T]:
    """A subclass of the dataclass ``cls`` whose every setting, nested ones included, is unset (``???``) until
    given: a node of it holds only what a config or an override set. Ranges and cross-field rules stay."""
    hints = get_type_hints(cls)
    specs: list[tuple[str, Any, Any]] = []
    for f in fields(cast(Any, cls)):
        kind = hints[f.name]
        if is_dataclass(kind):
            specs.append((f.name, kind, field(default_factory=unset_by_default(cast(type, kind)), metadata=f.metadata)))
        else:
            specs.append((f.name, kind, field(default=MISSING, metadata=f.metadata)))
    return cast(type[T], make_dataclass(f"Unset{cls.__name__}", specs, bases=(cls,)))


def given_settings(node: DictConfig) -> dict[str, Any]:
    """The settings of ``node`` that are set (not ``???``), nested ones included, interpolations unresolved."""

    def keep(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        kept = {k: keep(v) for k, v in value.items() if v != MISSING}
        return {k: v for k, v in kept.items() if v != {}}  # a nested node with nothing set adds nothing

    return keep(OmegaConf.to_container(node, resolve=False))


TARGET_SCHEMAS: dict[str, type] = {}  # a node's ``_target_`` -> its schema (a stored config keeps no types)


def builds(*schemas: type) -> None:
    """Register schemas whose nodes build an object (``_target_``), so a plain config's nodes get their type."""
    TARGET_SCHEMAS.update({cast(Any, schema)._target_: schema for schema in schemas})


def settings_of(cls: type[T], node: DictConfig) -> T:
    """The ``cls`` dataclass (nested ones included) from the matching keys of a config node, resolved where
    they point. A node that builds an object (``_target_``) gets its schema back where the config has none
    (a stored one)."""
    subset = {f.name: typed(node[f.name]) for f in fields(cast(Any, cls)) if f.name in node}
    return cast(T, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), subset)))


def typed(value: Any) -> Any:
    """A config value ready to merge into a schema: resolved where it points, each node that builds an object
    given the schema of its ``_target_`` (which a plain, stored config lacks)."""
    if not isinstance(value, DictConfig | ListConfig) or value._is_none() or value._is_missing():
        return value

    def restore(item: Any) -> Any:
        if isinstance(item, list):
            return [restore(v) for v in item]
        if not isinstance(item, dict):
            return item
        items = {k: restore(v) for k, v in item.items()}
        schema = TARGET_SCHEMAS.get(str(items.get("_target_")))
        return OmegaConf.merge(OmegaConf.structured(schema), items) if schema is not None else items

    return restore(OmegaConf.to_container(value, resolve=True))


def validate(cfg: DictConfig) -> None:
    """Check every setting against its range and every node's cross-field rules, before any work starts."""
    found = list(_problems(cfg, ""))
    if len(found) == 1:
        raise ConfigError(f"invalid setting: {found[0]}")
    if found:
        raise ConfigError(f"{len(found)} invalid settings:\n  " + "\n  ".join(found))


def node_problems(node: DictConfig, at: str = "") -> list[str]:
    """Every problem :func:`validate` finds in ``node`` (a typed node), each named from ``at``."""
    return list(_problems(node, at))


def _problems(node: DictConfig, at: str) -> Iterator[str]:
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        for f in fields(schema):
            bounds = f.metadata.get("range")
            value = _value(node, f.name)
            if bounds is not None and isinstance(value, int | float) and not bounds.holds(value):
                yield f"{at}{f.name} must be {bounds.expected()}, got {value}"
            if f.metadata.get("path_name") and isinstance(value, str):
                problem = path_name_problem(f"{at}{f.name}", value)
                if problem:
                    yield problem
        cross = getattr(schema, "problems", None)
        if cross is not None:
            with contextlib.suppress(OmegaConfBaseException):  # unresolved or missing: checked where it is used
                yield from cross(node, at.rstrip("."))
    for key in map(str, node):
        child = _value(node, key, raw=True)
        if not isinstance(child, DictConfig | ListConfig) or child._is_none() or child._is_missing():
            continue
        if isinstance(child, DictConfig):
            yield from _problems(child, f"{at}{key}.")
        else:
            for i in range(len(child)):
                item = child._get_node(i)
                if isinstance(item, DictConfig) and not item._is_none():
                    yield from _problems(item, f"{at}{key}[{i}].")


def _value(node: DictConfig, key: str, raw: bool = False) -> Any:
    """``node[key]`` resolved, or None where it is missing or cannot be resolved yet (``${now:...}``)."""
    try:
        return node._get_node(key) if raw else OmegaConf.select(node, key, throw_on_missing=False)
    except OmegaConfBaseException:
        return None
