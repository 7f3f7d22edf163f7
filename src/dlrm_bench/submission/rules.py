"""The v3.0 rules a submitted DLRM run must meet, checked on LoadGen's detail log and on accuracy.txt: verdict,
errors, seeds, duration, query counts, latency bound, performance sample count, accuracy target. Each failure is
one line naming the file, the value found and the value expected."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dlrm_bench.loadgen_logs import invalid_reason, read_detail_log
from dlrm_bench.mlperf_rules import REFERENCE_AUC, SEED_NAMES, TARGET_FRACTIONS, load_rules, test05_seeds

AUC_LINE = re.compile(r"^AUC=([\d.]+)", re.M)
HASH_LINE = re.compile(r"^hash=(\w+)$", re.M)


def _at_least(detail: dict[str, Any], key: str, minimum: float, what: str) -> list[str]:
    value = detail.get(key)
    ok = isinstance(value, (int, float)) and value >= minimum
    return [] if ok else [f"{what}: {key} = {value}, expected >= {minimum:g}"]


def performance_problems(detail_path: Path, test05: bool = False) -> list[str]:
    """Why the run whose detail log this is cannot be submitted (empty: it can). `test05`: TEST05's seeds."""
    if not detail_path.exists():
        return [f"{detail_path}: missing"]
    detail, rules = read_detail_log(detail_path), load_rules()
    found: list[str] = []
    if detail.get("result_validity") != "VALID":
        found.append(f"result_validity = {detail.get('result_validity')} ({invalid_reason(detail)}), expected VALID")
    if detail.get("num_errors"):
        found.append(f"num_errors = {detail['num_errors']}: LoadGen logged errors, expected none")
    seeds = test05_seeds() if test05 else {name: int(rules[name]) for name in SEED_NAMES}
    found += [f"effective_{name} = {detail.get(f'effective_{name}')}, expected {value} (the v3.0 seed)"
              for name, value in seeds.items() if detail.get(f"effective_{name}") != value]
    found += _at_least(detail, "effective_min_duration_ms", rules["min_duration_ms"], "short run")
    found += _at_least(detail, "effective_performance_sample_count", rules["performance_sample_count"],
                       "performance sample count")
    scenario = detail.get("effective_scenario")
    if scenario == "Offline":
        found += _at_least(detail, "effective_samples_per_query", rules["min_query_count"]["Offline"], "query count")
    elif scenario == "Server":
        found += _at_least(detail, "effective_min_query_count", rules["min_query_count"]["Server"], "query count")
        bound = rules["server_target_latency_ms"] * 1e6
        if not (detail.get("effective_target_latency_ns") or bound + 1) <= bound:
            found.append(f"latency bound: effective_target_latency_ns = {detail.get('effective_target_latency_ns')}, "
                         f"expected <= {bound:.0f}")
        if detail.get("early_stopping_met") is not True:
            found.append(f"early_stopping_met = {detail.get('early_stopping_met')}, expected true")
    else:
        found.append(f"effective_scenario = {scenario}, expected Offline or Server")
    return [f"{detail_path}: {line}" for line in found]


def target_auc_percent(benchmark: str) -> float:
    """MLPerf's absolute AUC target in percent: 99% (dlrm-99) or 99.9% (dlrm-99.9) of 80.25%."""
    fraction = TARGET_FRACTIONS["high_accuracy" if benchmark.endswith("99.9") else "default"]
    return 100 * REFERENCE_AUC * fraction


def accuracy_problems(accuracy_txt: Path, benchmark: str, need_hash: bool = True) -> list[str]:
    """The AUC line MLPerf's checker reads (`AUC=<percent>`) against the benchmark's target; the log's hash line."""
    if not accuracy_txt.exists():
        return [f"{accuracy_txt}: missing"]
    text = accuracy_txt.read_text(errors="replace")
    found = AUC_LINE.search(text)
    target = target_auc_percent(benchmark)
    problems = []
    if not found:
        problems.append(f"{accuracy_txt}: no line 'AUC=<percent>'")
    elif float(found.group(1)) < target:
        problems.append(f"{accuracy_txt}: accuracy: AUC = {found.group(1)}%, expected >= {target:.4f}% "
                        f"(MLPerf's target for {benchmark})")
    if need_hash and not HASH_LINE.search(text):
        problems.append(f"{accuracy_txt}: no line 'hash=<sha256 of mlperf_log_accuracy.json>'")
    return problems
