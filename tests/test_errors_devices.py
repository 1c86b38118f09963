"""Catalogue, devices: asking for hardware that is not there names what is missing."""
from __future__ import annotations

import os

import pytest

from .conftest import assert_user_error


def test_npu_without_torch_npu(run_cli):
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--device", "npu"),
                      3, "--device npu", "torch_npu")


def test_npu_workers_without_torch_npu(run_cli):
    """``--nproc 2`` names what is missing, as one process does (it said "more than the 0 npu
    devices present; use --nproc 0 or fewer")."""
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--device", "npu",
                              "--nproc", 2), 3, "--device npu", "torch_npu is not installed")


def test_cuda_without_gpu(run_cli):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--device", "cuda"),
                      3, "--device cuda", "no CUDA GPU")


def test_nproc_larger_than_devices(run_cli):
    n = (os.cpu_count() or 1) + 1
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--device", "cpu",
                              "--nproc", n), 2, f"--nproc {n} is more than", "CPU cores")


def test_nproc_zero(run_cli):
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--nproc", 0), 2,
                      "at least 1")
