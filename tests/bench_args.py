"""What the benchmark-argument tests share."""

from __future__ import annotations

import sys
from typing import Callable

import pytest


def refusal(main: Callable[[], int], argv: list[str], monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> str:
    """Run a benchmark's main() with `argv` (script name first), expect argparse's refusal (exit status 2) and
    return what it printed on stderr."""
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    return capsys.readouterr().err
