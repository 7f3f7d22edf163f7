"""The numbers that define the Criteo Terabyte dataset and the MLPerf DLRM v1 model."""

from __future__ import annotations

NUM_DENSE = 13
"""Integer count features I1..I13 per pair."""
NUM_SPARSE = 26
"""Categorical features C1..C26 per pair (8 hex digits each)."""
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE
"""Fields in one raw row: label, 13 counts, 26 categories."""
NUM_DAYS = 24
"""Raw files day_0 .. day_23 of Criteo Terabyte."""

DEFAULT_MAX_IND_RANGE = 40_000_000
"""The reference's hash range: sparse id = int(hex, 16) % max_ind_range."""

CRITEO_TB_CARDINALITIES: tuple[int, ...] = (
    39884406, 39043, 17289, 7420, 20263, 3, 7120, 1543, 63, 38532951, 2953546, 403346, 10,
    2208, 11938, 155, 4, 976, 14, 39979771, 25641295, 39664984, 585935, 12972, 108, 36,
)
"""Table sizes of tb00_40M.pt (40M limit): 187,767,399 rows."""

CRITEO_TB_TEST_PAIRS = 89_137_319
"""Pairs in the MLPerf test set (the first half of day_23)."""
CRITEO_TB_TEST_SAMPLES = 330_067
"""LoadGen samples (users) in the reference aggregation trace of the test set."""
CALIBRATION_ROWS = 128_000
"""Rows of the calibration set (the rows of the last day that follow the test set)."""

INT8_NUMERIC_SCALE = 127.0 / 14.2313
"""numeric_int8 = trunc(log1p(x) * 127 / 14.2313): NVIDIA's dense-input quantization."""

EMBEDDING_DIM = 128
BOTTOM_MLP: tuple[int, ...] = (512, 256, 128)
TOP_MLP: tuple[int, ...] = (1024, 1024, 512, 256, 1)
NUM_INTERACTIONS = (NUM_SPARSE + 1) * NUM_SPARSE // 2
"""351 dot products: the strict lower triangle of the 27 x 27 Gram matrix."""
TOP_MLP_INPUT = EMBEDDING_DIM + NUM_INTERACTIONS
"""479 = 128 dense values then the 351 dots."""
