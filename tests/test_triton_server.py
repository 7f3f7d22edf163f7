"""config_ver triton through a real tritonserver (the nvidia-pytriton binary) and real gRPC, and `dlrm-bench serve`.

Unit tests check the repository files and the port choice; the end-to-end tests run the CLI: the same AUC in
process and through Triton (Offline and Server), a server killed mid-run (a clear error, nothing left behind),
the model stub or the server killed with requests in flight (they fail within seconds, naming what died),
Ctrl-C while the model loads, and `serve` answering a tritonclient request, then stopping on SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench.cli import main as cli
from dlrm_bench.engines import create_engine
from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings
from dlrm_bench.triton_server import protocol as wire
from dlrm_bench.triton_server.install import TritonInstall, find_triton, stub_environment
from dlrm_bench.triton_server.repository import config_pbtxt, spec_from_settings, write_repository
from dlrm_bench.triton_server.server import TritonServer, group_members, resolve_port
from tests.conftest import make_workspace

REPO = Path(__file__).resolve().parents[1]
DLRM_BENCH = [sys.executable, "-m", "dlrm_bench.cli"]


def _have_triton() -> bool:
    try:
        find_triton()
        return True
    except UserError:
        return False


needs_triton = pytest.mark.skipif(not _have_triton(), reason="tritonserver (nvidia-pytriton) not installed")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_workspace(tmp_path_factory.mktemp("triton"))


def write_config(path: Path, **extra: object) -> Path:
    """A scenario config.json for any machine (an entry for every system of systems.json that extends none; the
    others inherit it): the reference engine, small batches, `extra` settings."""
    from dlrm_bench.configs import load_systems

    entry = {"default": {"engine": "reference", "batch_size": 2048, "server_max_wait_ms": 2.0,
                         "server_target_qps": 20, "offline_expected_qps": 100, **extra}}
    roots = [name for name, system in load_systems().items() if system.extends is None]
    path.write_text(json.dumps({"systems": {name: entry for name in roots}}))
    return path


def child_env(ws: dict[str, Path]) -> dict[str, str]:
    env = dict(os.environ, MLPERF_SCRATCH_PATH=str(ws["root"] / "scratch"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def server_pid(text: str) -> int:
    match = re.search(r"ready on gRPC \S+ \(pid (\d+)\)", text)
    assert match, f"no server pid in: {text[-2000:]}"
    return int(match.group(1))


def assert_nothing_left(pgid: int, client_pid: int) -> None:
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(pgid) == [], "tritonserver or its stubs outlived the run"
    assert not list(Path("/dev/shm").glob(f"dlrmbench{client_pid}x*")), "stub shared memory left in /dev/shm"


# ---------------------------------------------------------------------------------------------- units
def test_rows_repository_counts_pairs_and_carries_the_engine(tmp_path: Path) -> None:
    spec = spec_from_settings("cpu", tmp_path / "m.pt", tmp_path, None,
                              Settings(batch_size=4096, triton_inputs="rows", threads=2), tmp_path / "info")
    text = config_pbtxt(spec)
    assert "max_batch_size: 4096" in text and 'backend: "python"' in text
    assert f'"{wire.NUMERIC}" data_type: TYPE_FP32 dims: [ 13 ]' in text
    assert f'"{wire.CATEGORICAL}" data_type: TYPE_INT32 dims: [ 26 ]' in text
    assert "kind: KIND_CPU" in text and "dynamic_batching" in text
    root = write_repository(spec, tmp_path / "repo")
    serving = json.loads((root / "dlrm" / wire.SERVING_FILE).read_text())
    assert serving["engine"] == "cpu" and serving["settings"]["threads"] == 2
    assert str(REPO / "src") in serving["sys_path"]
    assert (root / "dlrm" / "1" / "model.py").read_text().startswith('"""Triton Python-backend entry point')


def test_ranges_repository_is_ragged_and_cuda_gets_gpu_instances(tmp_path: Path) -> None:
    spec = spec_from_settings("cuda", tmp_path / "m.pt", tmp_path, tmp_path / "test",
                              Settings(batch_size=262144, triton_instances=2), tmp_path / "info")
    text = config_pbtxt(spec)
    assert "allow_ragged_batch: true" in text and f'"{wire.ROW_RANGES}" data_type: TYPE_INT64' in text
    assert "count: 2 kind: KIND_GPU" in text
    assert '"max_batch_pairs" value: { string_value: "262144" }' in text
    ref_on_gpu = spec_from_settings("reference", tmp_path / "m.pt", tmp_path, tmp_path / "test",
                                    Settings(device="cuda:0"), tmp_path / "info")
    assert ref_on_gpu.kind == "gpu"


def test_bad_serving_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="setting 'triton_inputs' is \"bytes\": expected one of ranges, rows"):
        Settings().with_values({"triton_inputs": "bytes"}, "test")
    with pytest.raises(UserError, match="needs the server to open"):
        spec_from_settings("reference", tmp_path, tmp_path, None, Settings(), tmp_path)


def test_busy_port_is_replaced_or_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        other = resolve_port("gRPC", busy, "127.0.0.1", strict=False, taken=set())
        assert other != busy and f"port {busy}" in capsys.readouterr().out
        with pytest.raises(UserError, match=f"gRPC port {busy} on 127.0.0.1 is already in use"):
            resolve_port("gRPC", busy, "127.0.0.1", strict=True, taken=set())


def test_missing_binary_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DLRM_TRITONSERVER", str(tmp_path / "no-such-tritonserver"))
    with pytest.raises(UserError, match="make setup"):
        find_triton()


def test_model_load_failure_is_read_from_the_log(tmp_path: Path) -> None:
    install = TritonInstall(tmp_path / "tritonserver", tmp_path, tmp_path / "stub")
    server = TritonServer(tmp_path / "repo", tmp_path, install=install)
    tmp_path.joinpath("server.log").write_text(
        'I1126 04:02:31.1 12 model_lifecycle.cc:472] "loading: dlrm:1"\n'
        "E1126 04:02:33.2 12 model_lifecycle.cc:642] \"failed to load 'dlrm' version 1: Internal: UserError: "
        "model.pt: tensor emb_l.0.weight has shape [51, 128]\\n\\nAt:\\n  backend.py(78): __init__\\n\"\n"
        "+------+\n| dlrm | 1 |\nerror: creating server: Internal - failed to load all models\n")
    assert server.load_failure("dlrm") == "UserError: model.pt: tensor emb_l.0.weight has shape [51, 128]"
    assert server.log_summary(lines=1) == "error: creating server: Internal - failed to load all models"


def test_stub_loads_this_interpreters_libpython() -> None:
    import sysconfig

    env = stub_environment({"LD_LIBRARY_PATH": "/x"})
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == sysconfig.get_config_var("LIBDIR")
    assert env["LD_LIBRARY_PATH"].endswith("/x")


# ---------------------------------------------------------------------------------------------- end to end
@needs_triton
def test_triton_runs_give_the_in_process_auc(workspace, tmp_path, monkeypatch, capsys) -> None:
    """Offline and Server, AccuracyOnly and PerformanceOnly, in process and through Triton, one CLI call; the
    requested gRPC port is held busy, so the run must pick another one and say so."""
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"] / "scratch"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        config = write_config(tmp_path / "config.json", triton_grpc_port=busy)
        status = cli(["run", "--dataset-dir", str(workspace["data"]), "--model", str(workspace["model"]),
                      "--engine", "reference", "--log_dir", str(workspace["logs"]), "--config", str(config),
                      "--config_ver", "default,triton", "--scenarios", "Offline,Server",
                      "--test_mode", "AccuracyOnly,PerformanceOnly", "--min_duration", "1",
                      "--min_query_count", "40"])
    captured = capsys.readouterr()
    out = captured.out
    assert status == 0, out + captured.err
    assert f"gRPC port {busy} on 127.0.0.1 is in use; using" in out
    results = {}
    for path in (workspace["logs"] / "latest").glob("*/dlrm/*/*/*/result.json"):
        r = json.loads(path.read_text())
        results[(r["scenario"], r["config_ver"], r["test_mode"])] = (r, path.parent)
    assert len(results) == 8
    offsets = np.load(workspace["data"] / "test" / "sample_partition.npy")
    for scenario in ("Offline", "Server"):
        local, local_dir = results[(scenario, "default", "AccuracyOnly")]
        served, served_dir = results[(scenario, "triton", "AccuracyOnly")]
        assert served["engine_info"]["served_by"] == "triton" and "Triton" in served["device"]
        # the same predictions up to the last float32 bits: which samples share a batch depends on timing (Server,
        # Triton's batcher), and FP32 GEMM results move in the last place with the batch size; that can reorder
        # near-ties in the AUC by ~1e-7
        assert served["auc"] == pytest.approx(local["auc"], abs=1e-6)
        np.testing.assert_allclose(logged_predictions(served_dir, offsets), logged_predictions(local_dir, offsets),
                                   rtol=1e-5, atol=1e-7)
        perf, _ = results[(scenario, "triton", "PerformanceOnly")]
        assert perf["samples_per_second"] > 0 and perf["samples_processed"] >= 40
    assert results[("Server", "triton", "PerformanceOnly")][0]["latency_p99_ms"] is not None
    assert_nothing_left(server_pid(out), os.getpid())


def logged_predictions(run_dir: Path, offsets: np.ndarray) -> np.ndarray:
    """Predictions of mlperf_log_accuracy.json in row order (each sample's pairs at its rows)."""
    out = np.full(int(offsets[-1]), np.nan, dtype=np.float32)
    for entry in json.loads((run_dir / "mlperf_log_accuracy.json").read_text()):
        i = entry["qsl_idx"]
        out[offsets[i]:offsets[i + 1]] = np.frombuffer(bytes.fromhex(entry["data"]), dtype="<f4")
    assert not np.isnan(out).any()
    return out


def read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> str:
    """stdout of `proc` up to the first line matching `pattern` (fails on timeout or exit)."""
    text, deadline = "", time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        text += line
        if re.search(pattern, line):
            return text
    proc.kill()
    raise AssertionError(f"'{pattern}' not seen; output so far:\n{text}\nstderr:\n{proc.stderr.read()}")


@needs_triton
@pytest.mark.slow
def test_server_killed_mid_run_fails_clearly_and_leaves_nothing(workspace, tmp_path) -> None:
    config = write_config(tmp_path / "config.json")
    proc = subprocess.Popen(DLRM_BENCH + ["run", "--dataset-dir", str(workspace["data"]), "--model",
                                          str(workspace["model"]), "--engine", "reference", "--log_dir",
                                          str(tmp_path / "logs"), "--config", str(config), "--config_ver", "triton",
                                          "--scenarios", "Server", "--test_mode", "PerformanceOnly",
                                          "--min_duration", "6", "--min_query_count", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(workspace))
    try:
        text = read_until(proc, r"ready on gRPC", 240)
        pid = server_pid(text)
        read_until(proc, r"^--- Server triton PerformanceOnly", 120)
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out + err
    assert f"tritonserver (pid {pid}) was killed by SIGKILL while" in err
    assert "Traceback" not in err
    assert_nothing_left(pid, proc.pid)
    # the run's folder says FAILED; LoadGen's logs, which read like a result, carry a .FAILED suffix
    run = next((tmp_path / "logs").glob("*/*/dlrm/Server/triton/PerformanceOnly"))
    result = json.loads((run / "result.json").read_text())
    assert result["result"] == "FAILED" and "killed by SIGKILL" in result["failure"]
    assert not list(run.glob("mlperf_log_*.txt")) and (run / "mlperf_log_summary.txt.FAILED").exists()
    report = subprocess.run(DLRM_BENCH + ["report", str(tmp_path / "logs"), "--no-plots"], capture_output=True,
                            text=True, env=child_env(workspace))
    assert "FAILED: the reference engine failed" in report.stdout


@needs_triton
@pytest.mark.parametrize("victim", ["stub", "tritonserver"])
def test_a_death_fails_the_requests_in_flight_and_leaves_nothing(workspace, tmp_path, victim) -> None:
    """SIGKILL to the model stub or to tritonserver while requests wait on it (it is stopped first, so they are in
    flight): they fail within seconds naming what died, a later request fails at once, close() is quick and leaves
    no shared memory. A start also removes the segments of a client process that is gone."""
    from dlrm_bench.triton_server.client import TritonEngine, TritonServerDied

    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = Path("/dev/shm") / f"dlrmbench{gone.pid}x0_stale"
    stale.write_bytes(b"x")
    engine = TritonEngine("reference", workspace["model"], load_meta(workspace["data"]), Settings(batch_size=2048),
                          tmp_path / "work")
    try:
        engine.load(open_split(workspace["data"] / "test"))
        prefix = engine.server.shm_prefix
        assert not stale.exists() and list(Path("/dev/shm").glob(f"{prefix}*"))
        pid = engine.stubs[0] if victim == "stub" else engine.server.pid
        os.kill(pid, signal.SIGSTOP)
        starts = np.arange(0, 400, 4)
        futures = [engine.predict_ranges_async(starts[lo:lo + 10], starts[lo:lo + 10] + 3) for lo in range(0, 100, 10)]
        time.sleep(0.3)
        assert not any(f.done() for f in futures)
        os.kill(pid, signal.SIGKILL)
        said = re.escape(f"model stub (pid {pid}) died (signal 9)" if victim == "stub" else
                         f"tritonserver (pid {pid}) was killed by SIGKILL")
        deadline = time.monotonic() + 5
        for future in futures:
            with pytest.raises(TritonServerDied, match=said):
                future.result(timeout=max(0.0, deadline - time.monotonic()))
        later = engine.predict_ranges_async(np.array([0]), np.array([5]))
        assert later.done()
        with pytest.raises(TritonServerDied, match=said):
            later.result()
    finally:
        closing = time.monotonic()
        engine.close()
    assert time.monotonic() - closing < 5
    assert not list(Path("/dev/shm").glob(f"{prefix}*")), "stub shared memory left in /dev/shm"
    assert group_members(engine.server.pid) == [], "tritonserver or its stubs outlived close()"


@needs_triton
def test_ctrl_c_while_the_model_loads_stops_the_server(workspace, tmp_path) -> None:
    proc = subprocess.Popen(DLRM_BENCH + ["run", "--dataset-dir", str(workspace["data"]), "--model",
                                          str(workspace["model"]), "--engine", "reference", "--log_dir",
                                          str(tmp_path / "logs"), "--config_ver", "triton", "--test_mode",
                                          "AccuracyOnly"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(workspace))
    try:
        read_until(proc, r"^triton: starting tritonserver", 120)
        deadline = time.monotonic() + 60
        while not _model_loading(tmp_path / "logs") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(str(tmp_path) in cmd for _, cmd in _tritonservers()), "no server was running"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    lingering = [p for p in _tritonservers() if str(tmp_path) in p[1]]
    assert lingering == [], f"processes left: {lingering}"


def _model_loading(logs: Path) -> bool:
    """True once a server log under `logs` says the model is loading."""
    return any("loading: dlrm" in log.read_text() for log in logs.glob("*/triton/*/server.log"))


def _tritonservers() -> list[tuple[int, str]]:
    """(pid, command line) of every live tritonserver / stub process on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and ("tritonserver" in cmd or "triton_python_backend_stub" in cmd):
            found.append((int(entry.name), cmd))
    return found


@needs_triton
@pytest.mark.slow
def test_serve_answers_a_client_and_stops_on_ctrl_c(workspace, tmp_path) -> None:
    import tritonclient.grpc as grpcclient

    proc = subprocess.Popen(DLRM_BENCH + ["serve", "--dataset-dir", str(workspace["data"]), "--model",
                                          str(workspace["model"]), "--engine", "reference", "--grpc-port", "0",
                                          "--http-port", "-1", "--workdir", str(tmp_path / "serve")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(workspace))
    try:
        text = read_until(proc, r"Ctrl-C stops the server", 240)
        url = re.search(r"gRPC\s+(\S+)", text).group(1)
        pid = int(re.search(r"\(pid (\d+)\)", text).group(1))
        split = open_split(workspace["data"] / "test")
        numeric, categorical = np.asarray(split.numeric[:123]), np.asarray(split.categorical[:123])
        client = grpcclient.InferenceServerClient(url)
        inputs = [grpcclient.InferInput(wire.NUMERIC, [123, 13], "FP32"),
                  grpcclient.InferInput(wire.CATEGORICAL, [123, 26], "INT32")]
        inputs[0].set_data_from_numpy(numeric)
        inputs[1].set_data_from_numpy(categorical)
        served = client.infer(wire.MODEL_NAME, inputs).as_numpy(wire.PREDICTIONS)
        bad = categorical.copy()
        bad[0, 0] = 10_000
        inputs[1].set_data_from_numpy(bad)
        with pytest.raises(Exception, match="C1 has ids"):
            client.infer(wire.MODEL_NAME, inputs)
        client.close()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    engine = create_engine("reference", workspace["model"], load_meta(workspace["data"]))
    assert served.shape == (123, 1)
    np.testing.assert_allclose(served[:, 0], engine.predict(numeric, categorical), rtol=1e-5, atol=1e-7)
    assert proc.returncode == 0, out + err
    assert_nothing_left(pid, proc.pid)


@needs_triton
def test_serve_names_a_busy_port(workspace, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"] / "scratch"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        status = cli(["serve", "--dataset-dir", str(workspace["data"]), "--model", str(workspace["model"]),
                      "--engine", "reference", "--grpc-port", str(busy), "--http-port", "-1",
                      "--workdir", str(workspace["root"] / "busy")])
    err = capsys.readouterr().err
    assert status == 2 and f"gRPC port {busy} on 127.0.0.1 is already in use" in err
    assert "Traceback" not in err


@needs_triton
def test_traced_requests_carry_timestamps_from_both_sides(workspace, tmp_path) -> None:
    """triton_trace: the client and the model inside tritonserver stamp every request (triton_server/trace.py)."""
    from dlrm_bench.triton_server.client import TritonEngine
    from dlrm_bench.triton_server.trace import PHASES, summarize

    meta = load_meta(workspace["data"])
    engine = TritonEngine("reference", workspace["model"], meta, Settings(batch_size=2048, triton_trace=True),
                          tmp_path / "work")
    try:
        engine.load(open_split(workspace["data"] / "test"))
        starts = np.arange(0, 40, 4)
        for lo in range(0, 10, 2):
            engine.predict_ranges_async(starts[lo:lo + 2], starts[lo:lo + 2] + 3).result(timeout=120)
    finally:
        engine.close()
    summary = summarize(engine.trace_dir)
    assert summary["requests"] == 5, summary
    for phase in PHASES:
        assert summary[phase]["count"] == 5 and summary[phase]["median_ms"] >= 0, (phase, summary)


@needs_triton
def test_shared_memory_outputs_match_the_message_and_are_freed(workspace, tmp_path) -> None:
    """triton_output_shm: the server writes predictions into registered regions; same values as in the gRPC
    message, several requests in flight, and no region left in /dev/shm after close()."""
    from dlrm_bench.triton_server.client import TritonEngine

    meta = load_meta(workspace["data"])
    split = open_split(workspace["data"] / "test")
    starts = np.arange(0, 600, 6)
    got = {}
    for shm in (False, True):
        engine = TritonEngine("reference", workspace["model"], meta,
                              Settings(batch_size=2048, inflight_batches=2, triton_output_shm=shm),
                              tmp_path / f"work-{shm}")
        try:
            engine.load(split)
            assert (engine.regions is not None) == shm
            futures = [engine.predict_ranges_async(starts[lo:lo + 10], starts[lo:lo + 10] + 5)
                       for lo in range(0, 100, 10)]  # 10 requests, more than the 4 regions
            got[shm] = np.concatenate([f.result(timeout=120) for f in futures])
        finally:
            engine.close()
    # the same values up to float rounding (Triton may group the requests differently between the runs, and
    # the fp32 reference engine's sums depend on the batch); a misplaced prediction would differ by far more
    np.testing.assert_allclose(got[True], got[False], rtol=1e-5, atol=1e-7)
    assert got[True].shape == (500,)
    assert not list(Path("/dev/shm").glob(f"dlrmbench{os.getpid()}o*"))
