"""COCO metrics: known answers, and the two backends agree exactly."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detcore.data.coco import load_coco
from detcore.data.synthetic import SynthSpec, write_synthetic
from detcore.evaluate import coco_metrics


@pytest.fixture(scope="module")
def gt(tmp_path_factory):
    root = write_synthetic(tmp_path_factory.mktemp("ev") / "c",
                           SynthSpec(num_train=1, num_val=20, min_size=96, max_size=128))
    return load_coco(root, "val")[0]


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode()
    return encoded


def predictions(coco, jitter: float, seed: int = 0) -> list[dict]:
    """A jittered true positive and an empty-mask false positive per ground-truth object."""
    rng = np.random.default_rng(seed)
    out = []
    for ann in coco.dataset["annotations"]:
        img = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        d = rng.normal(0, jitter, 4)
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                    "bbox": [x + d[0], y + d[1], w + d[2], h + d[3]],
                    "score": float(rng.uniform(0.5, 1)), "segmentation": rle(coco.annToMask(ann))})
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                    "bbox": [0, 0, img["width"] / 3, img["height"] / 3], "score": 0.1,
                    "segmentation": rle(np.zeros((img["height"], img["width"])))})
    return out


def test_perfect_predictions_score_one(gt):
    metrics = coco_metrics(gt, predictions(gt, 0.0), ("bbox", "segm"))
    assert metrics["bbox_mAP"] == 1.0 and metrics["segm_mAP"] == 1.0


def test_no_predictions_score_zero(gt):
    assert coco_metrics(gt, [], ("bbox",))["bbox_mAP"] == 0.0


def test_results_are_not_mutated(gt):
    preds = predictions(gt, 1.0)
    before = [dict(p) for p in preds]
    coco_metrics(gt, preds, ("bbox", "segm"))
    assert preds == before


def test_faster_coco_eval_gives_identical_metrics(gt):
    pytest.importorskip("faster_coco_eval")
    preds = predictions(gt, 2.0)
    ref = coco_metrics(gt, preds, ("bbox", "segm"), "pycocotools")
    fast = coco_metrics(gt, preds, ("bbox", "segm"), "faster_coco_eval")
    assert 0.2 < ref["bbox_mAP"] < 1.0
    assert fast == ref


def test_segm_results_are_scored_by_mask_area_not_box_area(gt):
    """A segm result that also carries its box must fall in the small/medium/large range of its
    mask (as mmdet's results, which have no box, do): pycocotools' ``loadRes`` takes the box's
    area when a ``bbox`` key is present."""
    with_boxes = predictions(gt, jitter=0.0)
    without = [{k: v for k, v in r.items() if k != "bbox"} for r in with_boxes]
    assert coco_metrics(gt, with_boxes, ("segm",)) == coco_metrics(gt, without, ("segm",))
