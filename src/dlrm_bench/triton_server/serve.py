"""`dlrm-bench serve`: the engine behind a Triton Inference Server for other clients, until Ctrl-C (or SIGTERM).

The server listens on loopback by default (`--listen 0.0.0.0` for other machines), gRPC on 8001 and HTTP on 8000
unless told otherwise; a requested port that is in use is an error naming it (`0` picks a free port). The engine
settings come from configs/dlrm/<--scenario>/config.json for `--config_ver` (triton or high_accuracy_triton).

As a node of a network SUT (docs/network.md) the model config carries the node's name (`--node-name`, unique per
node), the dataset's fingerprint and the model's identity, which the LoadGen node checks; the test split is opened
only for `--inputs ranges` (with `rows` every request carries its data). A model stub that dies stops the whole
server, so the LoadGen node sees the node go down instead of requests that are never answered.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings
from dlrm_bench.triton_server import protocol as wire
from dlrm_bench.triton_server.client import read_instance_info, start_server
from dlrm_bench.triton_server.identity import model_identity
from dlrm_bench.triton_server.repository import ServingSpec, spec_from_settings
from dlrm_bench.triton_server.server import ServerOptions, TritonServer, describe_exit, process_end

if TYPE_CHECKING:
    from dlrm_bench.criteo.dataset import DatasetMeta


def _settings(args: argparse.Namespace) -> tuple[str, Settings]:
    from dlrm_bench import configs
    from dlrm_bench.engines import pick_engine
    from dlrm_bench.system import detect_system

    if args.config_ver not in ("triton", "high_accuracy_triton"):
        raise UserError(f"serve: --config_ver must be triton or high_accuracy_triton, got '{args.config_ver}'")
    scenario = configs.parse_choices(args.scenario, configs.SCENARIOS, "scenario")[0]
    flags = {"triton_inputs": args.inputs}
    if args.max_batch_pairs:
        flags["batch_size"] = args.max_batch_pairs
    if args.instances:
        flags["triton_instances"] = args.instances
    system = detect_system()
    resolved = configs.resolve(scenario, args.config_ver, args.engine, system, args.config)
    name = pick_engine(args.engine, resolved.settings.engine)
    settings = configs.resolve(scenario, args.config_ver, name, system, args.config).settings
    return name, settings.with_values(flags, "serve's flags")


def _workdir(args: argparse.Namespace) -> Path:
    from dlrm_bench.paths import scratch_path

    return Path(args.workdir) if args.workdir else scratch_path() / "triton" / f"serve-{time.strftime('%Y%m%d-%H%M%S')}"


def _port(value: int) -> int | None:
    return None if value < 0 else value


def _announce(server: TritonServer, name: str, inputs: str, dataset: Path, node: str, fingerprint: str) -> None:
    devices = ", ".join(sorted({str(i.get("device")) for i in read_instance_info(server.workdir / "instances")}))
    print(f"serving model '{wire.MODEL_NAME}' ({name} engine on {devices}; '{inputs}' requests; dataset {dataset})")
    print(f"  node  {node}  (dataset fingerprint {fingerprint})")
    print(f"  gRPC  {server.grpc_url}")
    if server.http_port is not None:
        print(f"  HTTP  {server.options.host}:{server.http_port}")
    if server.metrics_port is not None:
        print(f"  metrics {server.options.host}:{server.metrics_port}")
    print(f"  log   {server.log_path}  (pid {server.pid})")
    print(f"ready: gRPC {server.grpc_url} (readiness: the model's gRPC ModelReady, or HTTP /v2/health/ready)")
    print("Ctrl-C stops the server.", flush=True)


def _dead_stub(server: TritonServer, stubs: list[int]) -> str | None:
    """How a model stub of `server` ended, if one did (it would leave requests unanswered)."""
    for pid in stubs:
        end = process_end(pid)
        if end:
            return f"the model stub (pid {pid}) died ({end})"
    return None


def node_spec(engine: str, model_path: Path, meta: "DatasetMeta", settings: Settings, workdir: Path,
              node: str) -> ServingSpec:
    """The served model of a node: the test split opened only for `ranges` requests; its name, the dataset's
    fingerprint and the model's identity in the model config."""
    split_dir = meta.directory / "test"
    opened = split_dir if split_dir.is_dir() and settings.triton_inputs == "ranges" else None
    spec = spec_from_settings(engine, model_path, meta.directory, opened, settings, workdir / "instances")
    return dataclasses.replace(spec, node_name=node, dataset_fingerprint=meta.fingerprint,
                               model_identity=model_identity(model_path))


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    from dlrm_bench.inputs import resolve_inputs

    meta, model_path = resolve_inputs(args.dataset, args.dataset_dir, args.model, prepare=True)
    name, settings = _settings(args)
    workdir = _workdir(args)
    node = args.node_name or f"{socket.gethostname()}:{args.grpc_port or 'pid' + str(os.getpid())}"
    spec = node_spec(name, model_path, meta, settings, workdir, node)
    options = ServerOptions(grpc_port=args.grpc_port, http_port=_port(args.http_port),
                            metrics_port=_port(args.metrics_port), host=args.host, strict_ports=True,
                            startup_timeout_s=args.startup_timeout)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    server = None
    try:
        print(f"starting tritonserver for the {name} engine (log {workdir / 'server.log'}) ...", flush=True)
        server = start_server(spec, workdir, options)
        _announce(server, name, spec.inputs, meta.directory, node, meta.fingerprint)
        stubs = server.stub_pids()
        while server.alive():
            dead = _dead_stub(server, stubs)
            if dead:
                raise UserError(f"{dead}; the server stops (log {server.log_path})")
            time.sleep(0.25)
        raise UserError(f"tritonserver {describe_exit(server.returncode())} (log {server.log_path}): "
                        f"{server.log_summary(lines=4, limit=400)}")
    except KeyboardInterrupt:
        print("stopping tritonserver ...", file=sys.stderr, flush=True)
        return 0
    finally:
        if server is not None:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
