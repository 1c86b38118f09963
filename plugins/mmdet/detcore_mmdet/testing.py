"""What the mmdet-family plugins' "proven against upstream" tests share: a model an mmengine
``Runner`` trained (:func:`runner_trained`), and the same detections, in the same order, from
that model in memory, from ``detcore run --task eval`` and from mmdet's own evaluation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple


class Upstream(NamedTuple):
    """What :func:`runner_trained` returns: the Runner's checkpoint and the model it trained."""

    checkpoint: Path  # the Runner's ``iter_2.pth`` (its CheckpointHook's full layout)
    detector: Any  # the trained mmdet model behind the plugin's detector class, in eval mode
    predictions: list[dict]  # the detector's COCO results on the val split, ordered
    model_cfg: dict  # the full mmdet model config (``upstream.full_model_config``)
    config: dict  # the detcore config the model was built from


def synthetic_set(folder, *, max_size: int) -> Path:
    """Core's synthetic set in ``folder/synth``: 8 train and 8 val images of 96 to ``max_size``
    pixels a side, which the Runner trains on and every side evaluates."""
    from detcore.data.synthetic import SynthSpec, write_synthetic

    return write_synthetic(Path(folder) / "synth", SynthSpec(num_train=8, num_val=8, min_size=96,
                                                             max_size=max_size))


def runner_trained(work_dir, root, config, mmdet_model_config, detector_class, *,
                   masks: bool = False, before_train=None) -> Upstream:
    """Two iterations of mmengine's ``Runner`` (:func:`~detcore_mmdet.upstream.train_checkpoint`,
    torch seeded 0) on ``root``'s train split, for the plugin's ``mmdet_model_config(config,
    num_classes)``; the model it trained wrapped as ``detector_class(model, preprocessor)``."""
    import torch

    from .upstream import coco_classes, full_model_config, train_checkpoint

    model_cfg, preprocessor = mmdet_model_config(config, len(coco_classes(root)))
    model_cfg = full_model_config(model_cfg, preprocessor)
    torch.manual_seed(0)
    ckpt, runner = train_checkpoint(model_cfg, root, work_dir, config["data"]["input_size"],
                                    iters=2, masks=masks, before_train=before_train)
    detector = detector_class(runner.model, preprocessor).eval()
    return Upstream(ckpt, detector, in_memory_predictions(detector, root, config), model_cfg,
                    config)


def assert_runner_checkpoint_evaluates(upstream: Upstream, evaluated) -> dict:
    """The Runner's checkpoint has mmengine's layout, and ``evaluated`` (:func:`cli_predictions`
    on it) reads those weights and gives the in-memory model's detections. Returns the loaded
    checkpoint for the model's own checks."""
    from detcore.checkpoint import load_checkpoint

    from . import CHECKPOINT_GLOBALS

    saved = load_checkpoint(upstream.checkpoint, CHECKPOINT_GLOBALS)
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"} <= set(saved)
    result, got = evaluated
    assert result["artifacts"]["weights"] == str(upstream.checkpoint)
    assert_same_predictions(got, upstream.predictions)
    return saved


def save_mmcv1_checkpoint(upstream: Upstream, state: dict, path, root, **versions) -> Path:
    """``state`` (the trained weights, in an older mmdet's key layout) in mmcv 1.x's checkpoint
    with an SGD optimizer state, as mmdet 1.x/2.x training saved it; ``versions``:
    ``mmdet_version``, ``mmcv_version``."""
    import torch

    from .upstream import coco_classes, save_mmcv1

    model = upstream.detector.model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9).state_dict()
    return save_mmcv1(state, path, coco_classes(root), optimizer=optimizer, **versions)


def mmdet_evaluation(upstream: Upstream, root, work_dir, *, segm: bool = False) -> dict:
    """mmdet's own evaluation (:func:`~detcore_mmdet.upstream.evaluate`, ``letterbox`` policy)
    of the trained weights, published as mmdet 3.x publishes a model."""
    from .upstream import coco_classes, evaluate, mmdet_meta, save_published

    work_dir = Path(work_dir)
    published = save_published(upstream.detector.model.state_dict(), work_dir / "published.pth",
                                mmdet_meta(coco_classes(root)))
    return evaluate(upstream.model_cfg, published, root, upstream.config["data"]["input_size"],
                    policy="letterbox", work_dir=work_dir / "mmdet", segm=segm)


def detection_order(r: dict):
    """A total order on COCO result entries, so two result files compare entry by entry."""
    return r["image_id"], -r["score"], r["category_id"], r["bbox"]


def in_memory_predictions(model, root, config) -> list[dict]:
    """The in-memory model's COCO results on ``root``'s val split, as core's eval makes them."""
    import torch

    from detcore.data.coco import CocoDetection
    from detcore.evaluate import predict_dataset
    from detcore.train.loader import eval_loader

    dataset = CocoDetection(root, "val", config["data"]["input_size"],
                            masks=model.task_type == "segm")
    loader = eval_loader(dataset, int(config["eval"]["batch_size"]), 0, 0, 1)
    return sorted(predict_dataset(model, loader, torch.device("cpu")), key=detection_order)


def cli_predictions(model: str, work: Path, weights, root, *sets) -> tuple[dict, list[dict]]:
    """``detcore run --task eval`` through the CLI: ``(result.json, its predictions, ordered)``."""
    from detcore.testing.cli import run_task

    result = run_task(model, "eval", work, "--weights", weights, "--data", root, *sets)
    got = json.loads(Path(result["artifacts"]["predictions"]).read_text())
    return result, sorted(got, key=detection_order)


def assert_same_predictions(got: list[dict], expected: list[dict]) -> None:
    """Entry by entry: same image and category, scores within 2e-5, boxes within 0.011 px (core
    rounds to 0.01), the same RLE masks where there are masks."""
    import pytest

    assert len(expected) > 20, "the comparison needs detections"
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert (g["image_id"], g["category_id"]) == (e["image_id"], e["category_id"])
        assert g["score"] == pytest.approx(e["score"], abs=2e-5)
        assert g["bbox"] == pytest.approx(e["bbox"], abs=0.011)
        if "segmentation" in g or "segmentation" in e:
            assert g["segmentation"] == e["segmentation"]
