"""Proven against upstream (slow lane): checkpoints mmdet's own code writes load through the
CLI and give the in-memory model's detections, and detcore's evaluation is mmdet's.

One real mmengine ``Runner`` (as mmdet 3.x ``tools/train.py`` runs it) trains SOLOv2-light
for two iterations on the synthetic set core writes and saves ``iter_2.pth`` with its
``CheckpointHook``; the model it trained, behind detcore's ``SOLOv2Detector``, is the
in-memory reference. Its weights are also written in the reference port's layout
(WXinlong/SOLO: ``bbox_head.solo_cate``, ``mask_feat_head``...) inside an mmcv checkpoint, and
published (``meta`` + ``state_dict``) for mmdet's own evaluation.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import solov2_util as U
from detcore_mmdet.testing import (assert_same_predictions, cli_predictions, detection_order,
                                  in_memory_predictions)

pytestmark = pytest.mark.slow

MODEL = "solov2-light"
SETS = [arg for s in U.TINY for arg in ("--set", s)]
KEYS = [f"{kind}_{m}" for kind in ("bbox", "segm")
        for m in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from detcore.data.synthetic import SynthSpec, write_synthetic

    # images the size of the canvas (TINY: 96 x 96): no resize and no padding, so mmdet's SOLO
    # post-processing (which cannot take a canvas padded in its pipeline) sees detcore's input
    return write_synthetic(tmp_path_factory.mktemp("solov2-upstream") / "synth",
                           SynthSpec(num_train=8, num_val=8, min_size=96, max_size=96))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, synth):
    """``(iter_2.pth, the trained model as a SOLOv2Detector, its predictions, model config)``."""
    from detcore_mmdet.upstream import full_model_config, train_checkpoint
    from detcore_solov2.model import SOLOv2Detector, mmdet_model_config

    config = U.config(MODEL)
    model_cfg, preprocessor = mmdet_model_config(config, 3)
    model_cfg = full_model_config(model_cfg, preprocessor)

    def spread_scores(runner):  # off mmdet's 0.01 prior: detections to compare
        head = runner.model.mask_head
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            head.conv_cls.bias.fill_(-1.5)
            head.conv_cls.weight.copy_(torch.randn(head.conv_cls.weight.shape, generator=gen) * 0.05)
            head.conv_kernel.weight.copy_(
                torch.randn(head.conv_kernel.weight.shape, generator=gen) * 0.05)

    torch.manual_seed(0)
    ckpt, runner = train_checkpoint(model_cfg, synth, tmp_path_factory.mktemp("runner"),
                                    config["data"]["input_size"], iters=2, masks=True,
                                    before_train=spread_scores)
    detector = SOLOv2Detector(runner.model, preprocessor,
                              max_detections=int(config["eval"]["max_detections"])).eval()
    return ckpt, detector, in_memory_predictions(detector, synth, config), model_cfg, config


def cli_eval(work: Path, weights, root) -> tuple[dict, list[dict]]:
    return cli_predictions(MODEL, work, weights, root, *SETS)


@pytest.fixture(scope="module")
def runner_eval(upstream, synth, tmp_path_factory):
    return cli_eval(tmp_path_factory.mktemp("eval-runner"), upstream[0], synth)


def test_runner_checkpoint_evaluates_through_the_cli(upstream, runner_eval):
    from detcore.checkpoint import load_checkpoint
    from detcore_mmdet import CHECKPOINT_GLOBALS

    ckpt, _, expected, _, _ = upstream
    saved = load_checkpoint(ckpt, CHECKPOINT_GLOBALS)
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"} <= set(saved)
    assert any(k.startswith("mask_head.mask_feature_head.") for k in saved["state_dict"])
    result, got = runner_eval
    assert result["artifacts"]["weights"] == str(ckpt)
    assert_same_predictions(got, expected)


def test_reference_port_checkpoint_evaluates_through_the_cli(upstream, synth, tmp_path):
    """The reference port's layout (WXinlong/SOLO, mmdet 1.x): ``bbox_head.cate_convs``,
    ``solo_cate``, ``solo_kernel``, ``mask_feat_head.conv_pred.0``, in an mmcv checkpoint."""
    from detcore_mmdet.upstream import coco_classes, save_mmcv1

    _, detector, expected, _, _ = upstream
    state = U.solo_layout(detector.model.state_dict())
    optimizer = torch.optim.SGD(detector.model.parameters(), lr=0.01, momentum=0.9).state_dict()
    path = save_mmcv1(state, tmp_path / "SOLOv2_LIGHT_448_R18_3x.pth", coco_classes(synth),
                      mmdet_version="1.0.0+unknown", mmcv_version="0.2.16", optimizer=optimizer)
    _, got = cli_eval(tmp_path / "eval", path, synth)
    assert_same_predictions(got, expected)


def test_eval_equals_mmdets_own_evaluator(upstream, runner_eval, synth, tmp_path):
    """mmdet's ``Runner.test()`` + ``CocoMetric`` (boxes from its masks by ``mask2bbox``) on the
    same weights and images: the same detections (scores, classes, RLE masks, boxes), and every
    bbox and segm figure within 0.002, segm by object size included: core scores segm results
    by their masks' areas, as mmdet (and COCO) do."""
    from detcore_mmdet.upstream import coco_classes, evaluate, mmdet_meta, save_published

    _, detector, _, model_cfg, config = upstream
    result, ours = runner_eval
    published = save_published(detector.model.state_dict(), tmp_path / "published.pth",
                               mmdet_meta(coco_classes(synth)))
    theirs = evaluate(model_cfg, published, synth, config["data"]["input_size"],
                      policy="letterbox", work_dir=tmp_path / "mmdet", segm=True)
    mmdet = sorted(json.loads(Path(theirs["results"]["segm"]).read_text()), key=detection_order)
    for r in mmdet:
        r["bbox"], r["score"] = [round(v, 2) for v in r["bbox"]], round(r["score"], 5)
    assert_same_predictions(ours, mmdet)
    # COCO's -1 (no ground truth of that size) is 0 in detcore's figures
    theirs = {k: max(0.0, v) for k, v in theirs.items() if k in KEYS}
    for key in KEYS:
        assert abs(result["metrics"][key] - theirs[key]) <= 0.002, (key, result["metrics"], theirs)
