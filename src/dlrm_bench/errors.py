"""User-facing errors.

Anything the user can fix (a missing file, a malformed row, a bad flag) raises `UserError`; the CLI prints its
message on one line and exits with status 2, never with a traceback.
"""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """An error caused by input, configuration or environment, with a message that says how to fix it."""


class DataError(UserError):
    """Malformed input data: the message names the file, the line or row, and the field."""


def exit_status(label: str, call: Callable[[], int | None]) -> int:
    """Run `call`; a UserError or Ctrl-C becomes one line on stderr ("<label>: error: ...", "<label>:
    interrupted") and exit status 2 or 130 instead of a traceback."""
    try:
        return int(call() or 0)
    except UserError as exc:
        print(f"{label}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{label}: interrupted", file=sys.stderr)
        return 130
