"""User-facing errors.

Anything the user can fix (a missing file, a malformed row, a bad flag) raises `UserError`; the CLI prints its
message on one line and exits with status 2, never with a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input, configuration or environment, with a message that says how to fix it."""


class DataError(UserError):
    """Malformed input data: the message names the file, the line or row, and the field."""
