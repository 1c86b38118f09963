"""The real CLI, end to end: train -> eval -> finetune -> predict -> export -> infer (slow)."""
from __future__ import annotations

from pathlib import Path

import pytest

from detcore.testing.cli import run_task

pytestmark = pytest.mark.slow

MODEL = "efficientdet-d0"
SMALL = ["--config", "tiny",
         "--set", "data.synthetic.num_train=16", "--set", "data.synthetic.num_val=8"]


def detcore(work: Path, task: str, *args: str) -> dict:
    result = run_task(MODEL, task, work / task, *SMALL, *args, timeout=600)
    assert result["versions"]["effdet"] == "0.4.1" and result["versions"]["timm"] == "1.0.31"
    return result


def test_cli_workflow(tmp_path):
    train = detcore(tmp_path, "train", "--set", "train.epochs=2", "--patches", "on")
    m = train["metrics"]
    assert m["steps"] == 8 and m["final_loss"] > 0 and "bbox_mAP" in m
    assert train["artifacts"]["patches"] == ["npu_one_hot", "fixed_size_nms", "fpn_combine_stack",
                                             "fused_sgd"]
    ckpt = train["artifacts"]["checkpoint"]
    assert Path(ckpt).is_file()

    ev = detcore(tmp_path, "eval", "--weights", ckpt)
    assert 0.0 <= ev["metrics"]["bbox_mAP"] <= 1.0 and "bbox_mAP_50" in ev["metrics"]
    assert Path(ev["artifacts"]["predictions"]).is_file()

    # a dataset with another class count: the class layer is re-initialised
    ft = detcore(tmp_path, "finetune", "--weights", ckpt, "--set", "data.synthetic.num_classes=2",
                 "--set", "train.max_steps=2", "--set", "train.eval_after=false")
    assert ft["metrics"]["steps"] == 2 and ft["artifacts"]["init_weights"] == ckpt
    ft_ckpt = ft["artifacts"]["checkpoint"]

    pred = detcore(tmp_path, "predict", "--weights", ft_ckpt, "--set", "predict.max_images=2",
                   "--set", "data.synthetic.num_classes=2", "--set", "predict.score_threshold=0.0")
    assert pred["metrics"]["images"] == 2
    assert all(Path(p["output"]).is_file() for p in pred["artifacts"]["predicted"])

    exp = detcore(tmp_path, "export", "--weights", ft_ckpt, "--set", "data.synthetic.num_classes=2")
    onnx_path = exp["artifacts"]["onnx"]
    assert Path(onnx_path).is_file() and exp["artifacts"]["onnx_outputs"] == ["dets", "labels"]
    # core matches detections (same label, nearest box) before comparing
    assert exp["metrics"]["parity_max_abs_diff_dets"] <= 1e-3

    inf = detcore(tmp_path, "infer", "--weights", onnx_path, "--set", "data.synthetic.num_classes=2")
    assert 0.0 <= inf["metrics"]["bbox_mAP"] <= 1.0 and inf["fps"] > 0
