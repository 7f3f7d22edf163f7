"""The Triton model repository: `<root>/dlrm/{config.pbtxt, serving.json, 1/model.py}`.

config.pbtxt declares the wire format (protocol.py), the dynamic batcher and the instance groups;
serving.json carries what the Python-backend model needs to build the project's engine (engine name, model path,
dataset, the engine's settings and this interpreter's import path); model.py is `triton_model.py` copied as is.

The settings it reads (triton_*, batch_size, inflight_batches) are documented in settings.py.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dlrm_bench.atomic import save_json, save_text
from dlrm_bench.criteo.schema import NUM_DENSE, NUM_SPARSE
from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings
from dlrm_bench.triton_server import protocol as wire
from dlrm_bench.triton_server.install import stub_sys_path

TEMPLATE = Path(__file__).with_name("triton_model.py")


@dataclass
class ServingSpec:
    """Everything the repository says about the served model."""

    engine: str
    model_path: str
    dataset_dir: str
    split_dir: str | None
    settings: dict[str, Any]
    inputs: str = "ranges"
    max_batch_pairs: int = 16384
    instances: int = 1
    kind: str = "cpu"
    max_queue_delay_us: int = 0
    max_requests: int = 64
    inflight: int = 2
    info_dir: str = ""
    trace_dir: str = ""
    node_name: str = ""
    dataset_fingerprint: str = ""
    model_identity: str = ""
    sys_path: list[str] = field(default_factory=stub_sys_path)

    def check(self) -> None:
        if self.inputs not in wire.INPUT_FORMATS:
            raise UserError(f"triton_inputs '{self.inputs}': choose one of {', '.join(wire.INPUT_FORMATS)}")
        if self.kind not in ("cpu", "gpu"):
            raise UserError(f"triton_instance_kind '{self.kind}': choose auto, cpu or gpu")
        if self.inputs == "ranges" and not self.split_dir:
            raise UserError("triton_inputs 'ranges' needs the server to open the dataset's test split")
        for name in ("max_batch_pairs", "instances", "max_requests", "inflight"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"Triton serving: {name} must be at least 1, got {getattr(self, name)}")


def trace_dir(workdir: Path) -> Path:
    """Where a served run's request timestamps go (setting triton_trace)."""
    return Path(workdir) / "trace"


def instance_kind(engine: str, settings: Settings) -> str:
    """'gpu' for the cuda engine or an engine told to use a cuda device, else 'cpu' (or the explicit setting)."""
    if settings.triton_instance_kind != "auto":
        return settings.triton_instance_kind
    return "gpu" if engine == "cuda" or settings.device.startswith("cuda") else "cpu"


def spec_from_settings(engine: str, model_path: Path, dataset_dir: Path, split_dir: Path | None,
                       settings: Settings, info_dir: Path) -> ServingSpec:
    """A ServingSpec from the scenario settings (the triton_* settings, batch_size, inflight_batches)."""
    spec = ServingSpec(
        engine=engine, model_path=str(Path(model_path).resolve()), dataset_dir=str(Path(dataset_dir).resolve()),
        split_dir=str(Path(split_dir).resolve()) if split_dir else None, settings=settings.as_dict(),
        inputs=settings.triton_inputs, max_batch_pairs=settings.batch_size, instances=settings.triton_instances,
        kind=instance_kind(engine, settings), max_queue_delay_us=settings.triton_max_queue_delay_us,
        max_requests=settings.triton_max_requests,
        inflight=settings.triton_model_inflight or settings.inflight_batches,
        info_dir=str(Path(info_dir).resolve()),
        trace_dir=str(trace_dir(Path(info_dir).parent).resolve()) if settings.triton_trace else "")
    spec.check()
    return spec


def _io_block(spec: ServingSpec) -> str:
    if spec.inputs == "rows":
        return (f'input [\n'
                f'  {{ name: "{wire.NUMERIC}" data_type: TYPE_FP32 dims: [ {NUM_DENSE} ] }},\n'
                f'  {{ name: "{wire.CATEGORICAL}" data_type: TYPE_INT32 dims: [ {NUM_SPARSE} ] }}\n]\n'
                f'output [\n'
                f'  {{ name: "{wire.PREDICTIONS}" data_type: TYPE_FP32 dims: [ 1 ] }}\n]\n')
    return (f'input [\n'
            f'  {{ name: "{wire.ROW_RANGES}" data_type: TYPE_INT64 dims: [ -1, 2 ] allow_ragged_batch: true }}\n]\n'
            f'output [\n'
            f'  {{ name: "{wire.PREDICTIONS}" data_type: TYPE_FP32 dims: [ -1 ] }}\n]\n')


def _pbtxt_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def config_pbtxt(spec: ServingSpec) -> str:
    """The model configuration. rows: the batch dimension is the pair, max_batch_size = max_batch_pairs.
    ranges: one request per batch row (ragged), max_batch_size = max_requests; the model cuts the merged ranges
    into engine batches of at most max_batch_pairs pairs (the client packs each request to that size too)."""
    max_batch = spec.max_batch_pairs if spec.inputs == "rows" else spec.max_requests
    kind = "KIND_GPU" if spec.kind == "gpu" else "KIND_CPU"
    params = {"engine": spec.engine, "inputs": spec.inputs, "max_batch_pairs": str(spec.max_batch_pairs),
              "serving_file": wire.SERVING_FILE}
    for key in (wire.NODE_NAME, wire.DATASET_FINGERPRINT, wire.MODEL_IDENTITY):  # set by `serve` (network nodes)
        if getattr(spec, key):
            params[key] = getattr(spec, key)
    param_lines = ",\n".join(f'  {{ key: {_pbtxt_string(k)} value: {{ string_value: {_pbtxt_string(v)} }} }}'
                             for k, v in params.items())
    return (f'name: "{wire.MODEL_NAME}"\n'
            f'backend: "python"\n'
            f'max_batch_size: {max_batch}\n'
            f'{_io_block(spec)}'
            f'dynamic_batching {{ max_queue_delay_microseconds: {spec.max_queue_delay_us} }}\n'
            f'instance_group [ {{ count: {spec.instances} kind: {kind} }} ]\n'
            f'parameters [\n{param_lines}\n]\n')


def write_repository(spec: ServingSpec, root: Path) -> Path:
    """Write (replacing) the model repository under `root`; returns `root`."""
    root = Path(root)
    model_dir = root / wire.MODEL_NAME
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / wire.MODEL_VERSION).mkdir(parents=True)
    save_text(model_dir / "config.pbtxt", config_pbtxt(spec))
    save_json(model_dir / wire.SERVING_FILE, asdict(spec))
    shutil.copyfile(TEMPLATE, model_dir / wire.MODEL_VERSION / "model.py")
    Path(spec.info_dir).mkdir(parents=True, exist_ok=True)
    return root
