"""The user guide (``docs/``, built with MkDocs) and the README are tested like code.

Every shell block carries a marker on the line before its fence, saying how it is checked:

- ``<!-- docs-test: run -->``: executed with bash, as written, in a temporary folder per page (the page's
  blocks in order, sharing it) where ``synthesize.py``, ``train.py``, ``evaluate.py``, ``conf/``, ``tools/``
  and ``experiments/`` are the repository's. ``run output=page``: what it prints is on the page, verbatim
  (a generated table);
- ``<!-- docs-test: output -->``: what the run block before it printed, exactly (the page shows real output);
- ``<!-- docs-test: compose [NAME=value ...] -->``: each ``python synthesize.py|train.py|evaluate.py ...``
  command is composed as ``--cfg job`` composes it and validated as the entry point validates it (GPU,
  cluster and credentialed-data commands): a renamed key, a removed option or a value out of range fails.
  ``NAME=value`` gives a shell variable the block computes (``$(...)``) an example value; a sweep (``-m``,
  ``a,b``) is composed at its first value;
- ``<!-- docs-test: skip -->``: not a command (a layout, an output, a message).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]
MARKER = re.compile(r"^<!-- docs-test: (run|output|compose|skip)(.*?)-->\s*$")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
SHELL = {"", "bash", "sh", "shell", "console"}
ENTRY = re.compile(r"python\s+((?:synthesize|train|evaluate)\.py)\b(.*)$")
LINKED = ("synthesize.py", "train.py", "evaluate.py", "conf", "tools", "experiments", "tests", "ehrr1")
MIN_PAGE_CHARS = 1500  # a page in the navigation that holds less is a stub


@dataclass
class Block:
    page: Path
    line: int
    language: str
    mode: str | None
    values: dict[str, str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, each with the marker on the line before it (if any)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        marker = MARKER.match(lines[i - 1]) if i else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(fence.group(1)))
        values = dict(v.split("=", 1) for v in marker.group(2).split()) if marker else {}
        found.append(Block(page, i + 1, fence.group(2), marker.group(1) if marker else None, values,
                           "\n".join(lines[i + 1 : end])))  # fmt: skip
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]


def test_every_shell_block_says_how_it_is_checked():
    unmarked = [b.where for b in ALL if b.mode is None and b.language in SHELL]
    assert not unmarked, f"shell blocks without a <!-- docs-test: run|output|compose|skip --> marker: {unmarked}"
    assert sum(b.mode == "run" for b in ALL) >= 10 and sum(b.mode == "compose" for b in ALL) >= 30


def test_the_pages_of_the_navigation_exist_and_are_not_stubs():
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    pages = [next(iter(entry.values())) for entry in nav]
    assert set(pages) == {p.name for p in DOCS.glob("*.md")}, "every page is in the navigation, and only pages"
    short = {p: len((DOCS / p).read_text(encoding="utf-8")) for p in pages}
    assert all(n >= MIN_PAGE_CHARS for n in short.values()), short


def test_the_configuration_reference_is_current():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "config_reference.py"), "--check"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_cohort_anchor_table_is_current():
    """docs/assets/cohort/anchors.md is what cohort_realism.py renders from cohort_anchors.yaml, and every anchor
    has its source (a published figure) or its reason (an aimed range)."""
    import importlib.util

    import yaml

    path = REPO / "experiments" / "benchmarks" / "cohort_realism.py"
    spec = importlib.util.spec_from_file_location("cohort_realism", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    anchors = yaml.safe_load(module.ANCHORS.read_text())
    rendered = module.anchors_markdown(anchors)
    assert (REPO / "docs" / "assets" / "cohort" / "anchors.md").read_text() == rendered, (
        "run python experiments/benchmarks/cohort_realism.py --docs"
    )
    readme = (REPO / "README.md").read_text()
    assert module.with_summary(readme, module.anchors_summary(anchors)) == readme, (
        "README's anchor table: run python experiments/benchmarks/cohort_realism.py --docs"
    )
    for name, anchor in anchors["risk_tasks"].items():
        for figure in ("prevalence", "auroc"):
            node = anchor[figure]
            assert node.get("source") if node.get("value") is not None else node.get("reason") and node.get("aim"), (
                name,
                figure,
            )


def _split_top_level(text: str) -> list[str]:
    """``a,b`` -> [a, b], leaving commas inside brackets and quotes alone (a Hydra sweep's choices)."""
    parts, depth, current, quote = [], 0, "", None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def compose_commands(block: Block) -> list[tuple[str, list[str]]]:
    """(script, arguments) of each entry-point command of a compose block, shell variables filled in."""
    variables = dict(block.values)
    commands = []
    for line in block.text.splitlines():
        line = line.split(" #", 1)[0].strip()
        assignment = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if assignment and assignment.group(1) not in variables:
            value = assignment.group(2)
            assert not value.startswith("$("), f"{block.where}: give {assignment.group(1)} a value in the marker"
            variables[assignment.group(1)] = " ".join(shlex.split(value))
            continue
        for part in line.split("&&"):
            entry = ENTRY.search(part.strip())
            if not entry:
                continue
            text = re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", lambda m: variables[m.group(1)], entry.group(2))
            args = [a for a in shlex.split(text) if a not in ("-m", "--multirun")]
            args = [a if "=" not in a or a.startswith("hydra") else a.split("=", 1)[0] + "=" +
                    _split_top_level(a.split("=", 1)[1])[0] for a in args]  # fmt: skip
            commands.append((entry.group(1), args))
    return commands


COMPOSED = [(b, script, args) for b in ALL if b.mode == "compose" for script, args in compose_commands(b)]


@pytest.mark.slow
def test_every_documented_command_composes():
    """Each compose block's commands, composed as ``--cfg job`` composes them and checked as the entry point
    checks its config before any work: the keys, options and values they use exist and are valid."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ehrr1.config import register_configs, validate

    register_configs()
    failed = []
    for block, script, args in COMPOSED:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            try:
                validate(compose(config_name=script.removesuffix(".py"), overrides=args))
            except Exception as exc:  # noqa: BLE001 - every failure is reported with its command
                failed.append(f"{block.where}: python {script} {shlex.join(args)}: {type(exc).__name__}: {exc}")
    GlobalHydra.instance().clear()
    assert len(COMPOSED) >= 100 and not failed, "\n".join(failed)


def _workspace(tmp: Path) -> Path:
    for name in LINKED:
        os.symlink(REPO / name, tmp / name)
    return tmp


RUN_PAGES = sorted({b.page for b in ALL if b.mode == "run"})


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=[p.name for p in RUN_PAGES])
def test_every_runnable_block_runs(page, tmp_path):
    """The page's runnable blocks, in order, in one folder, as a reader would type them."""
    work = _workspace(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    printed = None
    for block in [b for b in blocks(page) if b.mode in ("run", "output")]:
        if block.mode == "output":
            assert printed is not None, f"{block.where}: an output block follows no run block"
            assert _lines(block.text) == _lines(printed), f"{block.where}: the page shows other output than:\n{printed}"
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, f"{block.where}:\n{block.text}\n{done.stderr[-3000:]}"
        printed = done.stdout
        if block.values.get("output") == "page":
            assert done.stdout.strip() in page.read_text(encoding="utf-8"), (
                f"{block.where}: its output is not on the page"
            )


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


@pytest.mark.slow
def test_the_guide_builds_strict(tmp_path):
    if shutil.which("mkdocs") is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(["mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()
