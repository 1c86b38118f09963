"""Multiclass NMS with a fixed-size output, replacing effdet's ``_batch_detection``."""
from __future__ import annotations

from typing import Optional

from detcore.patching import Patch, is_npu, require_torch_npu

#: effdet's NMS IoU threshold (hard-coded in ``effdet.anchors.generate_detections``).
IOU_THRESHOLD = 0.5


def _decode(class_out, box_out, anchor_boxes, indices, img_scale, img_size):
    """One image: top-k candidates -> xyxy boxes and sigmoid scores (effdet's arithmetic)."""
    from effdet.anchors import clip_boxes_xyxy, decode_box_outputs

    boxes = decode_box_outputs(box_out.float(), anchor_boxes[indices, :], output_xyxy=True)
    if img_scale is not None and img_size is not None:
        boxes = clip_boxes_xyxy(boxes, img_size / img_scale)
    scores = class_out.sigmoid().squeeze(1).float()
    return boxes, scores


def _rows(dets, labels, img_scale):
    """(k, 5) + (k,) labels (-1 empty) -> effdet's (k, 6) rows: class 1-based, zero padding."""
    import torch

    boxes = dets[:, :4] if img_scale is None else dets[:, :4] * img_scale
    return torch.cat([boxes, dets[:, 4:5], (labels + 1).to(dets.dtype)[:, None]], dim=1)


def first_k(boxes, scores, labels, k: int):
    """The first ``k`` detections in NMS order, in fixed shapes: ``dets (k, 5)``, ``labels (k,)``.

    Pads with ``k`` empty rows (score 0, label -1) and gathers rows ``0..k-1`` (``cat`` +
    a constant-index ``index_select``): the output shape is ``k`` whatever survives NMS
    (ONNX/ATC friendly), and the kept rows keep NMS's order, as effdet's slice-and-pad
    does. (A ``topk`` on the scores would reorder equal scores and could put an empty
    row before a kept detection that scores exactly 0.)
    """
    import torch

    boxes = torch.cat([boxes, boxes.new_zeros((k, 4))])
    scores = torch.cat([scores, scores.new_zeros((k,))])
    labels = torch.cat([labels.to(torch.int64), labels.new_full((k,), -1, dtype=torch.int64)])
    first = torch.arange(k, device=boxes.device)
    dets = torch.cat([boxes.index_select(0, first), scores.index_select(0, first)[:, None]], dim=1)
    return dets, labels.index_select(0, first)


def _soft_nms_detection(batch_size: int, class_out, box_out, anchor_boxes, indices, classes,
                        img_scale, img_size, max_det_per_image: int):
    """``soft_nms=True``: effdet's own per-image ``generate_detections`` (no fixed-shape version
    exists: soft-NMS rescores and drops candidates below 0.001, so its output is dynamic)."""
    import torch
    from effdet.anchors import generate_detections

    out = [generate_detections(class_out[i], box_out[i], anchor_boxes, indices[i], classes[i],
                               None if img_scale is None else img_scale[i],
                               None if img_size is None else img_size[i],
                               max_det_per_image=max_det_per_image, soft_nms=True)
           for i in range(batch_size)]
    return torch.stack(out, dim=0)


def batch_detection_fixed(batch_size: int, class_out, box_out, anchor_boxes, indices, classes,
                          img_scale: Optional["torch.Tensor"] = None,
                          img_size: Optional["torch.Tensor"] = None,
                          max_det_per_image: int = 100, soft_nms: bool = False):
    """Portable, static-shape ``_batch_detection``: torchvision NMS + :func:`first_k`.

    Same signature and output as effdet's (``B x max_det x 6``: x1, y1, x2, y2, score,
    class 1-based; empty rows all zero; rows in NMS order), but the output shape never
    depends on how many boxes survive NMS (``cat`` + constant-index gather instead of a
    data-dependent pad), and it is plain Python, so ``torch.onnx.export`` traces it
    (effdet's is ``torch.jit.script``). ``soft_nms=True`` runs effdet's own soft-NMS.
    """
    import torch
    from torchvision.ops import batched_nms

    if soft_nms:
        return _soft_nms_detection(batch_size, class_out, box_out, anchor_boxes, indices, classes,
                                   img_scale, img_size, max_det_per_image)
    out = []
    for i in range(batch_size):
        scale_i = None if img_scale is None else img_scale[i]
        size_i = None if img_size is None else img_size[i]
        boxes, scores = _decode(class_out[i], box_out[i], anchor_boxes, indices[i], scale_i, size_i)
        keep = batched_nms(boxes, scores, classes[i], IOU_THRESHOLD)
        dets, labels = first_k(boxes[keep], scores[keep], classes[i][keep], max_det_per_image)
        out.append(_rows(dets, labels, scale_i))
    return torch.stack(out, dim=0)


def batch_detection_npu(batch_size: int, class_out, box_out, anchor_boxes, indices, classes,
                        img_scale: Optional["torch.Tensor"] = None,
                        img_size: Optional["torch.Tensor"] = None,
                        max_det_per_image: int = 100, soft_nms: bool = False):
    """NPU version: ``torch_npu.npu_nms_v4`` with a padded, fixed-size index output.

    Class-aware through the coordinate-offset trick (each class's boxes are shifted
    by ``class * (coordinate_range + 1)`` so boxes of different classes never overlap),
    the way torchvision's ``batched_nms`` does it; ``pad_to_max_output_size=True``
    keeps every shape static. Empty slots are zeroed, as in effdet.
    """
    import torch

    npu = require_torch_npu(FixedSizeNmsPatch.name)
    if soft_nms:
        return _soft_nms_detection(batch_size, class_out, box_out, anchor_boxes, indices, classes,
                                   img_scale, img_size, max_det_per_image)
    out = []
    for i in range(batch_size):
        scale_i = None if img_scale is None else img_scale[i]
        size_i = None if img_size is None else img_size[i]
        boxes, scores = _decode(class_out[i], box_out[i], anchor_boxes, indices[i], scale_i, size_i)
        offsets = classes[i].to(boxes.dtype) * (boxes.max() - boxes.min() + 1)
        shifted = boxes + offsets[:, None]
        iou = torch.tensor(IOU_THRESHOLD, device=boxes.device)
        min_score = torch.tensor(0.0, device=boxes.device)
        keep, valid = npu.npu_nms_v4(shifted, scores, max_det_per_image, iou, min_score,
                                     pad_to_max_output_size=True)
        keep = keep.long()[:max_det_per_image]
        slot = torch.arange(max_det_per_image, device=boxes.device) < valid.reshape(())
        kept_scores = torch.where(slot, scores[keep], torch.zeros_like(scores[keep]))
        labels = torch.where(slot, classes[i][keep], torch.full_like(classes[i][keep], -1))
        dets = torch.cat([boxes[keep] * slot[:, None], kept_scores[:, None]], dim=1)
        out.append(_rows(dets, labels, scale_i))
    return torch.stack(out, dim=0)


class FixedSizeNmsPatch(Patch):
    """Fixed-size multiclass NMS in place of effdet's post-processing NMS.

    NPU limitation: effdet's ``_batch_detection`` is ``torch.jit.script``-compiled and
    its output size depends on how many boxes survive NMS (index by the kept set,
    then pad with ``zeros(max_det - num_det)``): dynamic shapes that the Ascend graph
    compiler (and ``atc``) cannot handle, and that ``torch.onnx.export`` cannot trace
    as shipped (the reference replaced the NMS in ``effdet/anchors.py`` with
    ``npu_multiclass_nms``). This patch replaces ``effdet.bench._batch_detection``
    (used by detcore's model, ``DetBenchPredict`` and ``DetBenchTrain`` in eval) with
    a static-shape version: ``torch_npu.npu_nms_v4`` with a padded output on NPU
    (raising a message naming torch_npu if it is absent), and torchvision NMS +
    :func:`first_k` (``cat`` + a constant-index gather) elsewhere. Same signature and
    output convention as effdet: ``B x max_det x 6``, class 1-based, rows in NMS order,
    empty rows zero. ``soft_nms=True`` (no fixed-shape version) runs effdet's own
    ``generate_detections``. ONNX export always uses the portable version, patched or not.

    Tolerance: 0 on CPU, row for row (the same decode, the same torchvision NMS, the
    same kept order; also with fewer candidates than ``max_det``, all scores equal or
    exactly 0, image scale/size given or not, and soft-NMS).
    """

    name = "fixed_size_nms"
    tolerance = 0.0
    replaces = {"effdet.bench:_batch_detection": "e93416397fae5800"}
    #: the per-image decode, NMS (IoU 0.5) and padding the replacement re-implements
    reproduces = {"effdet.anchors:generate_detections": "647bd9f769514864"}
    npu_ops = ("npu_nms_v4",)

    def targets(self):
        from effdet import bench

        if is_npu(self.device):
            require_torch_npu(self.name)
            fn = batch_detection_npu
        else:
            fn = batch_detection_fixed
        return [(bench, "_batch_detection", fn)]
