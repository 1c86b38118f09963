"""Static-shape FCOS post-processing: one code path for patched eval, ONNX export and the NPU.

mmdet's ``BaseDenseHead._predict_by_feat_single`` keeps the (point, class) pairs whose score
passes ``score_thr`` with boolean indexing and ``nonzero``, sorts them, keeps ``nms_pre`` per
level, decodes, multiplies by centerness, drops boxes of size ``<= min_bbox_size`` and runs
mmcv's class-aware NMS, one image at a time: every shape after the first threshold depends on
the data. The same arithmetic in fixed shapes, batched over images:

1. per level, ``topk(nms_pre)`` over all (point, class) scores, *then* mark the pairs whose
   score is not above ``score_thr`` as empty (score 0). The valid pairs are exactly mmdet's:
   the top-k of the pairs above a threshold are the pairs above it among the top-k. With
   ``nms_pre <= 0`` (mmdet's default -1 when the key is absent) mmdet's
   ``filter_scores_and_topk`` keeps ``min(nms_pre, n)`` of the ``n`` pairs above the
   threshold, i.e. drops the last ``|nms_pre|`` of them (none kept for 0); so does this;
2. decode those ``K = sum(k_l)`` candidates (``distance2bbox`` clipped to the canvas), score =
   class score x centerness, boxes too small -> score 0 (mmdet measures them after the
   rescale to the original image: ``box_scale``);
3. class-aware NMS with a fixed-size output, ``dets [B, max_per_img, 5]`` and
   ``labels [B, max_per_img]`` in the export contract's order (empty slots: score 0,
   label -1), through one of:

   * ``onnx``: the ONNX ``NonMaxSuppression`` operator (what ``atc`` converts and what
     mmdet 2.x's ``pytorch2onnx`` emitted for the reference's ``fcos.onnx``), wrapped as an
     autograd Function whose eager forward is torchvision's NMS per class; the kept pairs are
     scattered into a ``[B, C*K]`` score table and ``topk`` picks the final detections, so
     the graph is batch-vectorised (dynamic batch works) and every output shape is fixed;
   * ``npu``: ``torch_npu.npu_batch_nms`` (fixed-size multiclass NMS on the device).
"""
from __future__ import annotations

import torch
import torchvision.ops  # noqa: F401  (imported before any tracing: its import runs a torch op)

BACKENDS = ("onnx", "npu")


def candidates(head, cls_scores, bbox_preds, centernesses, img_shape, nms_pre: int,
               score_thr: float, min_bbox_size: float = -1.0, box_scale=None):
    """All levels' top-k (point, class) candidates: ``boxes [B,K,4]``, ``scores [B,K]``, ``labels [B,K]``.

    ``img_shape``: ``(h, w)`` of the canvas the boxes are clipped to. A candidate that mmdet
    would have dropped (score not above ``score_thr``, beyond its ``nms_pre`` cut, box not
    larger than ``min_bbox_size`` when that is >= 0) has score 0. ``box_scale``: ``[B, 2]``
    (x, y) factors mmdet applies to the boxes before it measures them (``1 / scale_factor``
    with ``rescale``), or None.
    """
    batch, num_classes = cls_scores[0].shape[0], head.cls_out_channels
    sizes = [c.shape[-2:] for c in cls_scores]
    priors = head.prior_generator.grid_priors(sizes, dtype=bbox_preds[0].dtype,
                                              device=bbox_preds[0].device)
    h, w = (float(v) for v in img_shape[:2])
    all_boxes, all_scores, all_labels = [], [], []
    for cls, reg, ctr, points in zip(cls_scores, bbox_preds, centernesses, priors):
        scores = cls.permute(0, 2, 3, 1).reshape(batch, -1).sigmoid()  # [B, N*C] point-major
        reg = reg.permute(0, 2, 3, 1).reshape(batch, -1, 4)
        ctr = ctr.permute(0, 2, 3, 1).reshape(batch, -1).sigmoid()
        k = scores.shape[1] if nms_pre <= 0 else min(int(nms_pre), scores.shape[1])
        top, idx = scores.topk(k, dim=1)
        point = torch.div(idx, num_classes, rounding_mode="floor")
        label = idx - point * num_classes
        dist = reg.gather(1, point[..., None].expand(-1, -1, 4))
        pts = points[point]  # [B, k, 2]
        x1 = (pts[..., 0] - dist[..., 0]).clamp(min=0, max=w)
        y1 = (pts[..., 1] - dist[..., 1]).clamp(min=0, max=h)
        x2 = (pts[..., 0] + dist[..., 2]).clamp(min=0, max=w)
        y2 = (pts[..., 1] + dist[..., 3]).clamp(min=0, max=h)
        valid = top > score_thr
        if nms_pre <= 0:  # mmdet keeps scores[:min(nms_pre, n)] of the n valid pairs
            rank = torch.arange(k, device=top.device)
            keep = valid.sum(1, keepdim=True) + int(nms_pre) if nms_pre < 0 else 0
            valid = valid & (rank < keep)
        if min_bbox_size >= 0:
            bw, bh = x2 - x1, y2 - y1
            if box_scale is not None:  # as mmdet: the rescaled box's width and height
                sx, sy = box_scale[:, :1], box_scale[:, 1:]
                bw, bh = x2 * sx - x1 * sx, y2 * sy - y1 * sy
            valid = valid & (bw > min_bbox_size) & (bh > min_bbox_size)
        score = top * ctr.gather(1, point)
        all_boxes.append(torch.stack([x1, y1, x2, y2], dim=-1))
        all_scores.append(torch.where(valid, score, torch.zeros_like(score)))
        all_labels.append(label)
    return torch.cat(all_boxes, 1), torch.cat(all_scores, 1), torch.cat(all_labels, 1)


class OnnxNMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (per batch and class): boxes ``[B,K,4]``, scores ``[B,C,K]``.

    Returns ``selected [M, 3]`` (batch, class, box) like the operator. Eager: torchvision's
    NMS for each image and class (boxes with score ``<= score_thr`` are ignored, at most
    ``max_per_class`` kept per class, in descending score order), as onnxruntime computes it.
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_thr: float, score_thr: float):
        from torchvision.ops import nms

        out = []
        for b in range(scores.shape[0]):
            cls_idx, box_idx = (scores[b] > score_thr).nonzero(as_tuple=True)
            for c in cls_idx.unique().tolist():
                sel = box_idx[cls_idx == c]
                keep = nms(boxes[b, sel].float(), scores[b, c, sel].float(), iou_thr)[:max_per_class]
                rows = torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), sel[keep]], 1)
                out.append(rows)
        if not out:
            return torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)
        return torch.cat(out).to(torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_thr, score_thr):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
                    g.op("Constant", value_t=torch.tensor([iou_thr], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([score_thr], dtype=torch.float32)))


def fixed_nms(boxes, scores, labels, num_classes: int, iou_thr: float, max_per_img: int,
              backend: str = "onnx"):
    """Class-aware NMS with fixed-size output: ``(dets [B,M,5], labels [B,M] int64)``, M = max_per_img.

    Input candidates with score 0 are empty. Output rows are in descending score order;
    empty slots have score 0, a zero box and label -1.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: use one of {BACKENDS}")
    batch, k = scores.shape
    if k == 0:  # no candidate at all (empty feature maps): every slot is empty
        return (boxes.new_zeros((batch, max_per_img, 5)),
                torch.full((batch, max_per_img), -1, dtype=torch.int64, device=boxes.device))
    if backend == "npu":
        return _fixed_nms_npu(boxes, scores, labels, num_classes, iou_thr, max_per_img)
    table = scores.new_zeros((batch, num_classes, k)).scatter(1, labels[:, None, :], scores[:, None, :])
    selected = OnnxNMS.apply(boxes, table, int(max_per_img), float(iou_thr), 0.0)
    flat = (selected[:, 0] * num_classes + selected[:, 1]) * k + selected[:, 2]
    table = table.reshape(-1)
    kept = torch.zeros_like(table).scatter(0, flat, table.gather(0, flat)).reshape(batch, -1)
    if kept.shape[1] < max_per_img:  # tiny inputs: fewer candidates than output slots
        kept = torch.cat([kept, kept.new_zeros((batch, max_per_img - kept.shape[1]))], 1)
    top, idx = kept.topk(max_per_img, dim=1)
    box_idx = idx % k
    cls = torch.div(idx, k, rounding_mode="floor")
    found = top > 0
    picked = boxes.gather(1, box_idx[..., None].expand(-1, -1, 4)) * found[..., None].to(boxes.dtype)
    dets = torch.cat([picked, top[..., None]], dim=-1)
    return dets, torch.where(found, cls, torch.full_like(cls, -1))


def _fixed_nms_npu(boxes, scores, labels, num_classes: int, iou_thr: float, max_per_img: int):
    """``torch_npu.npu_batch_nms``: fixed-size multiclass NMS on the NPU (no host round trip)."""
    import torch_npu

    batch, k = scores.shape
    table = scores.new_zeros((batch, k, num_classes)).scatter(2, labels[..., None], scores[..., None])
    # float32 in (fp16 boxes would lose ~1 px at 1333 px); CANN releases whose
    # BatchMultiClassNonMaxSuppression takes only float16 need `.half()` here
    nmsed_boxes, nmsed_scores, nmsed_classes, _ = torch_npu.npu_batch_nms(
        boxes[:, :, None, :].float(), table.float(), 0.0, float(iou_thr), int(max_per_img),
        int(max_per_img))
    top = nmsed_scores.float()
    found = top > 0
    dets = torch.cat([nmsed_boxes.float() * found[..., None], top[..., None]], dim=-1)
    cls = nmsed_classes.long()
    return dets, torch.where(found, cls, torch.full_like(cls, -1))


def static_detections(head, cls_scores, bbox_preds, centernesses, img_shape, test_cfg,
                      backend: str = "onnx", box_scale=None):
    """The whole static post-processing: ``(dets [B,M,5], labels [B,M])`` on the canvas.

    ``test_cfg`` as mmdet reads it: ``nms_pre`` (default -1), ``score_thr`` (0),
    ``min_bbox_size`` (-1: no filter), ``nms.iou_threshold`` and ``max_per_img`` (required);
    :func:`supports` tells whether its NMS is the plain class-aware NMS done here.
    """
    boxes, scores, labels = candidates(
        head, cls_scores, bbox_preds, centernesses, img_shape, int(test_cfg.get("nms_pre", -1)),
        float(test_cfg.get("score_thr", 0.0)), float(test_cfg.get("min_bbox_size", -1)), box_scale)
    return fixed_nms(boxes, scores, labels, head.cls_out_channels,
                     float(test_cfg["nms"]["iou_threshold"]), int(test_cfg["max_per_img"]), backend)


#: ``nms`` keys of a test_cfg whose default values the static NMS reproduces (mmcv's
#: ``batched_nms``/``nms`` defaults; ``split_thr`` only batches the same per-class NMS).
_NMS_DEFAULTS = {"type": "nms", "class_agnostic": False, "offset": 0, "score_threshold": 0,
                 "max_num": -1}


def supports(head, test_cfg) -> bool:
    """Is mmdet's post-processing of ``head`` with ``test_cfg`` what :func:`static_detections`
    computes? A sigmoid classifier, ``nms`` the plain class-aware NMS of mmcv (``type='nms'``,
    an ``iou_threshold``, no ``class_agnostic``/``offset``/``score_threshold``/``max_num``) and
    a ``max_per_img``. Otherwise (soft-NMS, class-agnostic NMS, ``nms=None``, the keys left
    out that mmdet only needs once there are boxes) the caller runs mmdet's own code.
    """
    if not getattr(head, "use_sigmoid_cls", False) or \
            getattr(getattr(head, "loss_cls", None), "custom_cls_channels", False):
        return False
    if test_cfg is None or "max_per_img" not in test_cfg or not test_cfg.get("nms"):
        return False
    nms = test_cfg["nms"]
    if "iou_threshold" not in nms or set(nms) - {"iou_threshold", "split_thr", *_NMS_DEFAULTS}:
        return False
    return all(nms.get(key, default) == default for key, default in _NMS_DEFAULTS.items())
