"""`dlrm-bench stage-results` (`make stage_results`): the newest runs of a log tree into
`<output>/<division>/<submitter>/`, the MLPerf Inference v3.0 submission layout. What cannot be submitted is listed
first; the command stops there, or stages anyway with --allow-unsubmittable and records each exception in the
staged README. The tree is built beside its final place and swapped in whole."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from dlrm_bench import configs
from dlrm_bench.atomic import atomic_path, save_json, save_text
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.paths import logs_dir, scratch_path
from dlrm_bench.submission import documents as docs
from dlrm_bench.submission.runs import Run, Selection, find_runs, problems
from dlrm_bench.submission.system_json import blank_fields, machine_facts, read_user_file, system_description
from dlrm_bench.submission.tree import (CODE_NAME, DIVISIONS, NETWORK_SUFFIX, PERF_FILES, TEST01_FALLBACK_FILES,
                                        TESTS, TRITON_SUFFIX, Entry, default_output, system_file)
from dlrm_bench.submission.truncate import hash_line, truncate_accuracy_log
from dlrm_bench.system import SystemInfo, detect_system

SUBMITTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
VERIFY_AUC = re.compile(r"^(baseline|compliance)_auc[^=]*= ([\d.]+)%", re.M)


def default_system_file() -> Path:
    return scratch_path() / "submission_system.json"


def _copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise DataError(f"{source}: missing (the run folder is incomplete)")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _copy_logs(run: Run, target: Path) -> None:
    for name in PERF_FILES:
        _copy(run.folder / name, target / name)


def _accuracy(run: Run, target: Path, accuracy_text: str) -> None:
    """The truncated accuracy log, and accuracy.txt with the full log's hash."""
    sha = truncate_accuracy_log(run.folder / "mlperf_log_accuracy.json", target / "mlperf_log_accuracy.json")
    save_text(target / "accuracy.txt", accuracy_text + hash_line(sha))


def _compliance(run: Run, target: Path) -> None:
    """TEST01 / TEST05 as MLCommons' run_verification.py leaves them: verify_*.txt, performance/run_1 and (TEST01)
    accuracy/ with the sampled log; where the accuracy check did not pass, the two AUCs it compared."""
    _copy_logs(run, target / "performance" / "run_1")
    _copy(run.folder / "verify_performance.txt", target / "verify_performance.txt")
    if run.kind != "TEST01":
        return
    _copy(run.folder / "verify_accuracy.txt", target / "verify_accuracy.txt")
    _accuracy(run, target / "accuracy", "")
    verify = (run.folder / "verify_accuracy.txt").read_text(errors="replace")
    aucs = dict(VERIFY_AUC.findall(verify))
    if "TEST PASS" not in verify and len(aucs) == 2:
        for name, which in zip(TEST01_FALLBACK_FILES, ("baseline", "compliance")):
            save_text(target / "accuracy" / name, f"AUC={aucs[which]}%\n")


def _set_flags(result: dict[str, Any], machine: SystemInfo) -> list[str] | None:
    """KEY=VALUE for each setting of the run that differs from this checkout's configs (None: the configs pick
    another system on this machine, so the difference is unknown)."""
    try:
        resolved = configs.resolve(result["scenario"], result["config_ver"], result.get("engine"), machine)
    except UserError:
        return None
    if resolved.system != result.get("system_config"):
        return None
    now = resolved.settings.as_dict()
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}"
            for key, value in result.get("settings", {}).items() if key in now and now[key] != value]


def _measurements(sel: Selection, entry: Entry, machine: SystemInfo) -> None:
    base = sel.runs.get("PerformanceOnly") or sel.runs.get("AccuracyOnly") or sel.any_run()
    result, folder = base.result, entry.folder("measurements")
    save_json(entry.implementation_file(str(result.get("engine"))), docs.implementation_json(result))
    readme = docs.measurement_readme(f"{sel.benchmark} {sel.scenario} on {sel.system}", result,
                                     _set_flags(result, machine))
    save_text(folder / "README.md", readme)
    save_text(folder / "mlperf.conf", docs.mlperf_conf())
    save_text(folder / "user.conf", docs.user_conf(base.folder / "mlperf_log_detail.txt", sel.scenario))
    save_text(folder / "calibration.md", docs.calibration_text(result))


def stage_selection(sel: Selection, root: Path, machine: SystemInfo) -> list[tuple[str, Path]]:
    """Results, compliance and measurements of one (system, benchmark, scenario); returns (tree path, source)."""
    entry = Entry(root, sel.system, sel.benchmark, sel.scenario)
    targets = {"PerformanceOnly": entry.performance, "AccuracyOnly": entry.accuracy,
               **{test: entry.compliance(test) for test in TESTS}}
    staged = []
    for kind, run in sorted(sel.runs.items()):
        if kind == "AccuracyOnly":
            _copy_logs(run, targets[kind])
            _accuracy(run, targets[kind], (run.folder / "accuracy.txt").read_text(errors="replace"))
        elif kind == "PerformanceOnly":
            _copy_logs(run, targets[kind])
        else:
            _compliance(run, targets[kind])
        staged.append((str(targets[kind].relative_to(root)), run.folder))
    _measurements(sel, entry, machine)
    return staged


def build_tree(root: Path, selections: list[Selection], systems: dict[str, dict[str, Any]], machine: SystemInfo,
               exceptions: list[str]) -> None:
    """Everything of a submitter's tree under `root`."""
    staged = [item for sel in selections for item in stage_selection(sel, root, machine)]
    for name, description in systems.items():
        save_json(system_file(root, name), description)
    save_text(root / "code" / CODE_NAME / "README.md", docs.code_readme())
    for benchmark in sorted({sel.benchmark for sel in selections}):
        save_text(root / "code" / benchmark, f"{CODE_NAME}\n")  # the checker follows this file to code/dlrm/
    blanks = sorted({f for d in systems.values() for f in blank_fields(d)})
    save_text(root / "README.md", docs.submitter_readme(staged, exceptions, blanks))


def replace_tree(final: Path, build: Callable[[Path], None]) -> None:
    """Build into a hidden sibling folder, then swap it in for `final` (no half-staged tree is ever left)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp, old = (final.parent / f".{final.name}.{what}-{os.getpid()}" for what in ("staging", "old"))
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            final.parent.rmdir()  # the division folder, when this made it
        raise
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _machine_problems(selections: list[Selection], machine: SystemInfo) -> list[str]:
    systems = sorted({str(sel.any_run().result.get("system")) for sel in selections})
    return [f"{system}: the runs were made on {system}, this machine is {machine.system_id}: its system "
            f"description would describe another machine (stage on the machine of the runs)"
            for system in systems if system != machine.system_id]


def main(args: argparse.Namespace) -> int:
    if args.division not in DIVISIONS:
        raise UserError(f"--division {args.division}: expected one of {', '.join(DIVISIONS)}")
    if not SUBMITTER.fullmatch(args.submitter or ""):
        raise UserError(f"--submitter '{args.submitter}': expected a name of letters, digits, '_', '-' or '.'")
    user = read_user_file(Path(args.system_file or default_system_file()))
    selections, notes = find_runs(Path(args.log_dir or logs_dir()))
    machine = detect_system()
    found = problems(selections, args.division) + _machine_problems(selections, machine)
    for note in notes:
        print(f"note: {note}")
    if found and not args.allow_unsubmittable:
        print("\n".join(["cannot be submitted:"] + [f"  {line}" for line in found]), file=sys.stderr)
        raise UserError(f"{len(found)} reasons these runs cannot be submitted (listed above): fix them, or stage "
                        f"anyway with --allow-unsubmittable (each is then recorded in the staged README)")
    facts = machine_facts(machine, Path(args.log_dir or logs_dir()))
    systems = {name: system_description(user, facts, args.division, args.submitter, TRITON_SUFFIX in name,
                                        name.endswith(NETWORK_SUFFIX))
               for name in sorted({sel.system for sel in selections})}
    final = Path(args.output or default_output()).resolve() / args.division / args.submitter
    try:
        replace_tree(final, lambda root: build_tree(root, selections, systems, machine, found))
    except OSError as exc:
        raise UserError(f"cannot write {exc.filename or final}: {exc.strerror or exc}") from None
    print(f"staged {len(selections)} entries ({', '.join(sel.label for sel in selections)}) into {final}")
    if found:
        print(f"{len(found)} exceptions to the rules staged anyway: listed in {final / 'README.md'}")
    return 0
