"""`dlrm-bench`: argument parsing only. Each subcommand hands its arguments to one function elsewhere.

A `UserError` from any command is printed as one line on stderr and exits with status 2; Ctrl-C exits 130.
Long steps (preprocess, generate-data, generate-engines, make-random-preset, train) first pass a preflight
check of free disk and RAM (dlrm_bench.preflight).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Callable, Sequence

from dlrm_bench.errors import exit_status

SCALES = ("tiny", "small", "full-day")


def _number(kind: type, minimum: float, what: str) -> Callable[[str], float]:
    """An argparse type: `kind` (int or float) at least `minimum`; argparse turns the ValueError into a one-line
    usage error naming the flag."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if not value >= minimum:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected {what}, found {text}")
        return value
    return parse


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="auto",
                   help="terabyte, synthetic-tiny, synthetic-small, synthetic-full-day, criteo-tb-random, or auto "
                        "(terabyte when real data is present, else synthetic-tiny)")
    p.add_argument("--dataset-dir", type=Path, default=None,
                   help="a preprocessed dataset folder (overrides --dataset's default location)")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint (.pt); default: build/models/dlrm/<tb00_40M|dataset>.pt")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The flags of `run` (shared with `audit`, so both take the same RUN_ARGS)."""
    _add_dataset_args(p)
    p.add_argument("--benchmarks", default="dlrm")
    p.add_argument("--scenarios", default="Offline", help="Offline, Server, SingleStream, comma-separated")
    p.add_argument("--config_ver", "--config-ver", dest="config_ver", default="default",
                   help="default, high_accuracy, triton, high_accuracy_triton, comma-separated")
    p.add_argument("--test_mode", "--test-mode", dest="test_mode", default="PerformanceOnly,AccuracyOnly",
                   help="PerformanceOnly, AccuracyOnly, comma-separated")
    p.add_argument("--engine", default=None, help="reference, cpu or cuda (default: the fastest this machine has)")
    p.add_argument("--min_duration", "--min-duration", dest="min_duration", default=None,
                   type=_number(float, 0, "seconds >= 0"),
                   help="seconds (MLPerf: 600); shorter runs are marked as such in the summary")
    p.add_argument("--min_query_count", "--min-query-count", dest="min_query_count", default=None,
                   type=_number(int, 1, "an integer >= 1"), help="queries (Offline: samples in the one query)")
    p.add_argument("--server_target_qps", "--server-target-qps", dest="server_target_qps", default=None,
                   type=_number(float, 1e-3, "samples/s > 0"))
    p.add_argument("--offline_expected_qps", "--offline-expected-qps", dest="offline_expected_qps", default=None,
                   type=_number(float, 1e-3, "samples/s > 0"))
    p.add_argument("--log_dir", "--log-dir", dest="log_dir", type=Path, default=None,
                   help="root of the log tree (default: build/logs)")
    p.add_argument("--config", type=Path, default=None,
                   help="a scenario config.json to use instead of configs/dlrm/<Scenario>/config.json")
    p.add_argument("--no-user-settings", dest="no_user_settings", action="store_true",
                   help="ignore this machine's user settings file (written by find-peak)")
    p.add_argument("--sut", choices=("local", "network", "network_ranges"), default=None,
                   help="network: LoadGen's QDL sends queries to `dlrm-bench serve` nodes (Network division); "
                        "network_ranges: row ranges of the nodes' own data (open division); default: the config's")
    p.add_argument("--endpoints", default=None, help="the nodes' gRPC endpoints, HOST:PORT,HOST:PORT")
    p.add_argument("--verify", action="store_true",
                   help="check the full sha256 of the int8 engine files and calibration cache before the runs "
                        "(every start checks their sizes and sampled blocks)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="one setting for this run (docs/configuration.md; VALUE parsed as JSON), repeatable, "
                        "e.g. --set gpu_num_bundles=4 --set embedding_weights_on_gpu_part=0.2")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlrm-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate-data", help="write synthetic Criteo-format raw day files")
    p.add_argument("--scale", choices=SCALES, default="tiny")
    p.add_argument("--output", type=Path, default=None, help="default: build/data/criteo_synthetic_<scale>/")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--days", type=int, default=None, help="number of day files (default: per scale)")
    p.add_argument("--rows-per-day", type=int, default=None, help="rows per day (default: per scale)")
    p.add_argument("--gzip", action="store_true", help="write day_k.gz instead of plain text")
    p.add_argument("--click-rate", type=float, default=None, help="target click rate (default: per scale)")
    p.set_defaults(func="dlrm_bench.criteo.synthetic:main")

    p = sub.add_parser("preprocess", help="raw days -> MLPerf artifacts (docs/FORMATS.md)")
    p.add_argument("--raw-dir", type=Path, default=None, help="folder of day_k[.gz] files")
    p.add_argument("--output", type=Path, default=None, help="preprocessed folder (default per --name)")
    p.add_argument("--name", default="terabyte", help="dataset name written to meta.json")
    p.add_argument("--max-ind-range", type=int, default=40_000_000)
    p.add_argument("--skip-bad-rows", action="store_true", help="count and report malformed rows instead of failing")
    p.add_argument("--workers", type=int, default=None, help="parallel day workers (default: cores)")
    p.add_argument("--compress", action="store_true", help="also write categorical_int32_compressed.npy")
    p.add_argument("--quantile-file", type=Path, default=None, help="dist_quantile.txt for the aggregation trace")
    p.set_defaults(func="dlrm_bench.criteo.preprocess:main")

    p = sub.add_parser("make-partition", help="write sample_partition.npy and the reference trace for N pairs")
    p.add_argument("--num-pairs", type=int, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--quantile-file", type=Path, default=None)
    p.set_defaults(func="dlrm_bench.criteo.partition:main")

    p = sub.add_parser("make-random-preset",
                       help="criteo-tb-random: full-size synthetic test set and random int8 model, written directly")
    p.add_argument("--what", choices=("all", "data", "model"), default="all")
    p.add_argument("--output", type=Path, default=None, help="dataset folder (default: preprocessed_data/criteo/"
                                                              "criteo-tb-random)")
    p.add_argument("--model-output", type=Path, default=None, help="model folder (default: models/dlrm/"
                                                                    "criteo-tb-random)")
    p.add_argument("--num-pairs", type=int, default=None, help="test pairs (default 89,137,319)")
    p.add_argument("--calibration-rows", type=int, default=None)
    p.add_argument("--cardinalities", default=None, help="26 comma-separated table sizes (default: Criteo TB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--quantile-file", type=Path, default=None)
    p.add_argument("--force", action="store_true", help="regenerate even if complete files exist")
    p.set_defaults(func="dlrm_bench.random_preset:main")

    p = sub.add_parser("check-data", help="check that the 24 raw day files are present")
    p.add_argument("--raw-dir", type=Path, default=None)
    p.set_defaults(func="dlrm_bench.criteo.download:main")

    p = sub.add_parser("train", help="train the DLRM on the preprocessed training days (CPU)")
    _add_dataset_args(p)
    p.add_argument("--output", type=Path, default=None, help="checkpoint path (default: the --model default)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=None, help="stop after this many training rows")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 only where the CPU has native bf16 (AVX512-BF16 / AMX), else fp32")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: tuned while training)")
    p.add_argument("--max-eval-rows", type=int, default=None, help="score at most this many test rows")
    p.set_defaults(func="dlrm_bench.model.train:main")

    p = sub.add_parser("run", help="run the benchmark through LoadGen (what `make run` calls)")
    _add_run_args(p)
    p.add_argument("--audit", type=Path, default=None, help="an audit.config for compliance tests")
    p.set_defaults(func="dlrm_bench.harness.runner:main")

    p = sub.add_parser("find-peak", help="the highest Server target that comes out VALID here (or Offline's "
                                         "expected QPS), written to this machine's user settings file")
    _add_run_args(p)
    p.set_defaults(scenarios="Server", test_mode="PerformanceOnly")
    p.add_argument("--margin", type=float, default=0.03,
                   help="Server: the target written is the highest VALID one less this fraction; Offline: the "
                        "measured samples/s plus it (default 0.03)")
    p.add_argument("--tolerance", type=float, default=0.02, help="stop when VALID and INVALID targets are this "
                                                                 "close (fraction, default 0.02)")
    p.add_argument("--start", type=float, default=None, help="first Server target (default: the config's)")
    p.add_argument("--max-steps", dest="max_steps", type=int, default=12, help="most runs in the search")
    p.set_defaults(func="dlrm_bench.harness.find_peak:main")

    p = sub.add_parser("audit", help="MLPerf compliance tests TEST01 / TEST05 with the same flags as `run`")
    _add_run_args(p)
    p.add_argument("--test", default="TEST01,TEST05", help="TEST01, TEST05, comma-separated")
    p.add_argument("--results", type=Path, default=None,
                   help="a log folder holding the PerformanceOnly / AccuracyOnly runs to compare against "
                        "(default: run them now, into the same log folder)")
    p.set_defaults(func="dlrm_bench.compliance:main")

    p = sub.add_parser("report", help="one results table over every run in a log folder (+ plots)")
    p.add_argument("log_dir", type=Path, nargs="?", default=None, help="default: build/logs/latest")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="do not (re)draw missing plots")
    p.set_defaults(func="dlrm_bench.report:main")

    p = sub.add_parser("stage-results", help="stage the newest runs into an MLPerf v3.0 submission tree "
                                             "(docs/submission.md)")
    p.add_argument("--submitter", required=True, help="the submitting organization (folder name)")
    p.add_argument("--division", required=True, choices=("closed", "open", "network"))
    p.add_argument("--log-dir", "--log_dir", dest="log_dir", type=Path, default=None,
                   help="the runs to stage (default: build/logs)")
    p.add_argument("--output", type=Path, default=None, help="submission root (default: build/submission)")
    p.add_argument("--system-file", type=Path, default=None,
                   help="the system facts only you know (default: build/submission_system.json; template on first use)")
    p.add_argument("--allow-unsubmittable", action="store_true",
                   help="stage runs that break the rules anyway, each exception recorded in the staged README")
    p.set_defaults(func="dlrm_bench.submission.stage:main")

    p = sub.add_parser("check-submission", help="dlrm-bench's own checks of a staged submission tree")
    p.add_argument("--input", type=Path, default=None, help="submission root (default: build/submission)")
    p.set_defaults(func="dlrm_bench.submission.check:main")

    p = sub.add_parser("run-submission-checker", help="MLCommons' v3.0 submission checker on the staged tree")
    p.add_argument("--checker", type=Path, default=None,
                   help="tools/submission/submission_checker.py of the mlcommons/inference repository at tag v3.0 "
                        "(or the checkout's folder)")
    p.add_argument("--input", type=Path, default=None, help="submission root (default: build/submission)")
    p.add_argument("--submitter", default=None, help="check only this submitter")
    p.set_defaults(func="dlrm_bench.submission.official:main")

    p = sub.add_parser("download-model", help="fetch tb00_40M.pt (resumable, MD5-checked)")
    p.add_argument("--url", default=None, help="default: MLCommons' public URL of tb00_40M.pt")
    p.add_argument("--output", type=Path, default=None, help="default: build/models/dlrm/tb00_40M.pt")
    p.add_argument("--md5", default=None, help="expected MD5 (default: tb00_40M.pt's)")
    p.add_argument("--retries", type=int, default=5, help="automatic resumes after a dropped connection")
    p.add_argument("--force", action="store_true", help="replace an existing file that is not the expected one")
    p.set_defaults(func="dlrm_bench.download:main")

    p = sub.add_parser("serve", help="serve the engine through a Triton Inference Server until Ctrl-C "
                                     "(README: request format, client example)")
    _add_dataset_args(p)
    p.add_argument("--engine", default=None, help="reference, cpu or cuda (default: the config's, else the fastest)")
    p.add_argument("--config_ver", "--config-ver", dest="config_ver", default="triton",
                   help="triton or high_accuracy_triton (engine settings from the config)")
    p.add_argument("--scenario", default="Server", help="whose config.json settings to use (default Server)")
    p.add_argument("--config", type=Path, default=None,
                   help="a scenario config.json to use instead of configs/dlrm/<Scenario>/config.json")
    p.add_argument("--inputs", choices=("rows", "ranges"), default="rows",
                   help="rows: clients send NUMERIC/CATEGORICAL features; ranges: clients send ROW_RANGES of the "
                        "server's test split")
    p.add_argument("--listen", "--host", dest="host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)")
    p.add_argument("--node-name", dest="node_name", default=None,
                   help="this node's name in a network SUT, unique per node (default HOST:GRPC_PORT)")
    p.add_argument("--grpc-port", type=int, default=8001, help="0 = any free port; in use = error")
    p.add_argument("--http-port", type=int, default=8000, help="0 = any free port, -1 = no HTTP")
    p.add_argument("--metrics-port", type=int, default=-1, help="Prometheus metrics (-1 = off, 0 = any free)")
    p.add_argument("--max-batch-pairs", type=int, default=None, help="pairs per engine batch (default: batch_size)")
    p.add_argument("--instances", type=int, default=None, help="model instances per device (default 1)")
    p.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for the model")
    p.add_argument("--workdir", type=Path, default=None,
                   help="model repository and server log (default: build/triton/serve-<time>)")
    p.set_defaults(func="dlrm_bench.triton_server.serve:main")

    p = sub.add_parser("generate-engines", help="split the checkpoint into int8 tables + MLP file (reused if current)")
    _add_dataset_args(p)
    p.add_argument("--benchmarks", default="dlrm")
    p.add_argument("--verify", action="store_true",
                   help="hash every byte of the engine files and calibration cache (default: size + sampled blocks)")
    p.set_defaults(func="dlrm_bench.quant.artifacts:generate_engines_main")

    p = sub.add_parser("calibrate", help="write the calibration cache (activation ranges) for the int8 engines")
    _add_dataset_args(p)
    p.add_argument("--benchmarks", default="dlrm")
    p.set_defaults(func="dlrm_bench.quant.artifacts:calibrate_main")

    p = sub.add_parser("accuracy", help="score an mlperf_log_accuracy.json (AUC with scikit-learn)")
    _add_dataset_args(p)
    p.add_argument("--log", type=Path, required=True)
    p.set_defaults(func="dlrm_bench.accuracy:main")

    return parser


def _resolve(target: str) -> Callable[[argparse.Namespace], int | None]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _flags_as_settings(args: argparse.Namespace) -> None:
    """--sut and --endpoints are the settings `sut` and `network_endpoints` (after the config files and --set)."""
    for flag, key in (("sut", "sut"), ("endpoints", "network_endpoints")):
        if getattr(args, flag, None) is not None:
            args.settings = [*args.settings, f"{key}={getattr(args, flag)}"]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _flags_as_settings(args)

    def command() -> int | None:
        _resolve("dlrm_bench.preflight:run")(args)
        return _resolve(args.func)(args)

    return exit_status(f"dlrm-bench {args.command}", command)


if __name__ == "__main__":
    sys.exit(main())
