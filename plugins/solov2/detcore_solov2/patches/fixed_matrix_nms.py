"""Fixed-size SOLOv2 inference (top-k candidates, static matrix NMS), replacing
``SOLOV2Head._predict_by_feat_single``."""
from __future__ import annotations

from detcore.patching import Patch


#: The test_cfg keys mmdet's ``_predict_by_feat_single`` reads once a score passes
#: ``score_thr`` (before that, only ``score_thr``).
TEST_CFG_KEYS = ("score_thr", "mask_thr", "nms_pre", "max_per_img", "kernel", "sigma",
                 "filter_thr")


def supports(head, kernel_preds, cls_scores, cfg) -> bool:
    """Is mmdet's inference of this call what the fixed-size path computes?

    Reads shapes and the config only (never the data): a 1x1 dynamic convolution, at least
    one point and class, every key of :data:`TEST_CFG_KEYS` (mmdet needs all but
    ``score_thr`` only once a score passes it) and a matrix-NMS kernel mmdet knows.
    """
    return (head.dynamic_conv_size == 1 and kernel_preds.shape[0] > 0 and cls_scores.numel() > 0
            and cfg is not None and all(key in cfg for key in TEST_CFG_KEYS)
            and cfg["kernel"] in ("gaussian", "linear"))


def empty_results(cls_scores, ori_shape):
    """mmdet's empty SOLOv2 result, types included (float ``labels`` and ``masks``)."""
    from mmengine.structures import InstanceData

    results = InstanceData()
    results.scores = cls_scores.new_ones(0)
    results.masks = cls_scores.new_zeros(0, *ori_shape)
    results.labels = cls_scores.new_ones(0)
    results.bboxes = cls_scores.new_zeros(0, 4)
    return results


def fixed_predict_by_feat_single(head, kernel_preds, cls_scores, mask_feats, img_meta, cfg=None,
                                 original=None):
    """mmdet's per-image SOLOv2 inference through :func:`detcore_solov2.static.postprocess`.

    Same inputs and the same ``InstanceData`` as mmdet's (``original``), types included:
    ``masks`` bool and ``labels`` int64 with detections, and mmdet's empty result (float
    ``labels`` and ``masks``) without. Every intermediate tensor has a fixed shape
    (``nms_pre`` candidates, ``max_per_img`` outputs) and only the final slicing to the valid
    detections depends on the data. Calls :func:`supports` rejects run ``original``.
    """
    import torch
    from mmengine.structures import InstanceData

    from .. import static

    cfg = head.test_cfg if cfg is None else cfg
    if not supports(head, kernel_preds, cls_scores, cfg):
        if original is None:
            raise NotImplementedError("fixed-size SOLOv2 inference: unsupported input and no "
                                      "original to run")
        return original(head, kernel_preds, cls_scores, mask_feats, img_meta, cfg)
    strides = static.point_strides(head.num_grids, head.strides, kernel_preds.device)
    scores, labels, probs, valid = static.postprocess(
        kernel_preds[None], cls_scores[None], mask_feats[:1], strides,
        score_thr=cfg["score_thr"], mask_thr=cfg["mask_thr"], filter_thr=cfg["filter_thr"],
        nms_pre=cfg["nms_pre"], max_per_img=cfg["max_per_img"], kernel=cfg["kernel"],
        sigma=cfg["sigma"])
    h, w = img_meta["img_shape"][:2]
    ori = img_meta["ori_shape"][:2]
    keep = valid[0]
    if not bool(keep.any()):  # the one data-dependent step: mmdet's variable-length result
        return empty_results(cls_scores, ori)
    probs = static.upsample_masks(probs[:, keep], head.mask_stride, (h, w), ori)[0]
    results = InstanceData()
    results.masks = probs > cfg["mask_thr"]
    results.labels = labels[0][keep]
    results.scores = scores[0][keep].to(cls_scores.dtype)
    results.bboxes = results.scores.new_zeros(len(results.scores), 4)
    return results


class FixedMatrixNmsPatch(Patch):
    """Fixed-size SOLOv2 inference: top-k candidates and a static matrix NMS.

    NPU limitation: mmdet selects candidates with ``cls_scores > score_thr`` and
    ``nonzero()``, filters them twice more by boolean indexing and runs matrix NMS on
    however many remain, so every image has different tensor shapes (graph recompiles on
    the NPU; the reference moved this post-processing to the host). The patch takes the
    top ``nms_pre`` (point, class) scores with a validity mask instead, computes their
    masks with one matmul, counts mask pixels in int32 and runs matrix NMS on a fixed
    ``nms_pre x nms_pre`` matrix where invalid entries neither decay nor are decayed,
    then keeps the top ``max_per_img``: the same arithmetic as the export graph.

    Every input mmdet's method takes is taken, with the same result types: a 1x1 dynamic
    convolution, a test_cfg with all of mmdet's keys and a known matrix-NMS kernel take the
    fixed-size path; anything else (a test_cfg holding only ``score_thr``/``mask_thr``, as
    mmdet's own empty-result test passes, zero points, ``dynamic_conv_size > 1``) runs
    mmdet's own code. Without detections the result is mmdet's empty one (float ``labels``
    and ``masks``, as mmdet builds it).

    Tolerance: scores and masks equal mmdet's within 1e-5 whenever at most ``nms_pre``
    (point, class) scores exceed ``score_thr`` (mmdet then computes masks for all of
    them before its own ``nms_pre`` cut; the patch cuts by class score first). The 1x1
    dynamic convolution as a matmul changes summation order only.
    """

    name = "fixed_matrix_nms"
    tolerance = 1e-5
    replaces = {"mmdet.models.dense_heads.solov2_head:SOLOV2Head._predict_by_feat_single":
                "39b33625241f2577"}
    #: the matrix NMS the static version re-implements on a fixed nms_pre x nms_pre matrix
    reproduces = {"mmdet.models.layers.matrix_nms:mask_matrix_nms": "0923b3f52849011e"}

    def targets(self):
        from mmdet.models.dense_heads.solov2_head import SOLOV2Head

        original = SOLOV2Head.__dict__["_predict_by_feat_single"]

        def _predict_by_feat_single(head, kernel_preds, cls_scores, mask_feats, img_meta,
                                    cfg=None):
            return fixed_predict_by_feat_single(head, kernel_preds, cls_scores, mask_feats,
                                                img_meta, cfg, original)

        _predict_by_feat_single.__doc__ = fixed_predict_by_feat_single.__doc__
        return [(SOLOV2Head, "_predict_by_feat_single", _predict_by_feat_single)]
