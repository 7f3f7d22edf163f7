"""One node of a network SUT as the LoadGen node sees it: a `dlrm-bench serve` tritonserver at HOST:PORT.

Each node gets two gRPC channels: one for inference requests and one for readiness, names and health checks,
on its own TCP connection (a local subchannel pool), so a probe never queues behind a large request. What the
node serves (its name, engine, request format, batch limit, instances, dataset fingerprint, model identity) is
read from its model configuration: one round trip (`get_model_config`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from dlrm_bench.errors import UserError
from dlrm_bench.settings import ENDPOINTS
from dlrm_bench.triton_server import protocol as wire

INT32_MAX = 2**31 - 1
CHANNEL_ARGS = [("grpc.max_send_message_length", INT32_MAX), ("grpc.max_receive_message_length", INT32_MAX),
                ("grpc.use_local_subchannel_pool", 1)]
POLL_S = 0.2


def parse_endpoints(text: str) -> list[str]:
    """'host:port,host:port' -> the endpoints, each once; a UserError names what is wrong."""
    text = (text or "").replace(" ", "")
    if not text or not ENDPOINTS.match(text):
        raise UserError(f"network endpoints {text!r}: expected HOST:PORT,HOST:PORT (--endpoints or the setting "
                        f"network_endpoints), e.g. 10.0.0.2:8001,10.0.0.3:8001")
    endpoints = text.split(",")
    if len(set(endpoints)) != len(endpoints):
        raise UserError(f"network endpoints {text!r}: an endpoint is listed twice")
    return endpoints


@dataclass(frozen=True)
class NodeInfo:
    """What a node serves, from its model configuration."""

    name: str
    engine: str
    inputs: str
    max_batch_pairs: int
    instances: int
    kind: str
    dataset_fingerprint: str
    model_identity: str


def info_from_config(config: dict[str, Any]) -> NodeInfo:
    """A NodeInfo from `get_model_config(as_json=True)["config"]` (instances: count x GPUs per instance group)."""
    params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    groups = config.get("instance_group", [])
    instances = sum(int(g.get("count", 1)) * max(1, len(g.get("gpus", []))) for g in groups) or 1
    kind = "gpu" if any(g.get("kind") == "KIND_GPU" for g in groups) else "cpu"
    return NodeInfo(params.get(wire.NODE_NAME, ""), params.get("engine", "?"), params.get("inputs", "?"),
                    int(params.get("max_batch_pairs", 0) or 0), instances, kind,
                    params.get(wire.DATASET_FINGERPRINT, ""), params.get(wire.MODEL_IDENTITY, ""))


class RemoteNode:
    """The LoadGen node's connection to one SUT node, with the counters of what it served."""

    def __init__(self, endpoint: str, probe_timeout_s: float = 1.0) -> None:
        import tritonclient.grpc as grpcclient

        self.endpoint = endpoint
        self.probe_timeout_s = probe_timeout_s
        self.client = grpcclient.InferenceServerClient(endpoint, channel_args=CHANNEL_ARGS)
        self.control = grpcclient.InferenceServerClient(endpoint, channel_args=CHANNEL_ARGS)
        self.info: NodeInfo | None = None
        self.alive = True
        self.failure = ""
        self.last_ok = time.monotonic()
        self.outstanding: dict[int, Any] = {}
        self.outstanding_pairs = 0
        self.sent = 0
        self.requests = self.pairs = self.failed_over_requests = self.failed_over_pairs = 0

    @property
    def label(self) -> str:
        name = self.info.name if self.info else ""
        return f"node {name} at {self.endpoint}" if name else f"node {self.endpoint}"

    def wait_ready(self, timeout_s: float) -> NodeInfo:
        """Poll until the node's model is ready (its readiness check), then read what it serves."""
        from tritonclient.utils import InferenceServerException

        deadline, last = time.monotonic() + timeout_s, "no answer"
        while True:
            try:
                t = self.probe_timeout_s
                if self.control.is_server_live(client_timeout=t) and \
                        self.control.is_model_ready(wire.MODEL_NAME, client_timeout=t):
                    self.info = self.read_info()
                    self.last_ok = time.monotonic()
                    return self.info
                last = f"model '{wire.MODEL_NAME}' not ready"
            except InferenceServerException as exc:
                last = str(exc).splitlines()[0][:200]
            if time.monotonic() > deadline:
                raise UserError(f"network SUT {self.label} not ready within {timeout_s:.0f} s ({last}): start it "
                                f"with `dlrm-bench serve --listen ADDR` (setting triton_startup_timeout_s)")
            time.sleep(POLL_S)

    def read_info(self) -> NodeInfo:
        """What the node serves, read over the network (one round trip)."""
        config = self.control.get_model_config(wire.MODEL_NAME, as_json=True,
                                               client_timeout=max(self.probe_timeout_s, 5.0))
        return info_from_config(config.get("config", config))

    def probe(self) -> bool:
        """One health check within probe_timeout_s: is the server live?"""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self.control.is_server_live(client_timeout=self.probe_timeout_s))
        except InferenceServerException:
            return False

    def send(self, inputs: list[Any], callback: Callable[[Any, Any], None], request_id: str,
             timeout_s: float) -> None:
        self.client.async_infer(wire.MODEL_NAME, inputs, callback, request_id=request_id, client_timeout=timeout_s)

    def describe(self) -> dict[str, Any]:
        info = self.info
        return {"endpoint": self.endpoint, "name": info.name if info else None,
                "engine": info.engine if info else None, "kind": info.kind if info else None,
                "instances": info.instances if info else None, "state": "up" if self.alive else "down",
                "failure": self.failure or None, "requests": self.requests, "pairs": self.pairs,
                "failed_over_requests": self.failed_over_requests, "failed_over_pairs": self.failed_over_pairs}

    def close(self) -> None:
        for client in (self.client, self.control):
            try:
                client.close()
            except Exception:  # a channel of a node that is gone may fail to close; nothing to do then
                pass
