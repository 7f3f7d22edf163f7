"""The FP32 MLPerf v1 DLRM (the model of tb00_40M.pt), with the reference's semantics and parameter names.

    numeric [B, 13] --DenseArch (13-512-256-128, ReLU after every layer)------------> dense [B, 128]
    categorical [B, 26] --EmbeddingArch (26 tables x 128)---------------------------> sparse [B, 26, 128]
    (dense, sparse) --InteractionArch (strict lower triangle of the 27 x 27 Gram)---> [B, 128 + 351 = 479]
    [B, 479] --OverArch (1024-1024-512-256-1, ReLU between, sigmoid at the end)-----> probability [B]

The modules are registered under the reference's names, so `DLRM.state_dict()` is the reference layout as is:
`bot_l.{0,2,4}.{weight,bias}`, `emb_l.{k}.weight`, `top_l.{0,2,4,6,8}.{weight,bias}` (odd indices of the two
Sequentials are the parameter-free activations, as in the reference).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dlrm_bench.criteo.schema import BOTTOM_MLP, EMBEDDING_DIM, NUM_DENSE, NUM_SPARSE, TOP_MLP, TOP_MLP_INPUT


def interaction_pairs(num_vectors: int = NUM_SPARSE + 1) -> tuple[list[int], list[int]]:
    """Row and column indices of the strict lower triangle in the reference order (1,0),(2,0),(2,1),(3,0),...

    Returns (rows, cols), each of length num_vectors * (num_vectors - 1) / 2 (351 for 27 vectors).
    """
    rows = [i for i in range(num_vectors) for _ in range(i)]
    cols = [j for i in range(num_vectors) for j in range(i)]
    return rows, cols


def _mlp_layers(sizes: Sequence[int], final: nn.Module | None) -> list[nn.Module]:
    """Linear(sizes[i] -> sizes[i+1]) each followed by ReLU, except the last, followed by `final` (if any)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        last = i == len(sizes) - 2
        if not last:
            layers.append(nn.ReLU())
        elif final is not None:
            layers.append(final)
    return layers


class DenseArch(nn.Sequential):
    """Bottom MLP: numeric float32 [B, 13] -> dense float32 [B, 128]; ReLU after every layer, the last included.

    Children 0, 2, 4 are the Linear layers (reference keys bot_l.{0,2,4}.*), 1, 3, 5 the ReLUs.
    """

    def __init__(self, sizes: Sequence[int] = (NUM_DENSE, *BOTTOM_MLP)) -> None:
        super().__init__(*_mlp_layers(sizes, final=nn.ReLU()))


class EmbeddingArch(nn.ModuleList):
    """One table per categorical feature: ids int [B, 26] -> vectors [B, 26, 128].

    Child k is table k (reference key emb_l.{k}.weight, shape [cardinality_k, 128]). A pair has one id per
    feature, so a lookup is the reference's sum-pooled bag of one row.
    """

    def __init__(self, cardinalities: Sequence[int], dim: int = EMBEDDING_DIM, sparse: bool = False) -> None:
        super().__init__([nn.Embedding(int(n), dim, sparse=sparse) for n in cardinalities])

    def forward(self, categorical: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """categorical: integer [B, T] -> float [B, T, dim]."""
        return torch.stack([table(categorical[:, k]) for k, table in enumerate(self)], dim=1)


class InteractionArch(nn.Module):
    """Dot interaction: dense [B, D] and sparse [B, T, D] -> [B, D + (T+1)T/2].

    The T+1 vectors [dense, emb_0, ..., emb_{T-1}] form a Gram matrix [B, T+1, T+1]; its strict lower triangle is
    taken row by row, (1,0),(2,0),(2,1),..., and appended to the dense vector.
    """

    def __init__(self, num_sparse: int = NUM_SPARSE) -> None:
        super().__init__()
        rows, cols = interaction_pairs(num_sparse + 1)
        self.register_buffer("rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        self.register_buffer("cols", torch.tensor(cols, dtype=torch.long), persistent=False)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        vectors = torch.cat([dense.unsqueeze(1), sparse], dim=1)  # [B, T+1, D]
        gram = torch.bmm(vectors, vectors.transpose(1, 2))  # [B, T+1, T+1]
        dots = gram[:, self.rows, self.cols]  # [B, (T+1)T/2]
        return torch.cat([dense, dots], dim=1)


class OverArch(nn.Sequential):
    """Top MLP: [B, 479] -> probability [B, 1]; ReLU after each hidden layer, sigmoid at the end.

    Children 0, 2, 4, 6, 8 are the Linear layers (reference keys top_l.{0,2,4,6,8}.*), child 9 the sigmoid.
    """

    def __init__(self, sizes: Sequence[int] = (TOP_MLP_INPUT, *TOP_MLP)) -> None:
        super().__init__(*_mlp_layers(sizes, final=nn.Sigmoid()))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 479] -> pre-sigmoid logits [B, 1] (for a numerically stable training loss)."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x


class DLRM(nn.Module):
    """The MLPerf v1 DLRM. forward(numeric float32 [B, 13], categorical int [B, 26]) -> probability float32 [B]."""

    def __init__(self, cardinalities: Sequence[int]) -> None:
        super().__init__()
        if len(cardinalities) != NUM_SPARSE:
            raise ValueError(f"expected {NUM_SPARSE} cardinalities, got {len(cardinalities)}")
        self.bot_l = DenseArch()
        self.emb_l = EmbeddingArch(cardinalities)
        self.interaction = InteractionArch()
        self.top_l = OverArch()

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(int(table.num_embeddings) for table in self.emb_l)

    def head(self, numeric: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        """Everything but the table lookups: numeric [B, 13], looked-up vectors [B, 26, 128] -> logits [B]."""
        features = self.interaction(self.bot_l(numeric), sparse)  # [B, 479]
        return self.top_l.logits(features).squeeze(1)

    def logits(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """numeric [B, 13], categorical [B, 26] -> logits [B] (before the sigmoid)."""
        return self.head(numeric, self.emb_l(categorical))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        features = self.interaction(self.bot_l(numeric), self.emb_l(categorical))  # [B, 479]
        return self.top_l(features).squeeze(1)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> "DLRM":
        """A model that uses the given tensors as its parameters (no copy, no allocation of random tables).

        Table sizes are read from the emb_l.{k}.weight shapes; call checkpoint.check_state_dict first for errors
        that name the offending tensor.
        """
        cards = [int(state_dict[f"emb_l.{k}.weight"].shape[0]) for k in range(NUM_SPARSE)]
        with torch.device("meta"):
            model = cls(cards)
        model.load_state_dict(state_dict, strict=True, assign=True)
        model.interaction = InteractionArch()  # its index buffers were created on the meta device
        return model


def reference_shapes(cardinalities: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Every reference state_dict key -> its shape, for the given table sizes (in the reference key order)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, sizes in (("bot_l", (NUM_DENSE, *BOTTOM_MLP)), ("top_l", (TOP_MLP_INPUT, *TOP_MLP))):
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"{prefix}.{2 * i}.weight"] = (n_out, n_in)
            shapes[f"{prefix}.{2 * i}.bias"] = (n_out,)
    for k, n in enumerate(cardinalities):
        shapes[f"emb_l.{k}.weight"] = (int(n), EMBEDDING_DIM)
    return shapes


@torch.no_grad()
def init_reference(model: DLRM, generator: torch.Generator | None = None) -> DLRM:
    """The reference's initialization (facts from dlrm_s_pytorch.py, not its code).

    Linear: weight ~ N(0, sqrt(2 / (fan_in + fan_out))), bias ~ N(0, sqrt(1 / fan_out)).
    Table with n rows: uniform(-sqrt(1/n), sqrt(1/n)).
    """
    for layer in [*model.bot_l, *model.top_l]:
        if isinstance(layer, nn.Linear):
            n_out, n_in = layer.weight.shape
            layer.weight.normal_(0.0, math.sqrt(2.0 / (n_in + n_out)), generator=generator)
            layer.bias.normal_(0.0, math.sqrt(1.0 / n_out), generator=generator)
    for table in model.emb_l:
        bound = math.sqrt(1.0 / table.num_embeddings)
        table.weight.uniform_(-bound, bound, generator=generator)
    return model


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Run float32 matmuls as IEEE float32 (no TF32, no bf16 emulation), restoring the previous setting."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def predict_rows(model: "DLRM", numeric: np.ndarray, categorical: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Click probabilities of `model` in IEEE fp32: numeric float32 [N, 13] (log1p'd), categorical int [N, 26]
    (may be memory-mapped; read `chunk` rows at a time) -> float32 [N]."""
    out = np.empty(len(numeric), dtype=np.float32)
    with torch.inference_mode(), ieee_fp32():
        for lo in range(0, len(numeric), chunk):
            hi = min(lo + chunk, len(numeric))
            dense = torch.from_numpy(np.array(numeric[lo:hi], dtype=np.float32))
            ids = torch.from_numpy(np.array(categorical[lo:hi], dtype=np.int64))
            out[lo:hi] = model(dense, ids).float().numpy()
    return out
