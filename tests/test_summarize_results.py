"""benchmarks/summarize_results.py: one line per LoadGen run, with the targets LoadGen ran and the engine's view."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import summarize_results as sr  # noqa: E402


def _write(folder: Path, scenario: str, **extra) -> Path:
    folder.mkdir(parents=True)
    result = {"scenario": scenario, "config_ver": "default", "test_mode": "PerformanceOnly",
              "samples_per_second": 549936.0, "result_validity": "VALID", "latency_p99_ms": 23.94,
              "auc_ratio": None, "interpreter_pauses": {"stalls": 3, "stall_max_ms": 5.8},
              "settings": {"server_target_qps": 520000, "gpu_batch_size": 262144, "unrelated": 1},
              "loadgen_settings": {"server_target_qps": 550000.0}, "engine_info": {"cuda_graphs": True, "gpus": 1}}
    result.update(extra)
    path = folder / "result.json"
    path.write_text(json.dumps(result))
    return path


def test_line_quotes_what_loadgen_ran(tmp_path) -> None:
    row = sr.summarize(_write(tmp_path / "a", "Server"))
    assert row["settings"] == {"server_target_qps": 550000.0, "gpu_batch_size": 262144, "cuda_graphs": True,
                               "gpus": 1}
    text = sr.line(row)
    assert "549,936/s" in text and "VALID" in text and "p99 23.94 ms" in text and "stalls 3 (max 5.8 ms)" in text
    assert "server_target_qps=550000.0" in text and "unrelated" not in text


def test_the_first_top_layers_kernel_is_shown_where_set(tmp_path) -> None:
    settings = {"gpu_batch_size": 524288, "top_gemm_first_layer": "128x128_c1x2_pingpong_fma_permuted"}
    text = sr.line(sr.summarize(_write(tmp_path / "o", "Offline", settings=settings)))
    assert "gpu_batch_size=524288" in text and "top_gemm_first_layer=128x128_c1x2_pingpong_fma_permuted" in text


def test_offline_and_accuracy_rows(tmp_path) -> None:
    offline = sr.line(sr.summarize(_write(tmp_path / "o", "Offline", loadgen_settings={})))
    assert "p99" not in offline
    accuracy = sr.line(sr.summarize(_write(tmp_path / "acc", "Offline", test_mode="AccuracyOnly",
                                           samples_per_second=None, result_validity=None, auc_ratio=0.99975,
                                           interpreter_pauses=None)))
    assert "AUC ratio 99.975%" in accuracy and "stalls" not in accuracy and " - " in f" {accuracy} "


def test_main_lists_every_run_and_writes_json(tmp_path, capsys) -> None:
    _write(tmp_path / "logs" / "r1", "Offline")
    _write(tmp_path / "logs" / "r2" / "deeper", "Server")
    (tmp_path / "logs" / "bad").mkdir()
    (tmp_path / "logs" / "bad" / "result.json").write_text("{not json")
    (tmp_path / "logs" / "list").mkdir()
    (tmp_path / "logs" / "list" / "result.json").write_text("[1, 2]")
    out = tmp_path / "rows.json"
    assert sr.main([str(tmp_path / "logs"), "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 2
    assert "bad" in captured.err and "list" in captured.err and captured.err.count("unreadable") == 2
    assert [r["scenario"] for r in json.loads(out.read_text())] == ["Offline", "Server"]


def test_missing_folder_is_an_error(tmp_path, capsys) -> None:
    assert sr.main([str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_an_offline_line_names_when_the_first_result_came(tmp_path) -> None:
    """latency_min_ms (LoadGen's single Offline issue to the first result): quoted for Offline, not for Server."""
    offline = sr.line(sr.summarize(_write(tmp_path / "o", "Offline", latency_min_ms=389.15)))
    assert "VALID  first result 389 ms  stalls 3 (max 5.8 ms)" in offline
    server = sr.line(sr.summarize(_write(tmp_path / "s", "Server", latency_min_ms=0.4)))
    assert "first result" not in server


def test_memory_stalls_are_shown_only_where_there_were_some(tmp_path) -> None:
    host = {"major_faults": 2.0, "vmstat": {"compact_stall": 5.0, "allocstall": 0.0, "thp_fault_alloc": 9.0}}
    text = sr.line(sr.summarize(_write(tmp_path / "m", "Server", host_cpu=host)))
    assert "memory: compactions 5, major faults 2" in text and "reclaims" not in text
    quiet = {"major_faults": 0.0, "vmstat": {"compact_stall": 0.0, "allocstall": 0.0}}
    assert "memory" not in sr.line(sr.summarize(_write(tmp_path / "q", "Server", host_cpu=quiet)))
