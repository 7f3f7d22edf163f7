"""`dlrm-bench find-peak`: the highest Server target that comes out VALID on this machine (or Offline's expected
QPS), written to the machine's user settings file (user_settings.py) that later runs apply.

Server: short PerformanceOnly runs in a search (PeakSearch): from the configured target, up by `grow` while VALID
(down while INVALID) until a VALID and an INVALID target bracket the peak, then the geometric middle until the
bracket is within `tolerance`. The setting written is the highest VALID target less `margin`. Each step is an
ordinary run of the harness (same SUT, settings, log tree), so every step's p99 and LoadGen verdict are kept; LoadGen's own
FindPeakPerformance mode was not used: it searches inside one test call without reporting steps, offers no margin,
and covers Server only.
Offline: one run; the expected QPS written is the measured samples/s plus `margin`, so the one query lasts at least
min_duration on a machine up to `margin` faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from dlrm_bench import configs
from dlrm_bench.errors import UserError
from dlrm_bench.harness.runner import EngineCache, check_run_settings, make_context, resolve_run_settings, \
    run_and_report, run_one
from dlrm_bench.paths import REPO_ROOT
from dlrm_bench.user_settings import record_entry, user_settings_path


STEP_SECONDS = 60.0
"""Each step's LoadGen duration unless --min_duration says otherwise (the synthetic datasets: their short runs)."""


@dataclass
class PeakSearch:
    """Bracket-then-bisect over a target: next() proposes, record() takes the verdict."""

    start: float
    tolerance: float = 0.02
    grow: float = 1.25
    max_steps: int = 12
    steps: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def best(self) -> float | None:
        """The highest VALID target so far."""
        return max((t for t, ok in self.steps if ok), default=None)

    @property
    def lowest_invalid(self) -> float | None:
        return min((t for t, ok in self.steps if not ok), default=None)

    def next(self) -> float | None:
        """The next target to run, or None when done (bracket within tolerance, or max_steps run)."""
        if len(self.steps) >= self.max_steps:
            return None
        if not self.steps:
            return self.start
        valid, invalid = self.best, self.lowest_invalid
        if invalid is None:
            return valid * self.grow
        if valid is None:
            return invalid / self.grow
        if invalid <= valid * (1 + self.tolerance):
            return None
        return math.sqrt(valid * invalid)

    def record(self, target: float, valid: bool) -> None:
        self.steps.append((target, valid))


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _server_steps(ctx: Any, engines: EngineCache, args: argparse.Namespace, config_ver: str,
                  search: PeakSearch) -> Iterator[dict[str, Any]]:
    base = ctx.overrides
    while (target := search.next()) is not None:
        ctx.overrides = dataclasses.replace(base, server_target_qps=round(target, 1))
        result = run_one(ctx, engines, args, "Server", config_ver, "PerformanceOnly",
                         label=f"find_peak_{len(search.steps) + 1}")
        search.record(ctx.overrides.server_target_qps, bool(result.get("result_valid")))
        p99 = result.get("latency_p99_ms")
        print(f"find-peak step {len(search.steps)}: {target:,.1f} samples/s -> {result['result']}"
              f"{'' if p99 is None else f' (p99 {p99:.2f} ms)'}", flush=True)
        yield result
    ctx.overrides = base


def main(args: argparse.Namespace) -> int:
    scenario = configs.parse_choices(args.scenarios, ("Offline", "Server"), "find-peak scenario")[0]
    config_ver = configs.parse_choices(args.config_ver, configs.CONFIG_VERS, "config_ver")[0]
    if not 0 <= args.margin < 0.5:
        raise UserError(f"--margin {args.margin}: expected a fraction in [0, 0.5)")
    check_run_settings(args, [scenario], [config_ver])
    ctx = make_context(args)
    if ctx.overrides.min_duration_s is None:  # not MLPerf's 600 s per step
        ctx.overrides = dataclasses.replace(ctx.overrides, min_duration_s=STEP_SECONDS)
    settings = resolve_run_settings(args, scenario, config_ver, ctx.system).settings
    started = time.monotonic()
    search = PeakSearch(args.start or settings.server_target_qps, args.tolerance, max_steps=args.max_steps)
    if scenario == "Server":
        results = run_and_report(ctx, lambda engines: _server_steps(ctx, engines, args, config_ver, search))
        if search.best is None:
            raise UserError(f"no Server target came out VALID (lowest tried {min(t for t, _ in search.steps):,.1f} "
                            f"samples/s); try --start lower")
        found = {"server_target_qps": round(search.best * (1 - args.margin), 1)}
    else:
        results = run_and_report(ctx, lambda engines: iter([run_one(ctx, engines, args, "Offline", config_ver,
                                                                    "PerformanceOnly", label="find_peak_1")]))
        found = {"offline_expected_qps": round(results[0]["samples_per_second"] * (1 + args.margin), 1)}
        search.record(settings.offline_expected_qps, bool(results[0].get("result_valid")))
    path = user_settings_path(ctx.system.system_id)
    record_entry(path, scenario, config_ver, settings.engine, found, {
        "date": time.strftime("%Y-%m-%d"), "commit": _commit(), "dataset": ctx.meta.name, "margin": args.margin,
        "step_seconds": results[0]["loadgen_settings"]["min_duration_ms"] / 1000,
        "search_seconds": round(time.monotonic() - started), "logs": str(ctx.root),
        "steps": [[t, ok] for t, ok in search.steps]})
    name, value = next(iter(found.items()))
    print(f"\nfind-peak: {scenario} {config_ver} ({settings.engine} engine): {name} = {value:,.1f} written to {path} "
          f"({round(time.monotonic() - started)} s); later runs on this machine use it (--no-user-settings: not)")
    return 0
