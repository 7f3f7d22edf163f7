"""Marks for the tests of the CUDA kernels in the `make kernels` library (sm_90a): the gpu marker, and a skip
where there is no Hopper GPU or no built library."""

from __future__ import annotations

import pytest
import torch

from dlrm_bench.engines.cuda.kernel_library import library_path

ON_HOPPER = (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
             and library_path().is_file())


def hopper_test(test):
    """`test`, marked gpu and skipped unless a Hopper GPU and the library are here."""
    test = pytest.mark.skipif(not ON_HOPPER, reason="needs a Hopper GPU and make kernels")(test)
    return pytest.mark.gpu(test)
