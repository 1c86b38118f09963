"""The numbers the evaluation plots draw, computed without matplotlib (and tested on their own).

Precision-recall curves are read from COCOeval's own ``precision`` array
(:func:`detcore.evaluate.pr_arrays`), not recomputed: COCO's AP of a class is the mean of its
101-point interpolated precision, so the area under each drawn curve, taken that way, is the AP
the evaluation reported. The confusion matrix matches predictions to ground truth with
torchvision's ``box_iou``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The two IoU settings a precision-recall plot shows: COCO's AP50 and its AP (0.5:0.95).
IOU_50, IOU_ALL = "0.5", "0.5:0.95"


@dataclass
class PRCurve:
    """One class's precision at COCO's 101 recall points (``recall``)."""

    name: str
    recall: np.ndarray
    precision: np.ndarray

    @property
    def ap(self) -> float:
        """COCO's AP: the mean of the interpolated precision over the 101 recall points."""
        return float(self.precision.mean())


def pr_curves(arrays: dict, names: dict[int, str], iou: str) -> list[PRCurve]:
    """The curve of every class with ground truth, at IoU 0.5 (``IOU_50``) or averaged over
    COCO's ten thresholds 0.5:0.95 (``IOU_ALL``); ``names`` maps category ids to names.

    The mean of the curves' APs is the reported mAP (``stats[1]`` and ``stats[0]``): COCO
    averages the same entries, and a class has either all of them or none (-1: no ground truth).
    """
    precision = arrays["precision"]  # [T, R, K]
    if iou == IOU_50:
        at = int(np.flatnonzero(np.isclose(arrays["iou_thrs"], 0.5))[0])
        per_class = precision[at]
    elif iou == IOU_ALL:
        per_class = precision.mean(axis=0)
    else:
        raise ValueError(f"iou {iou!r}: use {IOU_50!r} or {IOU_ALL!r}")
    curves = []
    for k, cat in enumerate(arrays["cat_ids"].tolist()):
        if (precision[:, :, k] > -1).all():
            curves.append(PRCurve(names.get(cat, str(cat)), arrays["rec_thrs"], per_class[:, k]))
    return curves


def reported_ap(arrays: dict, iou: str) -> float:
    """The AP COCOeval's summary reported for ``iou`` (unrounded)."""
    return float(arrays["stats"][1 if iou == IOU_50 else 0])


def confusion_matrix(coco_gt, predictions: list[dict], image_ids, cat_ids: list[int],
                     iou: float, score: float) -> np.ndarray:
    """Counts ``[true, predicted]`` over ``image_ids``, classes in ``cat_ids`` order and index
    ``K`` (= ``len(cat_ids)``) for the background: ``[K, c]`` a prediction of ``c`` on no
    object, ``[c, K]`` an object of class ``c`` no prediction found.

    Predictions scoring at least ``score`` are matched best score first, each to the unmatched
    object (any class: that is what shows confusions) it overlaps most, if the IoU is at least
    ``iou``. Crowd annotations are left out, as COCO's evaluation ignores them.
    """
    import torch
    from torchvision.ops import box_iou

    index = {c: i for i, c in enumerate(cat_ids)}
    background = len(cat_ids)
    matrix = np.zeros((background + 1, background + 1), np.int64)
    by_image: dict[int, list[dict]] = {}
    for p in predictions:
        if p["score"] >= score and p["category_id"] in index:
            by_image.setdefault(p["image_id"], []).append(p)
    for image_id in image_ids:
        objects = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        found = sorted(by_image.get(image_id, []), key=lambda p: -p["score"])
        overlap = box_iou(_xyxy([d["bbox"] for d in found]), _xyxy([a["bbox"] for a in objects]))
        taken = torch.zeros(len(objects), dtype=torch.bool)
        for i, det in enumerate(found):
            ious = overlap[i].masked_fill(taken, -1.0)
            j = int(ious.argmax()) if len(objects) else -1
            if j >= 0 and ious[j] >= iou:
                taken[j] = True
                matrix[index[objects[j]["category_id"]], index[det["category_id"]]] += 1
            else:
                matrix[background, index[det["category_id"]]] += 1
        for j in torch.nonzero(~taken).flatten().tolist():
            matrix[index[objects[j]["category_id"]], background] += 1
    return matrix


def _xyxy(boxes: list) -> "torch.Tensor":
    import torch

    t = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)
