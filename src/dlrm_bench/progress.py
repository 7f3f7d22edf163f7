"""Progress bars for long steps that behave in a log: a live bar on a terminal; where stderr is a file or a pipe,
a plain line at most every LOG_INTERVAL_S seconds instead of a carriage-return redraw at every update."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream for tqdm that turns its redraws into whole lines (and drops the blank ones it erases with)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """tqdm(*args, **kwargs) on stderr; not on a terminal: a line every LOG_INTERVAL_S seconds at most."""
    stream = sys.stderr
    if not kwargs.get("disable") and not stream.isatty():
        kwargs.update(file=_Lines(stream), mininterval=LOG_INTERVAL_S, ascii=True, ncols=100)
    return tqdm(*args, **kwargs)
