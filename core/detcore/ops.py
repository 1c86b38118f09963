"""Static-shape helpers for exportable post-processing."""
from __future__ import annotations

import torch


def pad_detections(boxes, scores, labels, k: int):
    """Top-``k`` detections of one image in fixed shapes: ``dets (k, 5)``, ``labels (k,)``.

    Empty slots have score 0 and label -1. Uses only ``cat`` and ``topk`` so the
    output shape never depends on how many objects were found (ONNX/ATC friendly).
    """
    pad = boxes.new_zeros((k, 4))
    boxes = torch.cat([boxes, pad])
    scores = torch.cat([scores, scores.new_zeros((k,))])
    labels = torch.cat([labels.to(torch.int64), labels.new_full((k,), -1, dtype=torch.int64)])
    top, idx = scores.topk(k)
    dets = torch.cat([boxes[idx], top[:, None]], dim=1)
    return dets, labels[idx]


def batched_fixed_nms(boxes, scores, labels, iou_threshold: float, k: int):
    """Class-aware NMS (torchvision) followed by :func:`pad_detections`."""
    from torchvision.ops import batched_nms

    keep = batched_nms(boxes, scores, labels, iou_threshold)
    return pad_detections(boxes[keep], scores[keep], labels[keep], k)
