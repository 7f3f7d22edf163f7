"""The rules of MLPerf Inference v3.0 for DLRM (the last round with DLRM v1): LoadGen settings and seeds from
configs/dlrm/loadgen_rules.json, and the accuracy targets."""

from __future__ import annotations

import functools
import json
from typing import Any

from dlrm_bench.paths import configs_dir

REFERENCE_AUC = 0.8025
"""The FP32 reference model's AUC on the Criteo Terabyte test set (MLPerf's dlrm accuracy reference)."""
TARGET_FRACTIONS = {"default": 0.99, "high_accuracy": 0.999}
"""Per config_ver family: the fraction of the reference AUC a run must reach (benchmarks dlrm-99 and dlrm-99.9)."""
SEED_NAMES = ("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed")


@functools.lru_cache(maxsize=1)
def load_rules() -> dict[str, Any]:
    """configs/dlrm/loadgen_rules.json (read once per process)."""
    return json.loads((configs_dir() / "dlrm" / "loadgen_rules.json").read_text())


def round_name() -> str:
    return str(load_rules()["round"])


def test05_seeds() -> dict[str, int]:
    """The round's TEST05 seeds, by the plain seed name (qsl_rng_seed, ...)."""
    return {name: int(load_rules()[f"test05_{name}"]) for name in SEED_NAMES}


def target_fraction(config_ver: str) -> float:
    """0.99 for default / triton, 0.999 for high_accuracy / high_accuracy_triton."""
    return TARGET_FRACTIONS["high_accuracy" if config_ver.startswith("high_accuracy") else "default"]


def judged_by_absolute_auc(dataset: str) -> bool:
    """MLPerf checks an absolute AUC (REFERENCE_AUC x fraction) on the real Criteo Terabyte data; on any other
    dataset only the relative rule (fraction x the FP32 AUC of the same model on the same data) means anything."""
    return dataset == "terabyte"
