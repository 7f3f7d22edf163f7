"""Settings from config.json and --set are checked before a run starts: clear errors naming the setting, its
value and where it came from; every shipped config passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlrm_bench.errors import UserError
from dlrm_bench.harness import config as cfg
from dlrm_bench.system import SystemInfo
from dlrm_bench.setting_checks import CHECKS, check_settings

CPU = SystemInfo("Test CPU", 2, ())


@pytest.mark.parametrize("scenario", cfg.SCENARIOS)
def test_every_system_of_every_shipped_config_passes(scenario: str) -> None:
    path = cfg.config_path(scenario)
    config = cfg.load_config_file(path)
    checked = 0
    for name, entry in config["systems"].items():
        for ver in cfg.CONFIG_VERS:
            for engine in (None, *entry.get("engines", {})):
                check_settings(cfg.resolve_settings(config, name, ver, engine), f"{path} {name} {ver}")
                checked += 1
    assert checked >= len(config["systems"]) * len(cfg.CONFIG_VERS)


@pytest.mark.parametrize("item,expected", [
    ("batch_size=abc", 'setting \'batch_size\' is "abc": expected an integer >= 1'),
    ("gpu_batch_size=0", "setting 'gpu_batch_size' is 0: expected an integer >= 1"),
    ("gpu_num_bundles=2.5", "expected an integer >= 1"),
    ("cuda_graphs=yes", "setting 'cuda_graphs' is \"yes\": expected true or false"),
    ("embedding_weights_on_gpu_part=1.5", "expected a number >= 0 and <= 1"),
    ("server_target_qps=-5", "expected a number > 0"),
    ("interaction_layout=diagonal", "expected one of triangle, paired"),
    ("gemm_programs_per_sm=3", "expected an integer from 1 to 2"),
    ("triton_grpc_port=70000", "expected an integer from 0 to 65535"),
    ("start_from_device=1", "expected true or false"),
    ("top_gemm_first_layer=128x128", "expected empty (top_gemm's kernel) or one of 128x128_c2x1_pingpong"),
])
def test_bad_set_values_name_the_setting_and_the_flag(item: str, expected: str) -> None:
    with pytest.raises(UserError) as err:
        cfg.parse_overrides([item])
    assert str(err.value).startswith("--set: ") and expected in str(err.value)


@pytest.mark.parametrize("item", ["batch_size=8192", "cuda_graphs=true", "server_target_qps=1.5e5",
                                  "embedding_weights_on_gpu_part=0.25", "interaction_layout=paired",
                                  "threads=0", "triton_inputs=rows", "server_max_wait_ms=0",
                                  "top_gemm_first_layer=128x128_c1x2_pingpong_fma_permuted"])
def test_good_set_values_pass(item: str) -> None:
    key = item.partition("=")[0]
    assert key in cfg.parse_overrides([item])


def test_a_bad_value_in_a_config_file_names_the_file_and_entry(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"systems": {"Box": {"match": {"gpus": 0},
                                                    "default": {"engine": "cpu", "inflight_batches": "two"}}}}))
    with pytest.raises(UserError, match=r"config.json \(system Box, config_ver default\): setting "
                                        r"'inflight_batches' is \"two\": expected an integer >= 1"):
        cfg.scenario_settings("Offline", "default", None, CPU, path)


def test_every_check_says_what_it_expects() -> None:
    for key, check in CHECKS.items():
        assert check.expected and not check.accepts(None), key


def test_an_unknown_set_key_warns_once_with_the_closest_name(capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cfg, "_WARNED", set())
    assert cfg.parse_overrides(["cuda_graph=true"]) == {"cuda_graph": True}  # passed on, but not in silence
    assert "warning: --set cuda_graph: no part of dlrm-bench reads this setting (did you mean cuda_graphs?)" \
        in capsys.readouterr().err
    cfg.parse_overrides(["cuda_graph=true"])  # a run parses --set again per test: no second warning
    assert "warning" not in capsys.readouterr().err


def test_known_set_keys_do_not_warn(capsys: pytest.CaptureFixture[str]) -> None:
    keys = sorted(set(CHECKS) | cfg.shipped_setting_names() | {"device", "gemm", "interaction"})
    cfg.parse_overrides([f"{key}=null" if key not in CHECKS else f"{key}=1" for key in keys
                         if key not in CHECKS or CHECKS[key].accepts(1)])
    assert "warning" not in capsys.readouterr().err
