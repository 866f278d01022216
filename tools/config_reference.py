"""Write the guide's configuration reference (``docs/configuration.md``) from the schema and ``conf/``.

    python tools/config_reference.py            # rewrite docs/configuration.md
    python tools/config_reference.py --check    # exit 1 when the page differs from what the schema gives

Every key of the three entry points' composed defaults (``synthesize``, ``train``, ``evaluate``), with its
default as composed, its type and range from the structured config behind it (``ehrr1.config``), and its
meaning from the comment on the field's line; then every config group's options with the first comment
line of their YAML. Nothing in the page is written by hand, so it cannot fall behind the code
(``tests/test_docs.py`` checks it is current).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "configuration.md"
ENTRY_POINTS = ("synthesize", "train", "evaluate")
MAX_DEFAULT = 60  # characters of a default shown in the table


@cache
def _comments(module_name: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the comment on the field's line(s), for the dataclasses of one module."""
    source = inspect.getsource(sys.modules[module_name])
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if not text.startswith(("fmt:", "type:", "noqa")):
                by_line[token.start[0]] = text.split("  # type:")[0]
    source_lines = ["", *source.splitlines()]  # 1-based, as tokens count lines
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    end = item.end_lineno or item.lineno
                    while end in by_line and end + 1 in by_line and source_lines[end + 1].lstrip().startswith("#"):
                        end += 1  # the field's comment goes on over comment-only lines
                    text = " ".join(by_line[n] for n in range(item.lineno, end + 1) if n in by_line)
                    if text:
                        found[(node.name, item.target.id)] = text
    return found


def _type_name(kind: Any) -> str:
    text = getattr(kind, "__name__", None) if not typing.get_args(kind) else None
    text = text or str(kind).replace("typing.", "")
    return text.replace("NoneType", "None")


def _field_info(schema: type, name: str) -> tuple[str, str, str]:
    """(type, range, meaning) of a dataclass field."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    if name not in fields:
        return "", "", ""
    hints = typing.get_type_hints(schema)
    bounds = fields[name].metadata.get("range")
    meaning = _comments(schema.__module__).get((schema.__name__, name), "")
    if fields[name].metadata.get("path_name"):
        meaning = (meaning + " " if meaning else "") + "(a name: no `/`, `..`, control characters)"
    return _type_name(hints.get(name, fields[name].type)), bounds.expected() if bounds else "", meaning


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _default(value: Any) -> str:
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=False)
    value = _plain(value)
    text = "null" if value is None else str(value)
    if isinstance(value, str) and value == "???":
        text = "??? (required)"
    text = text if len(text) <= MAX_DEFAULT else text[: MAX_DEFAULT - 1] + "…"
    return f"`{text}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _is_section(child: Any) -> bool:
    """A node shown as its keys: a typed node, or a mapping holding mappings."""
    if not isinstance(child, DictConfig) or child._is_none() or child._is_missing() or len(child) == 0:
        return False
    schema = OmegaConf.get_type(child)
    typed = schema is not None and dataclasses.is_dataclass(schema)
    return typed or any(isinstance(child._get_node(k), DictConfig) for k in child)


def _rows(node: DictConfig, prefix: str) -> list[tuple[str, str, str, str, str]]:
    """(key, default, type, range, meaning) of every setting under ``node``."""
    schema = OmegaConf.get_type(node)
    typed = schema is not None and dataclasses.is_dataclass(schema)
    plain = cast(dict, OmegaConf.to_container(node, resolve=False))
    rows = []
    for key in map(str, node):
        if key == "_target_":
            continue
        dotted = f"{prefix}{key}"
        child = node._get_node(key)
        if _is_section(child):
            rows.extend(_rows(cast(DictConfig, child), f"{dotted}."))
            continue
        kind, bounds, meaning = _field_info(cast(type, schema), key) if typed else ("", "", "")
        rows.append((dotted, _default(plain[key]), kind, bounds, meaning))
    return rows


def _composed(name: str) -> DictConfig:
    from hydra import compose, initialize_config_dir

    from ehrr1.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=name)


def _summary(option: Path) -> str:
    """The YAML's opening comment (its first paragraph; Hydra's ``@package`` line left out)."""
    words: list[str] = []
    for line in option.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or (not text and words):
            break
        if text and not text.startswith("@package"):
            words.append(text)
    return " ".join(words)


def _group_options() -> list[str]:
    lines = ["## Config groups", "", "Choose an option with `<group>=<option>` (a file under `conf/<group>/`).", ""]
    lines += ["| group | option | what it is |", "| --- | --- | --- |"]
    for group in sorted(p for p in (REPO / "conf").iterdir() if p.is_dir()):
        for option in sorted(group.glob("*.yaml")):
            lines.append(f"| `{group.name}` | `{option.stem}` | {_cell(_summary(option))} |")
    return lines


def page() -> str:
    seen: dict[str, tuple[str, str, str, str, str]] = {}
    where: dict[str, list[str]] = {}
    for entry in ENTRY_POINTS:
        for row in _rows(_composed(entry), ""):
            seen.setdefault(row[0], row)
            where.setdefault(row[0], []).append(entry)
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by tools/config_reference.py from ehrr1/config and conf/: do not edit by hand -->",
        "",
        "Every setting of the three entry points, as `--cfg job` composes their defaults (`synthesize.py`,",
        "`train.py`, `evaluate.py`): its default, its type and range as the structured config checks them at",
        "start-up, and what it means. Set any of them on the command line (`key=value`), in an experiment",
        "preset (`experiment=<name>`) or in a group option. Unknown keys and values out of range are refused",
        "with one message before any work starts. A key marked with an entry point exists only there.",
        "",
        "`python <entry point>.py --cfg job` prints the composed config of a command line; `--help` lists the",
        "config groups.",
        "",
        *_group_options(),
    ]
    sections: dict[str, list[tuple[str, str, str, str, str]]] = {}
    for key, row in seen.items():
        sections.setdefault(key.split(".")[0] if "." in key else "(top level)", []).append(row)
    for section in sorted(sections, key=lambda s: (s != "(top level)", s)):
        lines += ["", f"## `{section}`" if section != "(top level)" else "## Top-level settings", ""]
        lines += ["| key | default | type | range | meaning |", "| --- | --- | --- | --- | --- |"]
        for key, default, kind, bounds, meaning in sections[section]:
            only = "" if len(where[key]) == len(ENTRY_POINTS) else f" ({', '.join(where[key])})"
            lines.append(f"| `{key}`{only} | {default} | {_cell(kind)} | {_cell(bounds)} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is not current")
    args = parser.parse_args()
    text = page()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is not current: run python tools/config_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
