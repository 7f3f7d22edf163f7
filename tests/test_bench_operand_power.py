"""bench_operand_power.py's input variants and summaries (the timing runs on the device machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_operand_power as bop  # noqa: E402


def test_input_variants_keep_the_shape_and_change_the_values() -> None:
    real = torch.randint(-127, 128, (33, 512), dtype=torch.int8)
    variants = bop.input_variants(real)
    assert list(variants) == ["real", "quarter", "sparse", "zeros"]
    assert all(v.shape == real.shape and v.dtype == torch.int8 for v in variants.values())
    assert torch.equal(variants["real"], real)
    assert int(variants["quarter"].abs().max()) <= 31
    assert torch.equal(variants["quarter"], (real.int() / 4).trunc().to(torch.int8))
    assert torch.equal(variants["sparse"][:, ::4], real[:, ::4])
    assert int(variants["sparse"][:, 1::4].abs().sum()) == 0
    assert bop.operand_stats(variants["zeros"]) == {"zero_fraction": 1.0, "mean_abs": 0.0}


def test_summarize_skips_the_first_windows_and_gives_energy_per_pair() -> None:
    windows = [{"ms_per_batch": 9.0, "m_pairs_per_second": 10.0, "sm_mhz": 1980.0, "power_w": 100.0}] * 2 + \
              [{"ms_per_batch": 1.0, "m_pairs_per_second": 200.0, "sm_mhz": 1700.0, "power_w": 700.0}] * 3
    s = bop.summarize(windows)
    assert s["ms_per_batch"] == 1.0 and s["sm_mhz"] == 1700.0
    assert s["uj_per_pair"] == pytest.approx(3.5)


def test_rounds_cell_lists_each_round() -> None:
    rounds = [{"ms_per_batch": 1.0694, "sm_mhz": 1568.2, "power_w": 696.4, "uj_per_pair": 2.8449},
              {"ms_per_batch": 1.063, "sm_mhz": 1485.0, "power_w": 699.0, "uj_per_pair": 2.84}]
    assert bop.rounds_cell(rounds) == "1.069 1568 696 2.84; 1.063 1485 699 2.84"
    assert bop.rounds_cell([]) == ""
