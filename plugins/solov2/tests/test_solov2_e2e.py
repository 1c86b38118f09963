"""The real CLI, end to end: train -> eval -> finetune -> predict -> export -> infer (slow)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import solov2_util as U
from detcore.testing.cli import run_task

pytestmark = pytest.mark.slow

MODEL = "solov2-light"
SMALL = [*[arg for s in U.TINY for arg in ("--set", s)],
         "--set", "data.synthetic.num_train=16", "--set", "data.synthetic.num_val=8",
         "--set", "data.synthetic.min_size=96", "--set", "data.synthetic.max_size=160"]
SEGM_KEYS = ("segm_mAP", "segm_mAP_50", "segm_mAP_75", "bbox_mAP", "bbox_mAP_50")


def detcore(work: Path, task: str, *args: str) -> dict:
    result = run_task(MODEL, task, work / task, *SMALL, *args, timeout=900)
    assert result["versions"]["mmdet"] == "3.3.0" and result["versions"]["mmcv"] == "2.1.0"
    assert result["versions"]["mmengine"] == "0.10.7"
    return result


def test_cli_workflow(tmp_path):
    train = detcore(tmp_path, "train", "--set", "train.epochs=2", "--patches", "on")
    m = train["metrics"]
    assert m["steps"] == 16 and m["final_loss"] > 0 and all(k in m for k in SEGM_KEYS)
    assert train["artifacts"]["patches"] == ["static_targets", "fixed_matrix_nms"]
    ckpt = train["artifacts"]["checkpoint"]
    assert Path(ckpt).is_file()

    ev = detcore(tmp_path, "eval", "--weights", ckpt)
    assert all(0.0 <= ev["metrics"][k] <= 1.0 for k in SEGM_KEYS)
    predictions = json.loads(Path(ev["artifacts"]["predictions"]).read_text())
    assert all("segmentation" in p and p["bbox"][2] > 0 for p in predictions)

    # another class count: the class layer is re-initialised
    ft = detcore(tmp_path, "finetune", "--weights", ckpt, "--set", "data.synthetic.num_classes=2",
                 "--set", "train.max_steps=2", "--set", "train.eval_after=false")
    assert ft["metrics"]["steps"] == 2 and ft["artifacts"]["init_weights"] == ckpt
    ft_ckpt = ft["artifacts"]["checkpoint"]

    exp = detcore(tmp_path, "export", "--weights", ckpt)
    assert exp["artifacts"]["onnx_outputs"] == ["dets", "labels", "masks"]
    diffs = {k: v for k, v in exp["metrics"].items() if k.startswith("parity_max_abs_diff")}
    assert set(diffs) == {f"parity_max_abs_diff_{n}" for n in ("dets", "masks")}  # labels: matched
    assert all(v <= 1e-3 for v in diffs.values()), diffs

    inf = detcore(tmp_path, "infer", "--engine", "onnxruntime", "--weights", exp["artifacts"]["onnx"])
    assert all(k in inf["metrics"] for k in SEGM_KEYS) and inf["fps"] > 0
    for key in ("segm_mAP", "bbox_mAP"):  # the exported graph is the eval model
        assert abs(inf["metrics"][key] - ev["metrics"][key]) <= 0.05, (key, inf, ev)

    # last, so a core failure on an image without detections cannot hide the steps above;
    # with the trained weights (the finetuned class layer is fresh) and a low score_thr, so
    # that the briefly trained model draws something
    assert Path(ft_ckpt).is_file()
    pred = detcore(tmp_path, "predict", "--weights", ckpt, "--set", "predict.max_images=2",
                   "--set", "predict.score_threshold=0.0", "--set", "model.score_thr=0.02")
    assert pred["metrics"]["images"] == 2 and pred["metrics"]["detections"] > 0
    assert all(Path(p["output"]).is_file() for p in pred["artifacts"]["predicted"])
