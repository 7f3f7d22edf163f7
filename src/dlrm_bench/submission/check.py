"""`dlrm-bench check-submission`: the project's own checks of a staged v3.0 tree before MLCommons' checker:
layout and required files, system description fields, the rules of every run (seeds, duration, query counts,
latency bound, performance sample count), accuracy targets and truncated logs, compliance verdicts. Each failure
is one line naming its file and value."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from dlrm_bench.errors import UserError
from dlrm_bench.submission import rules
from dlrm_bench.submission.system_json import REQUIRED_FIELDS, value_problems
from dlrm_bench.submission.tree import (ACCURACY_FILES, BENCHMARKS, DIVISIONS, MAX_ACCURACY_LOG_BYTES,
                                        MAX_FILE_BYTES, MEASUREMENT_FILES, PERF_FILES, SCENARIOS,
                                        TEST01_ACCURACY_FILES, TEST01_FALLBACK_FILES, TESTS, Entry, default_output,
                                        system_file)

IMPLEMENTATION_FIELDS = ("input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                         "weight_transformations")
IGNORED_FILES = {"mlperf_log_trace.json", "results.json", ".gitkeep"}


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _files(folder: Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[str]:
    """The folder holds exactly `required` (plus `optional` and the files MLPerf ignores)."""
    if not folder.is_dir():
        return [f"{folder}: missing"]
    present = {p.name for p in folder.iterdir() if p.is_file()}
    missing, extra = sorted(set(required) - present), sorted(present - set(required) - set(optional) - IGNORED_FILES)
    return ([f"{folder}: missing {', '.join(missing)}"] if missing else []) + \
        ([f"{folder}: unexpected {', '.join(extra)}"] if extra else [])


def _json(path: Path) -> tuple[dict, list[str]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, [f"{path}: missing"]
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [f"{path}: not valid JSON ({exc})"]
    return (data, []) if isinstance(data, dict) else ({}, [f"{path}: expected a JSON object"])


def hygiene(root: Path) -> list[str]:
    """What MLPerf refuses anywhere in a tree: links, files over 50 MB, hidden or spaced names, caches, empty
    folders."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                found.append(f"{path}: a symbolic link")
            elif name.startswith(".") or " " in name or name == "__pycache__":
                found.append(f"{path}: a name git or MLPerf refuses")
            elif path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
                found.append(f"{path}: {path.stat().st_size} bytes, over MLPerf's 50 MB")
        if not dirs and not files:
            found.append(f"{folder}: an empty folder")
    return found


def check_system(path: Path, division: str, submitter: str) -> list[str]:
    data, found = _json(path)
    if found:
        return found
    found += [f"{path}: field {key} is missing" for key in REQUIRED_FIELDS if key not in data]
    found += [f"{path}: {key} is '{data.get(key)}', expected '{value}' (its folder)" for key, value in
              (("division", division), ("submitter", submitter)) if str(data.get(key, "")).lower() != value.lower()]
    network = str(data.get("is_network", "False")).lower() == "true"
    if division in ("closed", "network") and network != (division == "network"):
        found.append(f"{path}: is_network is '{data.get('is_network')}', expected "
                     f"'{division == 'network'}' in the {division} division")
    return found + value_problems(data, path)


def check_measurements(entry: Entry) -> list[str]:
    folder = entry.folder("measurements")
    found = [f"{folder}: missing {name}" for name in MEASUREMENT_FILES if not (folder / name).is_file()]
    described = sorted(folder.glob(f"{entry.system}_*_{entry.scenario}.json"))
    if not described:
        return found + [f"{folder}: no {entry.system}_<implementation>_{entry.scenario}.json"]
    data, errors = _json(described[0])
    found += errors + [f"{described[0]}: field {key} is missing" for key in IMPLEMENTATION_FIELDS if key not in data]
    code = entry.root / "code" / entry.benchmark
    target = entry.root / "code" / code.read_text().strip() if code.is_file() else code
    return found + ([] if target.is_dir() else [f"{code}: no code folder for {entry.benchmark}"])


def _verdict(path: Path) -> tuple[bool, list[str]]:
    """(TEST PASS in the file, its problem)."""
    text = path.read_text(errors="replace") if path.is_file() else None
    passed = text is not None and "TEST PASS" in text
    return passed, [] if passed else [f"{path}: {'no TEST PASS' if text is not None else 'missing'}"]


def check_compliance(entry: Entry) -> list[str]:
    found = []
    for test in TESTS:
        folder = entry.compliance(test)
        if not folder.is_dir():
            found.append(f"{folder}: missing (make audit, then stage again)")
            continue
        found += _verdict(folder / "verify_performance.txt")[1]
        run = folder / "performance" / "run_1"
        found += _files(run, PERF_FILES, ("mlperf_log_accuracy.json",))
        found += rules.performance_problems(run / "mlperf_log_detail.txt", test05=test == "TEST05")
        if test == "TEST01":
            passed, problem = _verdict(folder / "verify_accuracy.txt")
            found += problem + _files(folder / "accuracy",
                                      TEST01_ACCURACY_FILES + (() if passed else TEST01_FALLBACK_FILES))
    return found


def check_entry(entry: Entry, closed: bool) -> list[str]:
    found = _files(entry.performance, PERF_FILES, ("mlperf_log_accuracy.json",))
    found += rules.performance_problems(entry.performance / "mlperf_log_detail.txt")
    found += _files(entry.accuracy, ACCURACY_FILES)
    accuracy = rules.accuracy_problems(entry.accuracy / "accuracy.txt", entry.benchmark)
    found += accuracy if closed else [line for line in accuracy if "accuracy:" not in line]  # open: any accuracy
    log = entry.accuracy / "mlperf_log_accuracy.json"
    if log.is_file() and log.stat().st_size > MAX_ACCURACY_LOG_BYTES:
        found.append(f"{log}: {log.stat().st_size} bytes, expected <= {MAX_ACCURACY_LOG_BYTES} (not truncated)")
    return found + check_measurements(entry) + (check_compliance(entry) if closed else [])


def check_submitter(root: Path, division: str) -> list[str]:
    results = root / "results"
    if not results.is_dir():
        return [f"{results}: missing"]
    found = []
    for system in _dirs(results):
        found += check_system(system_file(root, system.name), division, root.name)
        for benchmark in _dirs(system):
            if benchmark.name not in BENCHMARKS.values():
                found.append(f"{benchmark}: not a v3.0 DLRM benchmark (dlrm-99, dlrm-99.9)")
                continue
            names = [p.name for p in _dirs(benchmark)]
            if division == "closed":
                found += [f"{benchmark}: no {s} (the closed division requires Offline and Server)"
                          for s in SCENARIOS if s not in names]
            for scenario in names:
                if scenario not in SCENARIOS:
                    found.append(f"{benchmark / scenario}: not a DLRM datacenter scenario (Offline, Server)")
                    continue
                found += check_entry(Entry(root, system.name, benchmark.name, scenario), division == "closed")
    return found


def check_tree(tree: Path) -> list[str]:
    """Every problem of the submission tree `tree` (holding <division>/<submitter>/)."""
    if not tree.is_dir():
        raise UserError(f"{tree}: no staged submission (make stage_results first, or --input names one)")
    found = hygiene(tree)
    for division in _dirs(tree):
        if division.name not in DIVISIONS:
            found.append(f"{division}: not a division ({', '.join(DIVISIONS)})")
            continue
        for submitter in _dirs(division):
            found += check_submitter(submitter, division.name)
    return found


def main(args: argparse.Namespace) -> int:
    tree = Path(args.input or default_output())
    found = check_tree(tree)
    for line in found:
        print(line)
    print(f"check-submission: {len(found)} problems in {tree}" if found else
          f"check-submission: {tree} meets every v3.0 rule dlrm-bench checks")
    return 1 if found else 0
