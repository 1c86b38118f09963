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

import functools
import json
from pathlib import Path

import pytest
import torch

import solov2_util as U
from detcore_mmdet.testing import (assert_runner_checkpoint_evaluates, assert_same_predictions,
                                  cli_predictions, detection_order, mmdet_evaluation,
                                  runner_trained, save_mmcv1_checkpoint, synthetic_set)

pytestmark = pytest.mark.slow

MODEL = "solov2-light"
SETS = [arg for s in U.TINY for arg in ("--set", s)]
KEYS = [f"{kind}_{m}" for kind in ("bbox", "segm")
        for m in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    # images the size of the canvas (TINY: 96 x 96): no resize and no padding, so mmdet's SOLO
    # post-processing (which cannot take a canvas padded in its pipeline) sees detcore's input
    return synthetic_set(tmp_path_factory.mktemp("solov2-upstream"), max_size=96)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, synth):
    """The Runner's ``iter_2.pth`` and the model it trained as a ``SOLOv2Detector``."""
    from detcore_solov2.model import SOLOv2Detector, mmdet_model_config

    config = U.config(MODEL)

    def spread_scores(runner):  # off mmdet's 0.01 prior: detections to compare
        head = runner.model.mask_head
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            head.conv_cls.bias.fill_(-1.5)
            head.conv_cls.weight.copy_(torch.randn(head.conv_cls.weight.shape, generator=gen) * 0.05)
            head.conv_kernel.weight.copy_(
                torch.randn(head.conv_kernel.weight.shape, generator=gen) * 0.05)

    detector = functools.partial(SOLOv2Detector,
                                 max_detections=int(config["eval"]["max_detections"]))
    return runner_trained(tmp_path_factory.mktemp("runner"), synth, config, mmdet_model_config,
                          detector, masks=True, before_train=spread_scores)


def cli_eval(work: Path, weights, root) -> tuple[dict, list[dict]]:
    return cli_predictions(MODEL, work, weights, root, *SETS)


@pytest.fixture(scope="module")
def runner_eval(upstream, synth, tmp_path_factory):
    return cli_eval(tmp_path_factory.mktemp("eval-runner"), upstream.checkpoint, synth)


def test_runner_checkpoint_evaluates_through_the_cli(upstream, runner_eval):
    saved = assert_runner_checkpoint_evaluates(upstream, runner_eval)
    assert any(k.startswith("mask_head.mask_feature_head.") for k in saved["state_dict"])


def test_reference_port_checkpoint_evaluates_through_the_cli(upstream, synth, tmp_path):
    """The reference port's layout (WXinlong/SOLO, mmdet 1.x): ``bbox_head.cate_convs``,
    ``solo_cate``, ``solo_kernel``, ``mask_feat_head.conv_pred.0``, in an mmcv checkpoint."""
    state = U.solo_layout(upstream.detector.model.state_dict())
    path = save_mmcv1_checkpoint(upstream, state, tmp_path / "SOLOv2_LIGHT_448_R18_3x.pth", synth,
                                 mmdet_version="1.0.0+unknown", mmcv_version="0.2.16")
    _, got = cli_eval(tmp_path / "eval", path, synth)
    assert_same_predictions(got, upstream.predictions)


def test_eval_equals_mmdets_own_evaluator(upstream, runner_eval, synth, tmp_path):
    """mmdet's ``Runner.test()`` + ``CocoMetric`` (boxes from its masks by ``mask2bbox``) on the
    same weights and images: the same detections (scores, classes, RLE masks, boxes), and every
    bbox and segm figure within 0.002, segm by object size included: core scores segm results
    by their masks' areas, as mmdet (and COCO) do."""
    result, ours = runner_eval
    theirs = mmdet_evaluation(upstream, synth, tmp_path, segm=True)
    mmdet = sorted(json.loads(Path(theirs["results"]["segm"]).read_text()), key=detection_order)
    for r in mmdet:
        r["bbox"], r["score"] = [round(v, 2) for v in r["bbox"]], round(r["score"], 5)
    assert_same_predictions(ours, mmdet)
    # COCO's -1 (no ground truth of that size) is 0 in detcore's figures
    theirs = {k: max(0.0, v) for k, v in theirs.items() if k in KEYS}
    for key in KEYS:
        assert abs(result["metrics"][key] - theirs[key]) <= 0.002, (key, result["metrics"], theirs)
