"""EfficientDet-D0 with 2 workers and on 2 loopback nodes (torchrun, gloo; slow lane)."""
from __future__ import annotations

import pytest

from detcore.testing.distributed import train_two_loopback_nodes, train_two_workers

pytestmark = pytest.mark.slow

MODEL = "efficientdet-d0"
# 16 images, batch 4 per worker, 2 workers: 2 steps an epoch
SMALL = ("--config", "tiny", "--set", "data.synthetic.num_train=16",
         "--set", "data.synthetic.num_val=8", "--set", "train.epochs=2")


def test_two_workers_train_and_sharded_eval(tmp_path):
    # sync-BN is on in `coco`; on CPU core skips it (torch's SyncBatchNorm needs cuda/npu)
    result = train_two_workers(MODEL, tmp_path, *SMALL, "--set", "train.sync_bn=true")
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 4
    assert "bbox_mAP_50" in result["metrics"]  # eval sharded over both workers, merged


def test_two_loopback_nodes(tmp_path):
    result = train_two_loopback_nodes(MODEL, tmp_path, *SMALL, "--set", "train.eval_after=false")
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 4
