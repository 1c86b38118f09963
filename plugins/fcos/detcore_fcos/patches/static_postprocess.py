"""Static-shape post-processing for mmdet's ``FCOSHead`` (fixed-size NMS output)."""
from __future__ import annotations

from detcore.patching import Patch, is_npu, require_torch_npu


def make_predict_by_feat(backend: str, original):
    """A ``predict_by_feat`` for ``FCOSHead`` running :func:`detcore_fcos.postprocess.static_detections`.

    Same signature, inputs and results as mmdet's ``BaseDenseHead.predict_by_feat``
    (``original``), which it hands every call the static path does not reproduce: no
    ``score_factors``, ``with_nms=False``, images of different shapes, an empty batch, and
    test configs :func:`~detcore_fcos.postprocess.supports` rejects (soft or class-agnostic
    NMS, ``nms=None``, the ``nms``/``max_per_img`` keys left out: mmdet needs them only
    once a box passes the threshold). Those checks read shapes and the config, never data.
    """

    def predict_by_feat(self, cls_scores, bbox_preds, score_factors=None, batch_img_metas=None,
                        cfg=None, rescale=False, with_nms=True):
        from mmengine.structures import InstanceData

        from ..postprocess import static_detections, supports

        shapes = {tuple(m["img_shape"][:2]) for m in batch_img_metas}
        test_cfg = self.test_cfg if cfg is None else cfg
        if score_factors is None or not with_nms or len(shapes) != 1 or \
                not supports(self, test_cfg):
            # not FCOS inference as detcore runs it: mmdet's own code, unchanged
            return original(self, cls_scores, bbox_preds, score_factors, batch_img_metas, cfg,
                            rescale, with_nms)
        box_scale = None
        if rescale:  # mmdet measures (min_bbox_size) and returns boxes x 1/scale_factor
            box_scale = cls_scores[0].new_tensor(
                [[1 / s for s in meta["scale_factor"][:2]] for meta in batch_img_metas])
        dets, labels = static_detections(self, [c.detach() for c in cls_scores],
                                         [b.detach() for b in bbox_preds],
                                         [s.detach() for s in score_factors], shapes.pop(),
                                         test_cfg, backend, box_scale)
        results = []
        for i in range(len(batch_img_metas)):
            # The device work above is fixed-shape; only the final [max_per_img] rows of each
            # image are trimmed to the detections found, as mmdet's callers expect.
            keep = labels[i] >= 0
            boxes = dets[i, keep, :4]
            if box_scale is not None:  # mmdet's scale_boxes: x (1/sx, 1/sy, 1/sx, 1/sy)
                boxes = boxes * box_scale[i].repeat(2)
            results.append(InstanceData(bboxes=boxes, scores=dets[i, keep, 4], labels=labels[i, keep]))
        return results

    predict_by_feat.__doc__ = f"Static-shape FCOS post-processing ({backend} NMS; detcore_fcos patch)."
    return predict_by_feat


class StaticPostprocessPatch(Patch):
    """Static-shape FCOS post-processing with a fixed-size NMS output.

    NPU limitation: mmdet's ``BaseDenseHead._predict_by_feat_single`` (used by ``FCOSHead``)
    selects candidates with ``scores > score_thr`` boolean indexing and ``nonzero``, keeps a
    data-dependent number per level, filters small boxes with a mask and runs mmcv's
    ``batched_nms``, whose output length depends on the image: every step after the first
    threshold has a data-dependent shape, which on Ascend means a graph compile per new shape
    (or a host fallback) in each evaluation batch, and which neither ``torch.onnx`` nor ``atc``
    can turn into a fixed-shape model. The reference replaced it for its ``fcos.onnx`` with
    ONNX ``NonMaxSuppression`` and fixed ``[B,100]`` outputs.

    This patch replaces ``FCOSHead.predict_by_feat`` with the batched static version in
    :mod:`detcore_fcos.postprocess`: per-level ``topk(nms_pre)`` then a score mask instead of
    threshold indexing, and class-aware NMS with a fixed ``max_per_img`` output through
    ``torch_npu.npu_batch_nms`` on an NPU, or the ONNX-exportable torchvision-based version
    elsewhere (the same code ``export_forward`` exports). Only the final ``[max_per_img]`` rows
    are trimmed to the detections found when results are handed back.

    Every input mmdet's method takes is taken, with the same results (type and values):
    mmdet's ``nms_pre`` semantics (``-1``, the default, drops the last valid candidate of a
    level, as mmdet's ``filter_scores_and_topk`` does), ``min_bbox_size`` measured after the
    rescale, ``rescale`` as ``scale_boxes``; configurations the static path does not cover
    run mmdet's own code (see :func:`make_predict_by_feat`).

    Tolerance: 1e-5 on CPU (the same candidates, decode and scores as mmdet; NMS per class
    instead of mmcv's coordinate-offset trick, which can only differ for boxes whose IoU is
    within float rounding of the threshold). ``revert()`` restores the inherited method.
    """

    name = "fcos_static_postprocess"
    tolerance = 1e-5
    #: a new attribute of FCOSHead, shadowing the inherited BaseDenseHead.predict_by_feat
    replaces = {"mmdet.models.dense_heads.fcos_head:FCOSHead.predict_by_feat": "faca250a49dbf9d6"}
    #: what the static path re-implements: candidates, decode, min_bbox_size, rescale, NMS
    reproduces = {
        "mmdet.models.dense_heads.base_dense_head:BaseDenseHead._predict_by_feat_single":
            "f2823ad64ab99e12",
        "mmdet.models.dense_heads.base_dense_head:BaseDenseHead._bbox_post_process":
            "9dab13782af7ba32",
        "mmdet.models.utils.misc:filter_scores_and_topk": "4d890106ac294e18",
    }
    npu_ops = ("npu_batch_nms",)

    def targets(self):
        from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
        from mmdet.models.dense_heads.fcos_head import FCOSHead

        backend = "onnx"
        if is_npu(self.device):
            require_torch_npu(self.name)
            backend = "npu"
        return [(FCOSHead, "predict_by_feat",
                 make_predict_by_feat(backend, BaseDenseHead.predict_by_feat))]
