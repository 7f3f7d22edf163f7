"""The FP32 DLRM module: reference architecture, parameter names, interaction order."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlrm_bench.criteo.schema import NUM_INTERACTIONS, TOP_MLP_INPUT
from dlrm_bench.model.dlrm import (DLRM, DenseArch, EmbeddingArch, InteractionArch, OverArch, init_reference,
                                   interaction_pairs, reference_shapes)

CARDS = (5, 3, 7, 2, 9, 4, 6, 3, 2, 8, 5, 4, 3, 2, 6, 7, 3, 4, 5, 2, 3, 9, 4, 5, 6, 3)

REFERENCE_KEYS = ([f"bot_l.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
                  + [f"emb_l.{k}.weight" for k in range(26)]
                  + [f"top_l.{i}.{p}" for i in (0, 2, 4, 6, 8) for p in ("weight", "bias")])


def _model(seed: int = 0) -> DLRM:
    return init_reference(DLRM(CARDS), torch.Generator().manual_seed(seed))


def _inputs(batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    numeric = torch.rand(batch, 13, generator=g) * 5
    categorical = torch.stack([torch.randint(0, n, (batch,), generator=g) for n in CARDS], dim=1)
    return numeric, categorical


def test_state_dict_is_the_reference_layout() -> None:
    sd = _model().state_dict()
    assert sorted(sd) == sorted(REFERENCE_KEYS)
    shapes = reference_shapes(CARDS)
    assert {k: tuple(v.shape) for k, v in sd.items()} == shapes
    assert shapes["bot_l.0.weight"] == (512, 13) and shapes["bot_l.4.weight"] == (128, 256)
    assert shapes["top_l.0.weight"] == (1024, 479) and shapes["top_l.8.weight"] == (1, 256)
    assert shapes["emb_l.4.weight"] == (9, 128)


def test_interaction_pairs_follow_the_reference_order() -> None:
    rows, cols = interaction_pairs()
    assert len(rows) == NUM_INTERACTIONS == 351
    assert list(zip(rows, cols))[:6] == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert list(zip(rows, cols))[-1] == (26, 25)
    assert all(i > j for i, j in zip(rows, cols))
    assert len(set(zip(rows, cols))) == 351


def test_interaction_matches_explicit_dot_products() -> None:
    g = torch.Generator().manual_seed(3)
    dense, sparse = torch.randn(4, 128, generator=g), torch.randn(4, 26, 128, generator=g)
    out = InteractionArch()(dense, sparse)
    assert out.shape == (4, TOP_MLP_INPUT)
    vectors = [dense] + [sparse[:, k] for k in range(26)]
    expected = [(vectors[i] * vectors[j]).sum(dim=1) for i in range(27) for j in range(i)]
    torch.testing.assert_close(out[:, :128], dense)
    torch.testing.assert_close(out[:, 128:], torch.stack(expected, dim=1), rtol=1e-5, atol=1e-4)


def test_bottom_mlp_has_relu_after_every_layer() -> None:
    arch = DenseArch()
    kinds = [type(m) for m in arch]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]
    with torch.no_grad():
        arch[4].bias.fill_(-100.0)  # the last Linear goes negative: the final ReLU must clamp it
    out = arch(torch.rand(8, 13))
    assert out.shape == (8, 128) and torch.all(out == 0)


def test_top_mlp_ends_in_sigmoid_and_logits_agree() -> None:
    arch = OverArch()
    kinds = [type(m) for m in arch]
    assert kinds == [nn.Linear, nn.ReLU] * 4 + [nn.Linear, nn.Sigmoid]
    x = torch.randn(5, 479)
    torch.testing.assert_close(torch.sigmoid(arch.logits(x)), arch(x))


def test_embedding_arch_looks_up_one_row_per_feature() -> None:
    arch = EmbeddingArch(CARDS, dim=128)
    _, categorical = _inputs(6)
    out = arch(categorical)
    assert out.shape == (6, 26, 128)
    torch.testing.assert_close(out[2, 9], arch[9].weight[categorical[2, 9]])


def test_forward_gives_probabilities_of_the_batch() -> None:
    model = _model()
    numeric, categorical = _inputs(11)
    with torch.no_grad():
        p = model(numeric, categorical)
        z = model.logits(numeric, categorical)
    assert p.shape == (11,) and p.dtype == torch.float32
    assert torch.all((p > 0) & (p < 1))
    torch.testing.assert_close(torch.sigmoid(z), p)
    with torch.no_grad():  # int32 ids (the preprocessed format) work as well as int64
        torch.testing.assert_close(model(numeric, categorical.to(torch.int32)), p)


def test_from_state_dict_uses_the_given_tensors() -> None:
    source = _model(seed=5)
    sd = source.state_dict()
    model = DLRM.from_state_dict(sd)
    assert model.emb_l[3].weight.data_ptr() == sd["emb_l.3.weight"].data_ptr()  # no copy
    assert model.cardinalities == CARDS
    numeric, categorical = _inputs(7)
    with torch.no_grad():
        torch.testing.assert_close(model(numeric, categorical), source(numeric, categorical))


def test_wrong_table_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="26 cardinalities"):
        DLRM(CARDS[:25])


def test_reference_initialization_ranges() -> None:
    model = _model()
    bound = math.sqrt(1.0 / 9)
    assert model.emb_l[4].weight.abs().max() <= bound
    std = model.top_l[2].weight.std().item()
    assert abs(std - math.sqrt(2.0 / (1024 + 1024))) < 0.1 * std
