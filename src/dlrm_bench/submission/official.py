"""`dlrm-bench run-submission-checker` (`make run_submission_checker`): MLCommons' own submission checker, round
v3.0, on the staged tree, from a checkout of the mlcommons/inference repository that the user names."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from dlrm_bench.errors import UserError
from dlrm_bench.submission.tree import default_output

CHECKER = Path("tools") / "submission" / "submission_checker.py"
WHERE = ("git clone --depth 1 --branch v3.0 https://github.com/mlcommons/inference mlperf-inference-v3.0, then "
         "make run_submission_checker RUN_ARGS=\"--checker mlperf-inference-v3.0/" + str(CHECKER) + "\"")


def checker_path(given: Path | None) -> Path:
    """The checker script: `given` itself, or tools/submission/submission_checker.py under a checkout."""
    if given is None:
        raise UserError(f"no --checker given: MLCommons' v3.0 checker is {CHECKER} of the inference repository at "
                        f"tag v3.0 (DLRM v1's last round): {WHERE}")
    path = given / CHECKER if given.is_dir() else given
    if not path.is_file():
        raise UserError(f"{path}: no such file (--checker names submission_checker.py or a checkout); {WHERE}")
    if '"v3.0"' not in path.read_text(errors="replace"):
        raise UserError(f"{path}: this checker knows no round v3.0: use the one at tag v3.0; {WHERE}")
    return path


def main(args: argparse.Namespace) -> int:
    checker = checker_path(args.checker)
    tree = Path(args.input or default_output()).resolve()
    if not any(tree.glob("*/*/results")):
        raise UserError(f"{tree}: no staged submission (make stage_results first, or --input names one)")
    command = [sys.executable, str(checker.resolve()), "--input", str(tree), "--version", "v3.0",
               "--csv", str(tree / "submission_checker_summary.csv")]
    command += ["--submitter", args.submitter] if args.submitter else []
    print(f"running: {shlex.join(command)}", flush=True)
    status = subprocess.run(command, cwd=tree).returncode
    print(f"MLCommons' v3.0 submission checker: {'no errors' if status == 0 else f'errors (exit status {status})'}")
    return status
