"""Checkpoint I/O: reference layout, reference-style extra keys under weights_only, mmap, atomic writes, errors."""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from dlrm_bench.errors import UserError
from dlrm_bench.model.checkpoint import (TRUST_ENV, check_state_dict, load_checkpoint, load_for_dataset,
                                         save_checkpoint)
from dlrm_bench.model.dlrm import DLRM, init_reference

CARDS = (5, 3, 7, 2, 9, 4, 6, 3, 2, 8, 5, 4, 3, 2, 6, 7, 3, 4, 5, 2, 3, 9, 4, 5, 6, 3)


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return init_reference(DLRM(CARDS), torch.Generator().manual_seed(0)).state_dict()


def _reference_style(sd: dict[str, torch.Tensor]) -> dict:
    """What the reference training script saves: numpy-scalar metrics and a plain-SGD optimizer state."""
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    return {"epoch": 0, "nepochs": 1, "nbatches": 2048, "nbatches_test": 64, "iter": np.int64(2048),
            "state_dict": sd, "train_acc": np.float64(0.9661), "train_loss": np.float32(0.1247),
            "test_acc": np.float64(0.9655), "test_loss": np.float64(0.1255), "total_loss": np.float64(0.0),
            "total_accu": np.int64(0), "opt_state_dict": torch.optim.SGD(params, lr=1.0).state_dict()}


def test_round_trip_keeps_tensors_and_extras(tmp_path: Path, state_dict) -> None:
    path = save_checkpoint(tmp_path / "m.pt", state_dict, {"epoch": 3, "test_auc": 0.8, "note": "x"})
    ckpt = load_checkpoint(path)
    assert ckpt.memory_mapped
    assert sorted(ckpt.state_dict) == sorted(state_dict)
    for key, tensor in state_dict.items():
        torch.testing.assert_close(ckpt.state_dict[key], tensor, rtol=0, atol=0)
    assert ckpt.extras == {"epoch": 3, "test_auc": 0.8, "note": "x"}
    assert ckpt.cardinalities == CARDS


def test_reference_style_checkpoint_loads_under_weights_only(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "tb00_like.pt"
    torch.save(_reference_style(state_dict), path)
    with pytest.raises(Exception):  # plain weights_only refuses the numpy scalars: the allow-list is needed
        torch.load(path, weights_only=True)
    ckpt = load_for_dataset(path, CARDS)
    assert ckpt.extras["train_acc"] == pytest.approx(0.9661) and type(ckpt.extras["train_acc"]) is float
    assert ckpt.extras["iter"] == 2048 and type(ckpt.extras["iter"]) is int
    assert ckpt.extras["opt_state_dict"]["param_groups"][0]["lr"] == 1.0
    torch.testing.assert_close(ckpt.state_dict["emb_l.9.weight"], state_dict["emb_l.9.weight"])


def test_legacy_format_loads_without_mmap(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(_reference_style(state_dict), path, _use_new_zipfile_serialization=False)
    ckpt = load_for_dataset(path, CARDS)
    assert not ckpt.memory_mapped
    torch.testing.assert_close(ckpt.state_dict["top_l.8.bias"], state_dict["top_l.8.bias"])


def test_bare_state_dict_is_accepted(tmp_path: Path, state_dict) -> None:
    torch.save(state_dict, tmp_path / "bare.pt")
    assert load_for_dataset(tmp_path / "bare.pt", CARDS).extras == {}


def test_arbitrary_objects_need_an_explicit_opt_in(tmp_path: Path, state_dict, monkeypatch) -> None:
    path = tmp_path / "with_args.pt"
    torch.save({"state_dict": state_dict, "args": argparse.Namespace(lr=1.0)}, path)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    with pytest.raises(UserError, match=f"argparse.Namespace.*{TRUST_ENV}=1"):
        load_checkpoint(path)
    assert load_checkpoint(path, trust=True).extras["args"].lr == 1.0
    monkeypatch.setenv(TRUST_ENV, "1")
    assert load_checkpoint(path).extras["args"].lr == 1.0


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path: Path, state_dict) -> None:
    path = save_checkpoint(tmp_path / "m.pt", state_dict)
    other = list(CARDS)
    other[3] = 11
    with pytest.raises(UserError, match=r"emb_l\.3\.weight has shape \[2, 128\] but dataset 'x' needs \[11, 128\]"):
        load_for_dataset(path, other, dataset="dataset 'x'")


def test_missing_and_unexpected_tensors_are_named(state_dict) -> None:
    partial = {k: v for k, v in state_dict.items() if k != "top_l.4.weight"}
    with pytest.raises(UserError, match=r"top_l\.4\.weight is missing"):
        check_state_dict(partial, CARDS)
    extra = dict(state_dict, **{"emb_l.26.weight": torch.zeros(3, 128)})
    with pytest.raises(UserError, match=r"unexpected tensor emb_l\.26\.weight"):
        check_state_dict(extra, CARDS)
    wrong_dtype = dict(state_dict, **{"bot_l.0.bias": state_dict["bot_l.0.bias"].double()})
    with pytest.raises(UserError, match=r"bot_l\.0\.bias is torch\.float64"):
        check_state_dict(wrong_dtype, CARDS)


def test_missing_or_truncated_files_are_user_errors(tmp_path: Path, state_dict) -> None:
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    path = save_checkpoint(tmp_path / "m.pt", state_dict)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "list.pt").write_bytes(b"")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, state_dict) -> None:
    path = save_checkpoint(tmp_path / "m.pt", state_dict, {"epoch": 1})
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_checkpoint(path, state_dict, {"unpicklable": lambda: None})
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_large_checkpoint_is_memory_mapped_not_read(tmp_path: Path) -> None:
    """Loading a 256 MB table must not grow the resident memory by anything like its size."""
    rows = (256 << 20) // (128 * 4)
    big = {"emb_l.0.weight": torch.ones(rows, 128)}
    path = save_checkpoint(tmp_path / "big.pt", big)
    del big
    process = psutil.Process()
    before = process.memory_info().rss
    ckpt = load_checkpoint(path)
    grown = process.memory_info().rss - before
    assert ckpt.memory_mapped and ckpt.state_dict["emb_l.0.weight"].shape == (rows, 128)
    assert grown < 32 << 20, f"resident memory grew by {grown >> 20} MB"
    assert float(ckpt.state_dict["emb_l.0.weight"][rows - 1, 5]) == 1.0


NUMPY1_LEGACY_CHECKPOINT = (
    "gAKKCmz8nEb5IGqoUBkugAJN6QMugAJ9cQAoWBAAAABwcm90b2NvbF92ZXJzaW9ucQFN6QNYDQAAAGxpdHRsZV9lbmRpYW5xAohY"
    "CgAAAHR5cGVfc2l6ZXNxA31xBChYBQAAAHNob3J0cQVLAlgDAAAAaW50cQZLBFgEAAAAbG9uZ3EHSwR1dS6AAn1xAChYBQAAAGVw"
    "b2NocQFLAFgHAAAAbmVwb2Noc3ECSwFYCAAAAG5iYXRjaGVzcQNLClgEAAAAaXRlcnEEY251bXB5LmNvcmUubXVsdGlhcnJheQpz"
    "Y2FsYXIKcQVjbnVtcHkKZHR5cGUKcQZYAgAAAGk4cQeJiIdxCFJxCShLA1gBAAAAPHEKTk5OSv////9K/////0sAdHELYmNfY29k"
    "ZWNzCmVuY29kZQpxDFgIAAAABQAAAAAAAABxDVgGAAAAbGF0aW4xcQ6GcQ9ScRCGcRFScRJYCQAAAHRyYWluX2FjY3ETaAVoBlgC"
    "AAAAZjhxFImIh3EVUnEWKEsDaApOTk5K/////0r/////SwB0cRdiaAxYCQAAAGZmZmZmZsOmP3EYaA6GcRlScRqGcRtScRxYCgAA"
    "AHRyYWluX2xvc3NxHWgFaAZYAgAAAGY0cR6JiIdxH1JxIChLA2gKTk5OSv////9K/////0sAdHEhYmgMWAQAAAAAAAA/cSJoDoZx"
    "I1JxJIZxJVJxJlgKAAAAdG90YWxfYWNjdXEnaAVoCWgMWAgAAAADAAAAAAAAAHEoaA6GcSlScSqGcStScSxYCgAAAHN0YXRlX2Rp"
    "Y3RxLX1xLlgBAAAAYXEvY3RvcmNoLl91dGlscwpfcmVidWlsZF90ZW5zb3JfdjIKcTAoKFgHAAAAc3RvcmFnZXExY3RvcmNoCkZs"
    "b2F0U3RvcmFnZQpxMlgOAAAAOTQ4MzY4NjE2NTg5MjhxM1gDAAAAY3B1cTRLA050cTVRSwBLA4VxNksBhXE3iWNjb2xsZWN0aW9u"
    "cwpPcmRlcmVkRGljdApxOClScTl0cTpScTtzWA4AAABvcHRfc3RhdGVfZGljdHE8fXE9KFgFAAAAc3RhdGVxPn1xP1gMAAAAcGFy"
    "YW1fZ3JvdXBzcUBdcUF9cUIoWAIAAABscnFDRz/wAAAAAAAAWAgAAABtb21lbnR1bXFESwBYCQAAAGRhbXBlbmluZ3FFSwBYDAAA"
    "AHdlaWdodF9kZWNheXFGSwBYCAAAAG5lc3Rlcm92cUeJWAgAAABtYXhpbWl6ZXFIiVgHAAAAZm9yZWFjaHFJTlgOAAAAZGlmZmVy"
    "ZW50aWFibGVxSolYBQAAAGZ1c2VkcUtOWAYAAABwYXJhbXNxTF1xTUsAYXVhdXUugAJdcQBYDgAAADk0ODM2ODYxNjU4OTI4cQFh"
    "LgMAAAAAAAAAAAAAAAAAAAAAAAAA"
)
"""A legacy-format (pre-zip) torch.save of {"epoch": 0, "iter": numpy.int64(5), "train_acc": numpy.float64(0.7),
"train_loss": numpy.float32(0.5), "total_accu": numpy.int64(3), "opt_state_dict": SGD(lr=1.0).state_dict(),
"state_dict": {"a": zeros(3)}, ...} written under numpy 1.26: its pickle names numpy.core.multiarray.scalar,
which numpy 2 renamed to numpy._core."""


def test_numpy1_era_checkpoint_loads_under_the_installed_numpy(tmp_path: Path) -> None:
    path = tmp_path / "numpy1.pt"
    path.write_bytes(base64.b64decode("".join(NUMPY1_LEGACY_CHECKPOINT)))
    ckpt = load_checkpoint(path)
    assert not ckpt.memory_mapped
    assert ckpt.extras["train_acc"] == 0.7 and ckpt.extras["iter"] == 5 and ckpt.extras["total_accu"] == 3
    assert ckpt.extras["opt_state_dict"]["param_groups"][0]["lr"] == 1.0
    torch.testing.assert_close(ckpt.state_dict["a"], torch.zeros(3))
