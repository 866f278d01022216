"""Errors a user can cause, and how the entry points report them: one message, exit code 1.

An exception that subclasses :class:`UserError` names the key, file, column or row at fault and what was
expected; the entry points print it alone. A full disk or a path the user may not write is the user's to
fix too, and is reported the same way with the path named. Anything else is our bug and keeps its
traceback, as does a user error when ``HYDRA_FULL_ERROR=1`` or ``debug=true`` is set.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
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


class ModelLoadError(UserError, OSError):
    """A model or tokenizer that cannot be loaded from where the config points."""


class DataError(UserError, ValueError):
    """A file whose content is not what was expected (named with its line or column)."""


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


def report_user_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point's task function: a user's mistake ends it with ``error: <message>``, exit 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
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

    return wrapper
