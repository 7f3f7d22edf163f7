"""Triton Python-backend entry point, copied as `<repository>/dlrm/1/model.py` (never imported by the project).

It runs inside Triton's Python stub, which neither reads PYTHONPATH nor knows the project: `initialize` reads
`serving.json` next to config.pbtxt, puts the launching interpreter's import path first, pins a KIND_GPU
instance to its GPU (CUDA_VISIBLE_DEVICES, before anything initialises CUDA), and hands over to
`dlrm_bench.triton_server.backend.ServedModel`, which builds the engine with `create_engine`.
"""

import json
import os
import sys
from pathlib import Path


def _use_import_path(entries):
    """Put `entries` first on sys.path, in order, without duplicates."""
    sys.path[:] = list(entries) + [p for p in sys.path if p not in entries]


def _pin_gpu(args):
    """A KIND_GPU instance sees only its own GPU, as device 0."""
    if args.get("model_instance_kind") != "GPU":
        return
    device_id = int(args.get("model_instance_device_id", 0))
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[device_id] if device_id < len(visible) else str(device_id)


class TritonPythonModel:
    """Triton's interface: initialize / execute / finalize, delegated to ServedModel."""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        config = json.loads((Path(args["model_repository"]) / "serving.json").read_text())
        _use_import_path(config["sys_path"])
        _pin_gpu(args)
        from dlrm_bench.triton_server.backend import ServedModel

        self.model = ServedModel(config, pb_utils, args["model_instance_name"])

    def execute(self, requests):
        return self.model.execute(requests)

    def finalize(self):
        self.model.close()
