"""Which Python lines the threads were on when the harness stalled: a count over a run's stall_traces.txt.

    python3 benchmarks/stall_traces.py build/logs/latest/.../stall_traces.txt [--top 15]

A run with `--set stall_trace_ms=N` writes faulthandler's dump of every Python thread each time no thread could
run for N ms (harness/sut.py). Each dump lists every thread's stack, most recent call first. This counts, over all
dumps, each thread's innermost frame ("file:line in function"), so the line a GIL-holding thread was calling
from stands out beside the threads that were only waiting (threading.py's waits, the watchdog itself).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<function>\S+)')


def innermost_frames(text: str) -> tuple[int, Counter[str]]:
    """(dumps, Counter of each thread's innermost frame over all dumps) of a faulthandler file."""
    dumps = 0
    frames: Counter[str] = Counter()
    expect_frame = False
    for line in text.splitlines():
        if line.startswith("Timeout ("):
            dumps += 1
        elif line.startswith(("Thread 0x", "Current thread 0x")):
            expect_frame = True
        elif expect_frame and (match := FRAME.match(line)):
            frames[f"{Path(match['file']).name}:{match['line']} in {match['function']}"] += 1
            expect_frame = False
    return dumps, frames


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces", type=Path)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    try:
        text = args.traces.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"stall_traces.py: error: cannot read {args.traces}: {exc.strerror}", file=sys.stderr)
        return 2
    dumps, frames = innermost_frames(text)
    if dumps == 0:
        print(f"stall_traces.py: error: {args.traces} holds no faulthandler dump ('Timeout (...)!' lines)",
              file=sys.stderr)
        return 2
    print(f"{dumps} stalls; innermost frame of each thread, most frequent first:")
    for frame, count in frames.most_common(args.top):
        print(f"{count:6d}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
