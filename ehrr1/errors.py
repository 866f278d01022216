"""Errors a user can cause, and how the entry points report them: one message, exit code 1.

An exception that subclasses :class:`UserError` names the key, file, column or row at fault and what was
expected; the entry points print it alone. Anything else is our bug and keeps its traceback, as does a
user error when ``HYDRA_FULL_ERROR=1`` is set.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's configuration or data, explained by its message."""


def report_user_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap an entry point's task function: a :class:`UserError` ends it with ``error: <message>``, exit 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper
