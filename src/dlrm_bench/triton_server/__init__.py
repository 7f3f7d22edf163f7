"""The same engines behind a real Triton Inference Server (config_ver triton / high_accuracy_triton, `serve`).

repository.py writes the model repository (config.pbtxt, serving.json, model.py from triton_model.py);
server.py starts and stops the `tritonserver` binary (install.py finds it and its Python-backend stub);
backend.py is the model inside Triton's Python stub; client.py is the gRPC client the harness drives as an engine;
serve.py is `dlrm-bench serve`; protocol.py names what crosses the wire. A network SUT (several hosts): node.py is
the LoadGen node's view of one `serve` node, cluster.py spreads requests over the nodes and fails them over.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlrm_bench.criteo.dataset import DatasetMeta
    from dlrm_bench.settings import Settings
    from dlrm_bench.triton_server.client import TritonEngine
    from dlrm_bench.triton_server.cluster import NetworkEngine


def create_served_engine(name: str, model_path: Path, meta: "DatasetMeta", settings: "Settings | None",
                         workdir: Path) -> "TritonEngine":
    """Engine `name` served by Triton (imports tritonclient only when asked for)."""
    from dlrm_bench.triton_server.client import create_served_engine as create

    return create(name, model_path, meta, settings, workdir)


def create_network_engine(settings: "Settings", meta: "DatasetMeta", model_path: Path | None) -> "NetworkEngine":
    """The `dlrm-bench serve` nodes of settings `network_endpoints` as one engine (cluster.py)."""
    from dlrm_bench.triton_server.cluster import create_network_engine as create

    return create(settings, meta, model_path)
