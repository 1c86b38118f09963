"""SOLOv2 with 2 workers and on 2 loopback nodes (torchrun, gloo; slow lane)."""
from __future__ import annotations

import pytest

from detcore.testing.distributed import train_two_loopback_nodes, train_two_workers

import solov2_util as U

pytestmark = pytest.mark.slow

# 16 images, batch 2 per worker, 2 workers: 4 steps an epoch
ARGS = (*[arg for s in U.TINY for arg in ("--set", s)], "--set", "data.synthetic.num_train=16",
        "--set", "data.synthetic.num_val=8", "--set", "data.synthetic.min_size=96",
        "--set", "data.synthetic.max_size=160", "--set", "train.epochs=1")


def test_two_workers_train_and_sharded_eval(tmp_path):
    result = train_two_workers("solov2-light", tmp_path, *ARGS)
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 4
    assert "segm_mAP_50" in result["metrics"]


def test_two_loopback_nodes(tmp_path):
    result = train_two_loopback_nodes("solov2-light", tmp_path, *ARGS,
                                      "--set", "train.eval_after=false")
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 4
