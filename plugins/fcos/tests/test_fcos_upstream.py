"""Proven against upstream (slow lane): checkpoints mmdet's own code writes load through the
CLI and give the in-memory model's detections, and detcore's evaluation equals mmdet's.

One real mmengine ``Runner`` (as mmdet 3.x ``tools/train.py`` runs it) trains FCOS for two
iterations on the synthetic set core writes and saves ``iter_2.pth`` with its
``CheckpointHook``; the model it trained, behind detcore's ``FCOSDetector``, is the in-memory
reference. Its weights are also written in early mmdet 2.x's layout (``fcos_cls``...) inside mmcv
1.x's checkpoint, and published (``meta`` + ``state_dict``) for mmdet's own evaluation.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fcos_testlib import SMALL, fcos_config

from detcore_mmdet.testing import (assert_runner_checkpoint_evaluates, assert_same_predictions,
                                  cli_predictions, detection_order, mmdet_evaluation,
                                  runner_trained, save_mmcv1_checkpoint, synthetic_set)

pytestmark = pytest.mark.slow

SETS = [arg for s in SMALL for arg in ("--set", s)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthetic_set(tmp_path_factory.mktemp("fcos-upstream"), max_size=160)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, synth):
    """The Runner's ``iter_2.pth`` and the model it trained as an ``FCOSDetector``."""
    from detcore_fcos.model import FCOSDetector, mmdet_model_config

    def spread_scores(runner):  # off the 0.01 prior: detections to compare
        bias = runner.model.bbox_head.conv_cls.bias
        with torch.no_grad():
            bias.copy_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)) * 1.5)

    return runner_trained(tmp_path_factory.mktemp("runner"), synth, fcos_config(*SMALL),
                          mmdet_model_config, FCOSDetector, before_train=spread_scores)


def cli_eval(work: Path, weights, root) -> tuple[dict, list[dict]]:
    return cli_predictions("fcos", work, weights, root, *SETS)


@pytest.fixture(scope="module")
def runner_eval(upstream, synth, tmp_path_factory):
    return cli_eval(tmp_path_factory.mktemp("eval-runner"), upstream.checkpoint, synth)


def test_runner_checkpoint_evaluates_through_the_cli(upstream, runner_eval):
    saved = assert_runner_checkpoint_evaluates(upstream, runner_eval)
    assert saved["meta"]["iter"] == 2 and "HistoryBuffer" in type(
        saved["message_hub"]["log_scalars"]["train/loss"]).__name__


def test_mmdet2_checkpoint_evaluates_through_the_cli(upstream, synth, tmp_path):
    """Early mmdet 2.x FCOSHead keys (``fcos_cls``/``fcos_reg``/``fcos_centerness``, which
    mmdet itself still renames on load) in mmcv 1.x's checkpoint layout."""
    renames = {"conv_cls": "fcos_cls", "conv_reg": "fcos_reg", "conv_centerness": "fcos_centerness"}
    state = {}
    for key, value in upstream.detector.model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "bbox_head" and parts[1] in renames:
            parts[1] = renames[parts[1]]
        state[".".join(parts)] = value
    assert "bbox_head.fcos_centerness.weight" in state and "bbox_head.conv_cls.bias" not in state
    path = save_mmcv1_checkpoint(upstream, state, tmp_path / "fcos_mmdet2.pth", synth,
                                 mmdet_version="2.0.0", mmcv_version="0.5.1")
    _, got = cli_eval(tmp_path / "eval", path, synth)
    assert_same_predictions(got, upstream.predictions)


def test_eval_equals_mmdets_own_evaluator(upstream, runner_eval, synth, tmp_path):
    """mmdet's ``Runner.test()`` + ``CocoMetric`` on the same weights and images, detcore's
    letterbox input through mmdet's own transforms: the same detections; mapped back to the
    images as core maps boxes (one letterbox scale, clipped), mmdet's detection file is
    detcore's, and its metrics are detcore's; mmdet's own figure within 0.002 bbox mAP."""
    from pycocotools.coco import COCO

    from detcore.evaluate import coco_metrics
    from detcore_mmdet.upstream import as_core_maps_back

    config = upstream.config
    result, ours = runner_eval
    theirs = mmdet_evaluation(upstream, synth, tmp_path)
    assert abs(result["metrics"]["bbox_mAP"] - theirs["bbox_mAP"]) <= 0.002, (result, theirs)
    ann_file = Path(synth) / "annotations" / "instances_val2017.json"
    mapped = as_core_maps_back(json.loads(Path(theirs["results"]["bbox"]).read_text()), ann_file,
                               config["data"]["input_size"])
    assert_same_predictions(ours, sorted(mapped, key=detection_order))
    assert coco_metrics(COCO(str(ann_file)), mapped, ("bbox",)) == {
        k: v for k, v in result["metrics"].items() if k.startswith("bbox_")}
    # configured to map boxes back as mmdet does (its per-axis scale_factor): mmdet's own
    # detection file, clipped to the images, is detcore's
    per_axis, ours = cli_predictions("fcos", tmp_path / "per_axis", upstream.checkpoint, synth,
                                     *SETS, "--set", "data.letterbox.rescale=per_axis")
    clipped = as_core_maps_back(json.loads(Path(theirs["results"]["bbox"]).read_text()), ann_file,
                                config["data"]["input_size"], rescale="per_axis")
    assert_same_predictions(ours, sorted(clipped, key=detection_order))
    assert abs(per_axis["metrics"]["bbox_mAP"] - theirs["bbox_mAP"]) <= 0.002


def test_runner_checkpoint_predicts_and_exports_with_its_own_classes(upstream, synth, tmp_path):
    """mmengine records the dataset's classes (``meta.dataset_meta.classes``): ``predict`` on a
    folder of images and ``export`` need no ``--data`` class count from a COCO root."""
    from detcore.testing.cli import run_task

    ckpt = upstream.checkpoint
    predicted = run_task("fcos", "predict", tmp_path / "predict", "--weights", ckpt,
                         "--data", Path(synth) / "val2017", *SETS)
    assert predicted["metrics"]["images"] > 0
    exported = run_task("fcos", "export", tmp_path / "export", "--weights", ckpt, *SETS)
    assert Path(exported["artifacts"]["onnx"]).is_file()
