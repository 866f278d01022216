"""Errors a user can cause, and how the entry points report them: one message, exit code 1.

An exception that subclasses :class:`UserError` names the key, file, column or row at fault and what was
expected; the entry points print it alone. A full disk or a path the user may not write is the user's to
fix too, and is reported the same way with the path named. Anything else is our bug and keeps its
traceback, as does a user error when ``HYDRA_FULL_ERROR=1`` or ``debug=true`` is set.

A stop asked for from outside (SIGTERM from a scheduler, SIGINT from Ctrl-C) is not a failure of ours either: it
ends with one line saying where the work was (:func:`note_progress`) and how to resume it (:func:`resume_with`),
and the exit status a shell gives a process that signal ended (128 + its number), never 0.
"""

from __future__ import annotations

import errno
import functools
import os
import shlex
import signal
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's configuration or data, explained by its message."""


class ConfigError(UserError, ValueError):
    """A setting out of its range, settings that contradict each other, or one that is missing."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or directory the run needs is not there."""


class ForeignOutputError(UserError, FileExistsError):
    """An output directory that holds something else: ehrr1 never overwrites what it did not write."""


class BusyOutputError(UserError):
    """An output folder another running process is writing (one writer per folder)."""


class ModelLoadError(UserError, OSError):
    """A model or tokenizer that cannot be loaded from where the config points."""


class DataError(UserError, ValueError):
    """A file whose content is not what was expected (named with its line or column)."""


class FailedWorkError(UserError):
    """Work finished with parts that failed (recorded as failures, retried by a re-run): the run is not a success."""


class Interrupted(BaseException):
    """SIGTERM arrived: raised where the main thread is, as SIGINT raises KeyboardInterrupt, so every write in
    progress is undone by the same ``finally`` blocks."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def shown(text: str) -> str:
    """``text`` for a message, with characters a reader cannot see (controls, zero-width and other format
    characters, separators other than a space) written as escapes: ``'a\\u200bb'``."""
    out = []
    for char in str(text):
        visible = char == " " or unicodedata.category(char)[0] not in "CZ"
        out.append(char if visible else char.encode("unicode_escape").decode("ascii"))
    return "'" + "".join(out) + "'"


_PROGRESS: list[str] = []  # where the work is, for the line an interruption ends with
_RESUME: list[str] = []  # the command that resumes it (default: the same command again)


def note_progress(where: str) -> None:
    """Say where the work is ("stage reasoning, step 40"): an interruption names it."""
    _PROGRESS[:] = [where]


def resume_with(command: str) -> None:
    """The command that resumes this run, when it is not the same command again (``train.py resume=<run>``)."""
    _RESUME[:] = [command]


def _same_command() -> str:
    return " ".join(["python", *map(shlex.quote, [os.path.basename(sys.argv[0]), *sys.argv[1:]])])


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def interruption_message(exc: BaseException) -> tuple[str, int]:
    """The line an interrupted run ends with, and its exit status (128 + the signal's number)."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    where = f" at {_PROGRESS[0]}" if _PROGRESS else ""
    command = _RESUME[0] if _RESUME else _same_command()
    return (
        f"interrupted by {signal.Signals(signum).name}{where}; nothing half-written was kept. Resume with: {command}",
        128 + signum,
    )


# errno values whose fix is the user's (space, permissions), with what to say about them
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or the process's file-size limit",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a file stands where a folder of the path is needed",
}


def environment_message(exc: OSError) -> str | None:
    """One line for a full disk, a denied path or a file where a folder must be (naming it), or None for any
    other OSError."""
    code = exc.errno or 0
    if code == errno.EEXIST and exc.filename and os.path.exists(exc.filename) and not os.path.isdir(exc.filename):
        code = errno.ENOTDIR  # mkdir(exist_ok=True) of a path that is a file
    what = _ENVIRONMENT_ERRORS.get(code)
    if what is None:
        return None
    paths = [p for p in (exc.filename, exc.filename2) if p]
    where = f" ({' -> '.join(map(str, paths))})" if paths else ""
    return f"{what}{where}: free space or choose a writable location (data_root, run_dir, output_dir)"


def _debugging(args: tuple[Any, ...]) -> bool:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return True
    cfg = args[0] if args else None
    try:
        return bool(cfg.get("debug", False))  # type: ignore[union-attr]
    except Exception:  # not a config: no debug switch
        return False


def check_output_folder(argv: list[str], default: str) -> None:
    """Hydra makes the run's folder (``hydra.run.dir``, default ``default``) before any code of ours runs, and
    reports a file in its way or a folder it may not write with a traceback: say it in one line first."""
    if any(arg.startswith("-") for arg in argv):  # --help, --cfg job, --multirun: Hydra's own ways
        return
    given = {k: v for k, _, v in (arg.partition("=") for arg in argv) if k in ("hydra.run.dir", "hydra.sweep.dir")}
    for key, value in (given or {"hydra.run.dir": default}).items():
        folder = Path(value.split("${")[0] or ".")
        for part in [folder, *folder.parents]:
            if not part.exists():
                continue
            if not part.is_dir():
                problem = f"{part} is a file, not a folder"
            elif not os.access(part, os.W_OK | os.X_OK):
                problem = f"{part} cannot be written"
            else:
                break
            print(f"error: {key}={value}: {problem}; Hydra keeps each run's config and log there: choose another "
                  f"{key}", file=sys.stderr)  # fmt: skip
            raise SystemExit(1)


def report_user_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point's task function: a user's mistake ends it with ``error: <message>``, exit 1; SIGTERM
    or SIGINT with one line saying where the work was and how to resume it, exit 128 + the signal's number."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        _PROGRESS.clear()
        _RESUME.clear()
        before = signal.signal(signal.SIGTERM, _raise_interrupted)
        try:
            return main(*args, **kwargs)
        except (KeyboardInterrupt, Interrupted) as exc:
            if _debugging(args):
                raise
            message, status = interruption_message(exc)
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(status) from None
        except UserError as exc:
            if _debugging(args):
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except OSError as exc:
            message = environment_message(exc)
            if message is None or _debugging(args):
                raise
            print(f"error: {message}", file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            signal.signal(signal.SIGTERM, before)

    return wrapper
