"""bench_front_overlap.py's and bench_front_energy.py's argument checks and refusal without a GPU (the timing
runs on the device machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_front_energy as bfe  # noqa: E402
import bench_front_overlap as bfo  # noqa: E402
from tests.bench_args import refusal  # noqa: E402


@pytest.mark.parametrize("args, message", [
    (["--top-sms", "100,x"], "--top-sms: expected comma-separated integers, got '100,x'"),
    (["--top-sms", "-4"], "--top-sms needs counts >= 0"),
    (["--sustain", "0"], "--sustain must be positive"),
    (["--top-gemm", "triton", "--cutlass-final"], "--cutlass-final needs a CUTLASS --top-gemm"),
])
def test_bad_arguments_are_refused(monkeypatch, capsys, args: list[str], message: str) -> None:
    assert message in refusal(bfo.main, ["bench_front_overlap.py", *args], monkeypatch, capsys)


def test_energy_bench_refuses_a_zero_duration(monkeypatch, capsys) -> None:
    err = refusal(bfe.main, ["bench_front_energy.py", "--sustain", "0"], monkeypatch, capsys)
    assert "--batch and --sustain must be positive" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("module, script", [(bfo, "bench_front_overlap.py"), (bfe, "bench_front_energy.py")])
def test_without_a_gpu_it_says_so(monkeypatch, capsys, tmp_path, module, script: str) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--out", str(tmp_path)])
    assert module.main() == 2
    assert f"{script}: error: needs a CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_best_settings_must_beat_the_serial_batch() -> None:
    def row(rates: list[float], settings: dict | None = None) -> dict:
        return {"settings": settings, "sustained": [{"m_pairs_per_second": r} for r in rates]}

    configs = {"serial": row([150, 152]), "front only": row([500, 500]),
               "2 slices": row([160, 158], {"front_overlap_slices": 2, "top_gemm_sms": 0}),
               "4 slices": row([155, 170], {"front_overlap_slices": 4, "top_gemm_sms": 120})}
    assert bfo.best_settings(configs) == {"front_overlap_slices": 4, "top_gemm_sms": 120}  # medians 159 vs 162.5
    configs["4 slices"] = row([140, 141], {"front_overlap_slices": 4, "top_gemm_sms": 120})
    configs["2 slices"] = row([150, 151], {"front_overlap_slices": 2, "top_gemm_sms": 0})
    assert bfo.best_settings(configs) is None  # 150.5 vs the serial 151: no gain, no settings


def test_the_most_frugal_variant_is_picked_by_energy() -> None:
    def row(uj: float) -> dict:
        return {"sustained": [{"uj_per_pair": uj}]}

    configs = {"bottom 64/128/4/2": row(0.6), "bottom 128/128/8/2": row(0.5), "interaction 4/4/1/1": row(0.9),
               "interaction 8/4/1/1": row(1.0), "interaction default, zero ids": row(0.2)}
    assert bfe.frugal(configs, "bottom") == "bottom 128/128/8/2"
    assert bfe.frugal(configs, "interaction") == "interaction 4/4/1/1"  # not the zero-ids probe
