"""One pattern for every job that must survive a kill: a work directory keyed by the fingerprint of its inputs.

- **claim**: take the directory for these inputs. What other inputs left there is cleared; a directory
  holding files that no job of ours wrote is refused (where the caller names the setting to change);
  temporaries of killed runs are removed; the fingerprint is recorded (``state``).
- **pending**: the units not yet committed (a unit is done when its file is there).
- **commit**: write one unit at a temporary path renamed into place, so a kill leaves it absent, never cut.
- **done**: the manifest, written last with the fingerprint: the directory is complete for these inputs and
  a run with the same inputs does no work.

:class:`Ledger` is the same idea at the grain of rows: results appended to one JSONL file, each under its key,
so a resumed job skips the keys already there.

The timelines, the sample index (one work directory per task), the export's parts, the reasoning synthesis'
work, the synthetic cohort (one unit: the whole directory) and the evaluation's results all go through here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TypeVar

from ehrr1.errors import ForeignOutputError
from ehrr1.utils import BUILT_WITH, atomic_output, atomic_write_json, atomic_write_text, changed_settings, read_json

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class WorkDir:
    """The directory ``path`` built from the inputs whose fingerprint is ``key``. Plain data: a worker process
    gets one to commit its units."""

    path: Path
    key: str
    what: str  # what it holds, for messages ("timeline build", "index of task labevents")
    state: str = "state.json"  # the fingerprint this directory is being built for
    manifest: str = "manifest.json"  # the fingerprint it was finished for, and what the producer records
    # the names (glob patterns) of what the producer writes at the top of the directory, besides its records
    # and temporaries: a rebuild refuses to remove anything else. None: it is all the producer's (a folder of
    # its own, like ``_parts``)
    owns: tuple[str, ...] | None = None

    def is_done(self) -> bool:
        """Finished for these inputs."""
        return self._recorded(self.manifest) == self.key

    def read_manifest(self) -> dict[str, Any]:
        return read_json(self.path / self.manifest)

    def claim(self, foreign: str | None = None, clean: bool = True) -> None:
        """Start or resume building here. ``foreign``: how to go on when the directory holds files but no record
        of ours (None: clear them). ``clean``: remove killed runs' temporaries (not while other jobs of one
        array may be writing theirs)."""
        if self.path.exists() and any(self.path.iterdir()):
            if foreign is not None:
                self._refuse_foreign(self.state, foreign)
            if (self._recorded(self.state) or self._recorded(self.manifest)) != self.key:
                self._refuse_strangers("its inputs or settings changed")
                log.warning("the inputs or settings of the %s in %s changed: rebuilding it", self.what, self.path)
                shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if clean:
            for leftover in sorted(self.path.rglob("*.tmp"), reverse=True):  # a directory's content first
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        atomic_write_json(self.path / self.state, {"fingerprint": self.key})

    def pending(self, units: Iterable[T], name: Callable[[T], str]) -> list[T]:
        """The ``units`` whose file (``name(unit)``, relative to the directory) is not there yet."""
        return [unit for unit in units if not (self.path / name(unit)).exists()]

    @contextmanager
    def commit(self, name: str) -> Iterator[Path]:
        """A temporary path to write the unit ``name`` at, renamed into place when the block ends."""
        final = self.path / name
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(final) as tmp:
            yield tmp

    def commit_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def commit_json(self, name: str, payload: Any) -> None:
        atomic_write_json(self.path / name, payload)

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Mark the directory complete for these inputs; ``manifest`` is what the producer records beside."""
        manifest = {**manifest, "fingerprint": self.key}
        atomic_write_json(self.path / self.manifest, manifest)
        return manifest

    def build_whole(self, write: Callable[[Path], dict[str, Any]], foreign: str) -> dict[str, Any]:
        """A directory that is one unit: reused when done, else ``write`` fills a temporary directory (returning
        its manifest) that then replaces this one. A kill leaves the old directory, never a part of the new."""
        if self.is_done():
            log.info("%s at %s is up to date", self.what, self.path)
            return self.read_manifest()
        self._refuse_foreign(self.manifest, foreign)
        if self.path.exists() and any(self.path.iterdir()):
            self._refuse_strangers("it was made with other settings")
            log.warning("%s at %s was made with other settings: making it anew", self.what, self.path)
        with atomic_output(self.path, fresh=True) as tmp:
            tmp.mkdir(parents=True)
            manifest = write(tmp)
            atomic_write_json(tmp / self.manifest, {**manifest, "fingerprint": self.key})
        return self.read_manifest()

    def _refuse_foreign(self, record: str, foreign: str) -> None:
        """Refuse a directory with files in it but neither record of ours: ehrr1 never deletes what it did not write."""
        ours = (self.path / self.state).exists() or (self.path / self.manifest).exists()
        if not ours and self.path.exists() and any(self.path.iterdir()):
            raise ForeignOutputError(f"{self.path} is not empty and holds no {self.what} ({record} missing): {foreign}")

    def _refuse_strangers(self, why: str) -> None:
        if self.owns is not None:
            refuse_strangers(self.path, (self.state, self.manifest, *self.owns), self.what, why)

    def _recorded(self, name: str) -> str | None:
        path = self.path / name
        return read_json(path).get("fingerprint") if path.exists() else None


def strangers(folder: Path, owns: tuple[str, ...]) -> list[Path]:
    """What the top of ``folder`` holds besides the names (glob patterns) ``owns``, the settings record and
    temporaries: what a producer that writes those did not write (a run folder put there, a file of the user's)."""
    if not folder.is_dir():
        return []
    ours = (*owns, BUILT_WITH, "*.tmp", "*.lock")
    return [p for p in sorted(folder.iterdir()) if not any(fnmatch(p.name, name) for name in ours)]


def refuse_strangers(folder: Path, owns: tuple[str, ...], what: str, why: str) -> None:
    """Before a rebuild replaces ``folder``: stop, naming it, when it holds anything its producer (``what``, which
    writes ``owns``) did not write; a rebuild would delete it with the rest."""
    found = strangers(folder, owns)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ForeignOutputError(
            f"the {what} in {folder} must be rebuilt ({why}), which replaces the folder, but it holds "
            f"{found[0]}{more}, which the {what} did not write: move that out of {folder}, then run again"
        )


def reusable(folder: Path, marker: str, settings: dict[str, Any], what: str, owns: tuple[str, ...]) -> bool:
    """Whether ``folder`` (made whole by one producer, ``marker`` its sign) was built with ``settings`` and can be
    reused; when it was built with others, the keys that differ are logged and a folder holding anything its
    producer does not write (``owns``) is refused before the rebuild replaces it."""
    if not (folder / marker).exists():
        return False
    changed = changed_settings(folder, settings)
    if not changed:
        return True
    log.info("the %s at %s was built with other settings (%s): building it anew", what, folder, ", ".join(changed))
    refuse_strangers(folder, owns, what, "it was built with other settings")
    return False


class Ledger:
    """Rows appended a batch at a time to a JSONL file, each under its key. A line cut by a kill is cut off the
    file when it is opened, so its row is redone; each batch is on disk (synced) before the next begins."""

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path), key
        self._checked = False  # the file's last line was checked (and cut when a kill cut it)

    def rows(self) -> dict[str, dict[str, Any]]:
        """The rows already written, by key."""
        self._checked = True
        return {row[self.key]: row for row in read_appended_jsonl(self.path)}

    @contextmanager
    def appending(self) -> Iterator[Callable[[Iterable[dict[str, Any]]], None]]:
        """A function that appends a batch of rows, for as long as the block runs."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._checked:
            self.rows()  # a cut last line goes before anything follows it
        with self.path.open("a", encoding="utf-8") as out:

            def append(rows: Iterable[dict[str, Any]]) -> None:
                out.write("".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows))
                out.flush()
                os.fsync(out.fileno())

            yield append


def read_appended_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file that a resumable job appends to; a last line cut by a kill (not valid JSON, or
    not ended by a newline) is cut off the file, so the job redoes it and its next append starts a fresh line."""
    path = Path(path)
    if not path.exists():
        return []
    rows, good = [], 0
    with path.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good += len(line)
    if good < path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good)
    return rows
