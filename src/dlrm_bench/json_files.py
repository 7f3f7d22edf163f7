"""Reading the JSON files a user may have edited: one-line errors naming the file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlrm_bench.errors import DataError, UserError


def read_json_object(path: Path, what: str = "file") -> dict[str, Any]:
    """The JSON object in `path`; a UserError (DataError for bad content) naming the file and what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise DataError(f"{path}: not valid JSON ({where})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top, found a {type(data).__name__}")
    return data
