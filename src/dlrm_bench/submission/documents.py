"""The texts of a submission tree that are not LoadGen logs: the measurements folder (implementation JSON,
README with the commands, user.conf and mlperf.conf, calibration), the code pointer and the submitter README."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

from dlrm_bench.inputs import REAL_MODEL, default_model_path
from dlrm_bench.loadgen_logs import read_detail_log
from dlrm_bench.mlperf_rules import load_rules, round_name
from dlrm_bench.paths import REPO_ROOT, preprocessed_dir

INT8_DESCRIPTION = {
    "input_data_types": "int8 dense features (log1p(x) * 127 / 14.2313, truncated), int32 categorical ids",
    "weight_data_types": "int8",
    "weight_transformations": "embedding tables quantized per table (scale max|W| / 127.5, clipped to +-127); MLP "
                              "weights and activations quantized to int8 with ranges from the calibration set"}
FP32_DESCRIPTION = {"input_data_types": "fp32 dense features (log1p), int32 categorical ids",
                    "weight_data_types": "fp32", "weight_transformations": "none"}
CALIBRATION = ("# Calibration\n\nThe int8 engines quantize with activation ranges that the FP32 model measures on the "
               "dataset's calibration split (MLPerf's: the 128,000 rows of day 23 after the test set; `make calibrate`"
               " writes, per quantized tensor, the maximum |value| per channel). Embedding tables are quantized per "
               "table with scale max|W| / 127.5. No retraining; nothing of the test set is used.\n")


def git_commit() -> tuple[str, str]:
    """(commit, remote URL or '') of the checkout this package runs from; commit 'unknown' outside git."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""
    commit = git("rev-parse", "HEAD") or "unknown"
    if commit != "unknown" and git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return commit, git("remote", "get-url", "origin")


def implementation_json(result: dict[str, Any]) -> dict[str, Any]:
    """measurements/.../<system>_<implementation>_<Scenario>.json: what the checker requires, and the run's facts."""
    int8 = str(result.get("engine_info", {}).get("precision", "int8")).startswith("int8")
    model = Path(result.get("model_path", ""))
    return {**(INT8_DESCRIPTION if int8 else FP32_DESCRIPTION), "starting_weights_filename": model.name,
            "retraining": "No" if model.name == REAL_MODEL else f"not MLPerf's {REAL_MODEL}: {model.name}",
            "dataset": result.get("dataset"), "engine": result.get("engine"), "device": result.get("device"),
            "dlrm_bench_settings": result.get("settings", {})}


def calibration_text(result: dict[str, Any]) -> str:
    int8 = str(result.get("engine_info", {}).get("precision", "int8")).startswith("int8")
    return CALIBRATION if int8 else "# Calibration\n\nNone: the FP32 reference engine does not quantize.\n"


def mlperf_conf() -> str:
    """The round's LoadGen rules for dlrm, in mlperf.conf's format (dlrm-bench sets each on LoadGen's
    TestSettings; configs/dlrm/loadgen_rules.json)."""
    r = load_rules()
    lines = [f"# MLPerf Inference {round_name()} rules for dlrm, as dlrm-bench sets them on LoadGen's TestSettings "
             "(configs/dlrm/loadgen_rules.json).",
             f"dlrm.*.performance_sample_count_override = {r['performance_sample_count']}"]
    lines += [f"*.*.{prefix}{name} = {r[prefix + name]}" for prefix in ("", "test05_")
              for name in ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")]
    lines += [f"dlrm.Server.target_latency = {r['server_target_latency_ms']}",
              f"*.Server.target_latency_percentile = {100 * r['server_target_latency_percentile']:g}"]
    for scenario in ("Server", "Offline"):
        lines += [f"*.{scenario}.min_duration = {r['min_duration_ms']}",
                  f"*.{scenario}.min_query_count = {r['min_query_count'][scenario]}"]
    return "\n".join(lines) + "\n"


def user_conf(detail_log: Path, scenario: str) -> str:
    """The run's own LoadGen settings: the effective values LoadGen logged in its detail log."""
    d = read_detail_log(detail_log)
    keys = [("target_qps", d.get("effective_target_qps")), ("min_duration", d.get("effective_min_duration_ms")),
            ("min_query_count", d.get("effective_min_query_count")),
            ("performance_sample_count_override", d.get("effective_performance_sample_count"))]
    if scenario == "Server" and d.get("effective_target_latency_ns") is not None:
        keys.append(("target_latency", f"{d['effective_target_latency_ns'] / 1e6:g}"))
    head = f"# The LoadGen settings this run used (effective values of {detail_log.name}).\n"
    return head + "".join(f"dlrm.{scenario}.{key} = {value}\n" for key, value in keys if value is not None)


def input_flags(result: dict[str, Any]) -> list[str]:
    """--dataset (or --dataset-dir) and, when it is not the dataset's default, --model of a run."""
    dataset, model = result.get("dataset", ""), result.get("model_path", "")
    same_dir = Path(result.get("dataset_dir", "")) == preprocessed_dir(dataset)
    flags = [f"--dataset={dataset}" if same_dir else f"--dataset-dir={result.get('dataset_dir')}"]
    return flags + ([] if Path(model) == default_model_path(dataset) else [f"--model={model}"])


def run_flags(result: dict[str, Any], set_flags: list[str]) -> list[str]:
    """The `make run` flags that repeat a run: scenario, config_ver, engine, inputs, LoadGen settings, --set."""
    lg = result.get("loadgen_settings", {})
    qps = "server_target_qps" if result["scenario"] == "Server" else "offline_expected_qps"
    flags = [f"--scenarios={result['scenario']}", f"--config_ver={result['config_ver']}",
             f"--engine={result.get('engine')}", *input_flags(result)]
    if "min_duration_ms" in lg:
        flags += [f"--min_duration={lg['min_duration_ms'] / 1000:g}", f"--min_query_count={lg['min_query_count']}"]
    return flags + ([f"--{qps}={lg[qps]:.10g}"] if lg.get(qps) is not None else []) + set_flags


def _quoted(flags: list[str]) -> str:
    return " ".join(shlex.quote(f) for f in ["--benchmarks=dlrm", *flags])


def measurement_readme(label: str, result: dict[str, Any], set_flags: list[str] | None) -> str:
    """The commands that made the run and repeat it (None: the settings are not known to differ or not)."""
    commit, remote = git_commit()
    run = _quoted(run_flags(result, [f"--set={f}" for f in set_flags or []]))
    note = ("" if set_flags is not None else "\nThe configs of this checkout pick another system on this machine: "
            "the run's settings are `dlrm_bench_settings` in the JSON next to this file (each a --set KEY=VALUE).\n")
    return (f"# {label}\n\ndlrm-bench, commit {commit}{f' ({remote})' if remote else ''}; MLPerf Inference "
            f"{round_name()} rules. The run was made, and is repeated, with:\n\n```bash\n"
            f'make generate_engines RUN_ARGS="{_quoted(input_flags(result))}"\n'
            f'make calibrate RUN_ARGS="{_quoted(input_flags(result))}"\n'
            f'make run RUN_ARGS="{run} --test_mode=PerformanceOnly,AccuracyOnly"\n'
            f'make audit RUN_ARGS="{run}"\n```\n{note}')


def code_readme() -> str:
    commit, remote = git_commit()
    where = remote or "the dlrm-bench repository"
    return (f"# dlrm-bench\n\nThe code of these results: {where}, commit {commit}.\n\nMLPerf Inference DLRM v1 "
            "(Criteo Terabyte, tb00_40M.pt) as NVIDIA built it for its closed-division submissions, with TensorRT "
            "replaced by PyTorch, OpenAI Triton and CUDA kernels. Its README gives the setup; docs/submission.md "
            "how this tree was staged.\n")


def submitter_readme(staged: list[tuple[str, Path]], exceptions: list[str], blanks: list[str]) -> str:
    """The staged runs (tree path <- source folder) and every exception to the rules staged anyway."""
    lines = ["# Staged by dlrm-bench stage-results", "", "## Runs", ""]
    lines += [f"- `{target}` <- `{source}`" for target, source in staged]
    lines += ["", "## Exceptions", ""]
    lines += [f"- {e}" for e in exceptions] or ["None: every run meets the v3.0 rules dlrm-bench checks."]
    if blanks:
        lines += ["", f"Empty system description fields: {', '.join(blanks)}."]
    return "\n".join(lines) + "\n"
