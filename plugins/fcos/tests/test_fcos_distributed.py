"""FCOS with 2 workers and on 2 loopback nodes (torchrun, gloo; slow lane)."""
from __future__ import annotations

import pytest

from detcore.testing.distributed import train_two_loopback_nodes, train_two_workers

from test_fcos_e2e import SMALL

pytestmark = pytest.mark.slow

# 16 images, batch 4 per worker, 2 workers: 2 steps an epoch
ARGS = (*SMALL, "--set", "train.epochs=2")


def test_two_workers_train_and_sharded_eval(tmp_path):
    result = train_two_workers("fcos", tmp_path, *ARGS)
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 4
    assert "bbox_mAP_50" in result["metrics"]


def test_two_loopback_nodes(tmp_path):
    result = train_two_loopback_nodes("fcos", tmp_path, *ARGS, "--set", "train.eval_after=false")
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 4
