"""What crosses the wire between a client and the served DLRM model (shared by the client and the server side).

The model is named `dlrm` (version 1). Two request formats, one per server (`triton_inputs` / `serve --inputs`):

rows   (any client; the batch dimension is the pair, so Triton's dynamic batcher counts pairs)
    NUMERIC      FP32  [n, 13]   log1p'd dense features of n pairs
    CATEGORICAL  INT32 [n, 26]   table ids (< each table's cardinality)
    PREDICTIONS  FP32  [n, 1]    click probabilities, one row per pair
ranges (clients that share the server's preprocessed dataset; nothing but row numbers crosses the wire)
    ROW_RANGES   INT64 [1, k, 2] k half-open row ranges [start, end) of the server's test split (one per user)
    PREDICTIONS  FP32  [1, p]    p = sum(end - start) probabilities, in the order of the ranges
"""

from __future__ import annotations

MODEL_NAME = "dlrm"
MODEL_VERSION = "1"
INPUT_FORMATS = ("ranges", "rows")

NUMERIC = "NUMERIC"
CATEGORICAL = "CATEGORICAL"
ROW_RANGES = "ROW_RANGES"
PREDICTIONS = "PREDICTIONS"

SERVING_FILE = "serving.json"
"""Per-model settings the Python-backend model reads at initialize (engine, model, dataset, sys.path)."""

INSTANCE_INFO = "instance_{index}.json"
"""Each model instance writes its engine's describe() here once it is ready (the client reads the device)."""

NODE_NAME = "node_name"
DATASET_FINGERPRINT = "dataset_fingerprint"
MODEL_IDENTITY = "model_identity"
"""Model-config parameters a served model carries besides engine, inputs and max_batch_pairs: a network SUT's
LoadGen node reads them (`get_model_config`, one round trip) to name the node and to refuse one whose dataset or
model differ from its own."""
