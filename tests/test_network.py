"""The network SUT (`--sut network`, docs/network.md): LoadGen's QDL on this process, `dlrm-bench serve` nodes on
loopback, each a real tritonserver with the CPU engine.

End to end through the CLI: the AUC and every prediction through two nodes equal the in-process run's; a node
started on other data is refused before LoadGen starts; a node killed and another stopped during a run are
detected within seconds, their requests answered by the third node, each sample once; with no node left the run
ends FAILED with a clear error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench.errors import UserError
from dlrm_bench.triton_server.node import info_from_config, parse_endpoints
from tests.conftest import save_random_model, write_preprocessed_dataset
from tests.test_triton_server import DLRM_BENCH, child_env, logged_predictions, needs_triton, read_until, \
    write_config

QPS = 40
"""Server target of the loopback runs (2 cores serve three nodes and LoadGen)."""


# ---------------------------------------------------------------------------------------------- units
def test_endpoints_are_checked() -> None:
    assert parse_endpoints("10.0.0.2:8001, node-b:8001") == ["10.0.0.2:8001", "node-b:8001"]
    for bad in ("", "10.0.0.2", "a:1,,b:2", "a:x"):
        with pytest.raises(UserError, match="expected HOST:PORT,HOST:PORT"):
            parse_endpoints(bad)
    with pytest.raises(UserError, match="listed twice"):
        parse_endpoints("a:1,a:1")


def test_node_info_counts_an_instance_per_gpu() -> None:
    config = {"parameters": {"node_name": {"string_value": "gpu-7"}, "engine": {"string_value": "cuda"},
                             "inputs": {"string_value": "rows"}, "max_batch_pairs": {"string_value": "262144"},
                             "dataset_fingerprint": {"string_value": "abc"}},
              "instance_group": [{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1, 2, 3]}]}
    info = info_from_config(config)
    assert (info.name, info.engine, info.instances, info.kind, info.max_batch_pairs) == ("gpu-7", "cuda", 8, "gpu",
                                                                                          262144)


# ---------------------------------------------------------------------------------------------- nodes
class Node:
    """A `dlrm-bench serve` process: its endpoint and its tritonserver's pid."""

    def __init__(self, proc: subprocess.Popen, text: str) -> None:
        self.proc = proc
        self.endpoint = re.search(r"gRPC\s+(\S+)", text).group(1)
        self.server_pid = int(re.search(r"\(pid (\d+)\)", text).group(1))
        self.name = re.search(r"node\s+(\S+)", text).group(1)

    def interrupt(self) -> None:
        for pid, sig in ((self.server_pid, signal.SIGCONT), (self.proc.pid, signal.SIGINT)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait(self) -> None:
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def prepare(ws: dict[str, Path], data: Path, model: Path) -> None:
    """The int8 engine files and calibration cache, made once (not by several nodes at once)."""
    done = subprocess.run(DLRM_BENCH + ["calibrate", "--dataset-dir", str(data), "--model", str(model)],
                          capture_output=True, text=True, env=child_env(ws))
    assert done.returncode == 0, done.stderr


def start_nodes(ws: dict[str, Path], inputs: list[tuple[Path, Path, str]]) -> list[Node]:
    """One `serve` per (dataset, model, request format) (CPU engine, gRPC on a free port), started together."""
    procs = []
    for k, (data, model, fmt) in enumerate(inputs):
        procs.append(subprocess.Popen(
            DLRM_BENCH + ["serve", "--dataset-dir", str(data), "--model", str(model), "--engine", "cpu",
                          "--inputs", fmt,
                          "--grpc-port", "0", "--http-port", "-1", "--node-name", f"node{k}",
                          "--max-batch-pairs", "1024", "--workdir", str(ws["root"] / f"node{k}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(ws)))
    try:
        return [Node(proc, read_until(proc, r"Ctrl-C stops the server", 240)) for proc in procs]
    except BaseException:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
        raise


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three nodes on the fixture data, one on other data (same model) and one taking row ranges, for the whole
    module."""
    root = tmp_path_factory.mktemp("network")
    ws = {"root": root, "model": save_random_model(root / "model.pt"), "logs": root / "logs",
          "data": write_preprocessed_dataset(root / "data", test_rows=3000, num_days=1, rows_per_day=300,
                                             max_sample=40)}
    other = write_preprocessed_dataset(root / "other", test_rows=3000, num_days=1, rows_per_day=300, max_sample=40,
                                       seed=5)
    other_model = save_random_model(other / "model.pt")  # the same weights, its own calibration
    prepare(ws, ws["data"], ws["model"])
    prepare(ws, other, other_model)
    nodes = start_nodes(ws, [(ws["data"], ws["model"], "rows")] * 3 + [(other, other_model, "rows"),
                                                                         (ws["data"], ws["model"], "ranges")])
    ws["config"] = write_config(root / "config.json", engine="cpu", batch_size=1024)
    try:
        yield ws, nodes
    finally:
        for node in nodes:
            node.interrupt()
        for node in nodes:
            node.wait()


def run_cli(ws: dict[str, Path], logs: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(DLRM_BENCH + ["run", "--dataset-dir", str(ws["data"]), "--model", str(ws["model"]),
                                        "--engine", "cpu", "--log_dir", str(logs), "--config", str(ws["config"]),
                                        "--server_target_qps", str(QPS), *args],
                          capture_output=True, text=True, env=child_env(ws), timeout=timeout)


def results(logs: Path) -> dict[tuple[str, str], tuple[dict, Path]]:
    found = {}
    for path in logs.glob("*/*/dlrm/*/*/*/result.json"):
        r = json.loads(path.read_text())
        found[(r["scenario"], r["test_mode"])] = (r, path.parent)
    return found


# ---------------------------------------------------------------------------------------------- end to end
@needs_triton
def test_two_nodes_give_the_in_process_auc_and_predictions(cluster, tmp_path) -> None:
    ws, nodes = cluster
    endpoints = f"{nodes[0].endpoint},{nodes[1].endpoint}"
    flags = ["--scenarios", "Offline,Server", "--test_mode", "AccuracyOnly"]
    local = run_cli(ws, tmp_path / "local", *flags)
    network = run_cli(ws, tmp_path / "network", *flags, "--sut", "network", "--endpoints", endpoints)
    assert local.returncode == 0, local.stdout + local.stderr
    assert network.returncode == 0, network.stdout + network.stderr
    offsets = np.load(ws["data"] / "test" / "sample_partition.npy")
    mine, theirs = results(tmp_path / "local"), results(tmp_path / "network")
    for scenario in ("Offline", "Server"):
        (here, here_dir), (there, there_dir) = mine[(scenario, "AccuracyOnly")], theirs[(scenario, "AccuracyOnly")]
        got, want = logged_predictions(there_dir, offsets), logged_predictions(here_dir, offsets)
        if scenario == "Offline":  # the same batches as in process: the same bits
            assert there["auc"] == here["auc"]
            np.testing.assert_array_equal(got, want)
        else:  # the nodes' Triton batcher composes other batches; the CPU engine's GEMMs then differ by an ulp
            assert there["auc"] == pytest.approx(here["auc"], abs=1e-6)
            np.testing.assert_allclose(got, want, rtol=0, atol=6e-8)
        assert there["accuracy_passed"]
        logged = [e["qsl_idx"] for e in json.loads((there_dir / "mlperf_log_accuracy.json").read_text())]
        assert sorted(logged) == list(range(len(offsets) - 1)), "a sample answered twice or not at all"
        assert (there["sut"], there["division"], there["endpoints"]) == ("network", "network", endpoints.split(","))
        assert sum(n["pairs"] for n in there["nodes"]) == offsets[-1] and all(n["pairs"] for n in there["nodes"])
        assert there["engine"] == "cpu" and not there["failover"]
        detail = (there_dir / "mlperf_log_detail.txt").read_text()
        assert re.search(r'"sut_name", "value": "[^"]*Network SUT: node0, node1"', detail)


@needs_triton
def test_row_ranges_are_a_separate_open_division_mode(cluster, tmp_path) -> None:
    ws, nodes = cluster
    flags = ["--scenarios", "Offline", "--test_mode", "AccuracyOnly"]
    local = run_cli(ws, tmp_path / "local", *flags)
    ranges = run_cli(ws, tmp_path / "ranges", *flags, "--sut", "network_ranges", "--endpoints", nodes[4].endpoint)
    assert local.returncode == 0 and ranges.returncode == 0, ranges.stdout + ranges.stderr
    (here, _), = results(tmp_path / "local").values()
    (there, _), = results(tmp_path / "ranges").values()
    assert (there["sut"], there["division"]) == ("network_ranges", "open") and there["auc"] == here["auc"]


@needs_triton
def test_mismatched_nodes_are_refused_before_the_run(cluster, tmp_path) -> None:
    """Other data, another request format, no endpoints: one error line each, before LoadGen starts."""
    ws, nodes = cluster
    flags = ["--scenarios", "Offline", "--test_mode", "AccuracyOnly"]
    cases = {f"{nodes[0].endpoint},{nodes[3].endpoint}": f"node node3 at {nodes[3].endpoint} serves dataset "
                                                         f"fingerprint",
             nodes[4].endpoint: f"node node4 at {nodes[4].endpoint} takes 'ranges' requests, but --sut network "
                                f"sends 'rows'",
             "": "--sut network needs the nodes: --endpoints HOST:PORT,HOST:PORT"}
    for k, (endpoints, said) in enumerate(cases.items()):
        done = run_cli(ws, tmp_path / f"logs{k}", *flags, "--sut", "network",
                       *(["--endpoints", endpoints] if endpoints else []))
        assert done.returncode == 2, done.stdout + done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not results(tmp_path / f"logs{k}"), "a run started against a mismatched node"


@needs_triton
def test_a_killed_and_a_stopped_node_fail_over_to_the_third(cluster, tmp_path) -> None:
    """SIGKILL to one node's tritonserver and SIGSTOP to another's during a Server run: both are found down within
    seconds, their requests go to the third node, the run completes and every sample is answered once."""
    ws, nodes = cluster
    proc = subprocess.Popen(DLRM_BENCH + [
        "run", "--dataset-dir", str(ws["data"]), "--model", str(ws["model"]), "--engine", "cpu", "--log_dir",
        str(tmp_path / "logs"), "--config", str(ws["config"]), "--server_target_qps", str(QPS), "--scenarios",
        "Server", "--test_mode", "PerformanceOnly", "--min_duration", "9", "--min_query_count", "1", "--sut",
        "network", "--endpoints", ",".join(n.endpoint for n in nodes[:3])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(ws))
    try:
        read_until(proc, r"^--- Server default PerformanceOnly", 120)
        time.sleep(2.0)
        os.kill(nodes[0].server_pid, signal.SIGKILL)
        time.sleep(1.0)
        os.kill(nodes[1].server_pid, signal.SIGSTOP)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.kill(nodes[1].server_pid, signal.SIGCONT)
    assert proc.returncode == 0, out + err
    assert f"node node0 at {nodes[0].endpoint} is down (a request failed" in err
    stopped = re.search(rf"node node1 at {re.escape(nodes[1].endpoint)} is down \(no answer to health checks for "
                        rf"([\d.]+) s\)", err)
    assert stopped and float(stopped.group(1)) < 5.0, err
    (result, run), = results(tmp_path / "logs").values()
    # completed (not FAILED); the stopped node's requests waited for the detection, so the p99 may be INVALID
    assert result["result"] in ("VALID", "INVALID") and result["samples_per_second"] > 0
    assert result["failover"] and result["failed_over_requests"] >= 1
    assert [n["state"] for n in result["nodes"]] == ["down", "down", "up"]
    assert result["samples_issued"] == result["samples_processed"] == sum(n["requests"] for n in result["nodes"])
    assert result["loadgen_errors"] == 0
    assert "complete a sample twice" not in (run / "mlperf_log_detail.txt").read_text()


@needs_triton
def test_with_no_node_left_the_run_fails_clearly(cluster, tmp_path) -> None:
    ws, nodes = cluster
    proc = subprocess.Popen(DLRM_BENCH + [
        "run", "--dataset-dir", str(ws["data"]), "--model", str(ws["model"]), "--engine", "cpu", "--log_dir",
        str(tmp_path / "logs"), "--config", str(ws["config"]), "--server_target_qps", str(QPS), "--scenarios",
        "Server", "--test_mode", "PerformanceOnly", "--min_duration", "30", "--min_query_count", "1", "--sut",
        "network", "--endpoints", nodes[2].endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(ws))
    try:
        read_until(proc, r"^--- Server default PerformanceOnly", 120)
        time.sleep(1.0)
        os.kill(nodes[2].server_pid, signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - killed < 15, "the run went on without any node"
    assert proc.returncode == 2, out + err
    assert f"every node of the network SUT is down: node node2 at {nodes[2].endpoint}" in err
    assert "Traceback" not in err
    (result, run), = results(tmp_path / "logs").values()
    assert result["result"] == "FAILED" and "every node of the network SUT is down" in result["failure"]
    assert not list(run.glob("mlperf_log_*.txt")) and (run / "mlperf_log_summary.txt.FAILED").exists()
