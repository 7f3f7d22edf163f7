"""The config files: every shipped system resolves, entries inherit, and a bad or unknown key anywhere stops the run
before anything starts with the file, the entry, the key and the closest real name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlrm_bench import configs
from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings
from dlrm_bench.system import SystemInfo

CPU = SystemInfo("Test CPU", 2, ())
H100 = SystemInfo("Test CPU", 16, ("NVIDIA H100 80GB HBM3",))
H200 = SystemInfo("Test CPU", 16, ("NVIDIA H200",))
H100X4 = SystemInfo("Test CPU", 64, ("NVIDIA H100 80GB HBM3",) * 4)
OTHER_GPU = SystemInfo("Test CPU", 8, ("NVIDIA A100-SXM4-80GB",))


def test_parse_choices_accepts_case_and_lists() -> None:
    assert configs.parse_choices("offline,Server", configs.SCENARIOS, "scenario") == ["Offline", "Server"]
    for text in ("Offlin", "", "Offline,MultiStream"):
        with pytest.raises(UserError, match="scenario"):
            configs.parse_choices(text, configs.SCENARIOS, "scenario")


def test_every_shipped_file_is_valid_and_every_system_resolves() -> None:
    assert configs.check_all_config_files() == 3
    systems = configs.load_systems()
    for scenario in configs.SCENARIOS:
        for ver in configs.CONFIG_VERS:
            for engine in (None, *configs.ENGINES):
                for name, entry in systems.items():
                    if entry.match.get("gpus") == 0 and engine == "cuda":
                        continue
                    gpus = entry.match.get("gpus", entry.match.get("min_gpus", 0))
                    machine = SystemInfo("x", 8, (f"NVIDIA {entry.match.get('gpu_name', 'A100')}",) * gpus)
                    resolved = configs.resolve(scenario, ver, engine, machine)
                    assert resolved.system == name
                    assert resolved.settings.engine in configs.ENGINES


def test_machines_pick_their_systems() -> None:
    assert configs.resolve("Offline", "default", None, CPU).system == "CPU"
    assert configs.resolve("Offline", "default", None, H100).system == "H100x1"
    assert configs.resolve("Offline", "default", None, H200).system == "H200x1"
    assert configs.resolve("Offline", "default", None, H100X4).system == "H100x4"
    other = configs.resolve("Offline", "default", None, OTHER_GPU)
    assert other.system == "GPU" and other.settings.top_gemm == "triton"


def test_an_h200_inherits_the_h100_kernels_and_states_only_what_differs() -> None:
    h100 = configs.resolve("Offline", "default", None, H100).settings
    h200 = configs.resolve("Offline", "default", None, H200).settings
    assert h200.top_gemm == h100.top_gemm == "128x128_c1x2_pingpong_fma_smemrows_e64x128"
    assert h200.bottom_kernel == h200.interaction_kernel == "cuda"
    assert (h100.gpu_batch_size, h200.gpu_batch_size) == (1048576, 524288)
    four = configs.resolve("Server", "default", None, H100X4).settings
    assert (four.server_target_qps, four.inflight_batches, four.batch_size) == (1280000, 12, 1048576)
    assert four.interaction_kernel == "cuda" and four.cpu_affinity == "off-gpu-irqs"


def test_config_ver_blocks_apply_in_order() -> None:
    assert configs.config_ver_blocks("high_accuracy_triton") == ["default", "high_accuracy", "triton",
                                                                 "high_accuracy_triton"]
    assert configs.config_ver_blocks("triton") == ["default", "triton"]
    for ver in ("triton", "high_accuracy_triton"):
        s = configs.resolve("Offline", ver, None, H100).settings
        assert (s.inflight_batches, s.triton_model_inflight) == (6, 3)
    assert configs.resolve("Offline", "default", None, H100).settings.inflight_batches == 3


def test_engine_blocks_and_set_win() -> None:
    s = configs.resolve("Offline", "default", "reference", H100, overrides={"batch_size": 4096}).settings
    assert (s.engine, s.offline_expected_qps, s.batch_size) == ("reference", 40000, 4096)


def _write(tmp_path: Path, systems: dict, scenario: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "systems.json").write_text(json.dumps({"systems": systems}))
    monkeypatch.setattr(configs, "systems_path", lambda: tmp_path / "systems.json")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(scenario))
    return path


BOX = {"Box": {"match": {"gpus": 0}, "settings": {"engine": "cpu"}}}


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    systems = {"Base": {"match": {"gpus": 5}, "settings": {"batch_size": 2, "threads": 2}},
               "Box": {"extends": "Base", "match": {"gpus": 0}, "settings": {"engine": "cpu", "threads": 3}}}
    scenario = {"defaults": {"batch_size": 1, "inflight_batches": 1, "complete_threads": 1},
                "systems": {"Base": {"default": {"inflight_batches": 4}, "triton": {"complete_threads": 5}},
                            "Box": {"default": {"complete_threads": 2}, "high_accuracy": {"complete_threads": 3},
                                    "engines": {"reference": {"complete_threads": 9}}}}}
    path = _write(tmp_path, systems, scenario, monkeypatch)
    s = configs.resolve("Offline", "default", None, CPU, path).settings
    assert (s.batch_size, s.threads, s.inflight_batches, s.complete_threads, s.engine) == (2, 3, 4, 2, "cpu")
    s = configs.resolve("Offline", "high_accuracy_triton", None, CPU, path).settings
    assert s.complete_threads == 5  # triton comes after high_accuracy, along the whole chain
    s = configs.resolve("Offline", "high_accuracy", "reference", CPU, path).settings
    assert (s.complete_threads, s.engine) == (9, "reference")


@pytest.mark.parametrize("systems,scenario,message", [
    (BOX, {"systems": {"Box": {"default": {"batchsize": 2}}}},
     r"config.json \(system Box\) 'default': unknown setting 'batchsize' \(did you mean 'batch_size'\?\)"),
    (BOX, {"systems": {"Box": {"defualt": {}}}},
     r"config.json \(system Box\): unknown key 'defualt' \(did you mean 'default'\?\)"),
    (BOX, {"systems": {"Bxo": {}}}, r"config.json \(system Bxo\): not a system of .*systems.json \(did you mean 'Box'"),
    (BOX, {"systems": {"Box": {"engines": {"gpu": {}}}}}, r"'engines': unknown key 'gpu'"),
    (BOX, {"systems": {"Box": {"default": {"inflight_batches": "two"}}}},
     r"\(system Box\) 'default': setting 'inflight_batches' is \"two\": expected an integer >= 1"),
    (BOX, {"defaults": {"cuda_graph": True}}, r"config.json 'defaults': unknown setting 'cuda_graph' \(did you mean "
                                              r"'cuda_graphs'\?\)"),
    (BOX, {"sytems": {}}, r"config.json: unknown key 'sytems' \(did you mean 'systems'\?\)"),
    (BOX, ["not", "an", "object"], r"config.json: expected a JSON object at the top, found a list"),
    ({"Box": {"match": {"gpus": 0}, "settings": {"gpu_batchsize": 1}}}, {},
     r"systems.json \(system Box\) 'settings': unknown setting 'gpu_batchsize' \(did you mean 'gpu_batch_size'"),
    ({"Box": {"match": {"gpu": 0}}}, {}, r"systems.json \(system Box\) 'match': unknown key 'gpu' \(did you mean "
                                         r"'gpus'\?\)"),
    ({"Box": {"match": {"gpus": 0}, "extends": "Bsae"}}, {}, r"system 'Box' extends 'Bsae', which is not a system"),
    ({"A": {"extends": "B"}, "B": {"extends": "A"}}, {}, r"systems extend each other in a loop: A -> B -> A"),
])
def test_bad_config_files_name_file_entry_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systems: dict,
                                                  scenario: dict, message: str) -> None:
    path = _write(tmp_path, systems, scenario, monkeypatch)
    with pytest.raises(UserError, match=message):
        configs.resolve("Offline", "default", None, CPU, path)


def test_an_unknown_key_in_an_unused_entry_still_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    systems = {**BOX, "Big": {"match": {"gpus": 8}}}
    path = _write(tmp_path, systems, {"systems": {"Big": {"default": {"gpu_batch_sise": 1}}}}, monkeypatch)
    with pytest.raises(UserError, match="system Big.*gpu_batch_sise"):
        configs.resolve("Offline", "default", None, CPU, path)


def test_no_matching_system_and_bad_json_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, {"GPU": {"match": {"gpus": 1}}}, {}, monkeypatch)
    with pytest.raises(UserError, match="no system matches this machine"):
        configs.resolve("Offline", "default", None, CPU, path)
    path.write_text("{oops")
    with pytest.raises(UserError, match="config.json: not valid JSON"):
        configs.resolve("Offline", "default", None, CPU, path)
    with pytest.raises(UserError, match="config file not found"):
        configs.resolve("Offline", "default", None, CPU, tmp_path / "missing.json")


@pytest.mark.parametrize("item,expected", [
    ("batch_size=abc", 'setting \'batch_size\' is "abc": expected an integer >= 1'),
    ("gpu_batch_size=0", "setting 'gpu_batch_size' is 0: expected an integer >= 1"),
    ("gpu_num_bundles=2.5", "expected an integer >= 1"),
    ("cuda_graphs=yes", "setting 'cuda_graphs' is \"yes\": expected true or false"),
    ("embedding_weights_on_gpu_part=1.5", "expected a number >= 0 and <= 1"),
    ("server_target_qps=-5", "expected a number > 0"),
    ("triton_grpc_port=70000", "expected an integer from 0 to 65535"),
    ("start_from_device=1", "expected true or false"),
    ("engine=gpu", "setting 'engine' is \"gpu\": expected one of '', reference, cpu, cuda"),
    ("top_gemm_first_layer=128x128", "expected one of '', 128x128_c1x2_pingpong_fma_smemrows_e64x128"),
    ("cpu_affinity=two", "expected a Linux CPU list"),
    ("cuda_graph=true", "unknown setting 'cuda_graph' (did you mean 'cuda_graphs'?)"),
    ("batch_size", "--set expects KEY=VALUE"),
])
def test_bad_set_values_name_the_setting_and_the_flag(item: str, expected: str) -> None:
    with pytest.raises(UserError) as err:
        configs.parse_overrides([item])
    assert str(err.value).startswith("--set") and expected in str(err.value)


def test_good_set_values_are_typed() -> None:
    values = configs.parse_overrides(["batch_size=8192", "cuda_graphs=true", "server_target_qps=1.5e5",
                                      "cpu_affinity=3", "triton_inputs=rows", "min_duration_s=null"])
    s = Settings().with_values(values, "--set")
    assert (s.batch_size, s.cuda_graphs, s.server_target_qps, s.cpu_affinity, s.triton_inputs) == (
        8192, True, 150000.0, "3", "rows")
    assert s.min_duration_s is None and isinstance(Settings().with_values({"server_max_wait_ms": 5}, "x")
                                                   .server_max_wait_ms, float)
