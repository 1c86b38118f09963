"""Fixed-size SOLOv2 inference (top-k candidates, static matrix NMS), replacing
``SOLOV2Head._predict_by_feat_single``."""
from __future__ import annotations

from detcore.patching import Patch


def fixed_predict_by_feat_single(head, kernel_preds, cls_scores, mask_feats, img_meta, cfg=None):
    """mmdet's per-image SOLOv2 inference through :func:`detcore_solov2.static.postprocess`.

    Same inputs and the same ``InstanceData`` as mmdet's; every intermediate tensor has a
    fixed shape (``nms_pre`` candidates, ``max_per_img`` outputs) and only the final
    slicing to the valid detections depends on the data.
    """
    import torch
    from mmengine.structures import InstanceData

    from .. import static

    cfg = head.test_cfg if cfg is None else cfg
    if head.dynamic_conv_size != 1:
        raise NotImplementedError("fixed-size SOLOv2 inference supports dynamic_conv_size == 1")
    strides = static.point_strides(head.num_grids, head.strides, kernel_preds.device)
    scores, labels, probs, valid = static.postprocess(
        kernel_preds[None], cls_scores[None], mask_feats[:1], strides,
        score_thr=cfg.score_thr, mask_thr=cfg.mask_thr, filter_thr=cfg.filter_thr,
        nms_pre=cfg.nms_pre, max_per_img=cfg.max_per_img, kernel=cfg.kernel, sigma=cfg.sigma)
    h, w = img_meta["img_shape"][:2]
    ori = img_meta["ori_shape"][:2]
    keep = valid[0]
    results = InstanceData()
    if not bool(keep.any()):  # the one data-dependent step: mmdet's variable-length result
        results.masks = probs.new_zeros(0, *ori, dtype=torch.bool)
    else:
        probs = static.upsample_masks(probs[:, keep], head.mask_stride, (h, w), ori)[0]
        results.masks = probs > cfg.mask_thr
    results.labels = labels[0][keep]
    results.scores = scores[0][keep]
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

    Tolerance: scores and masks equal mmdet's within 1e-5 whenever at most ``nms_pre``
    (point, class) scores exceed ``score_thr`` (mmdet then computes masks for all of
    them before its own ``nms_pre`` cut; the patch cuts by class score first). The 1x1
    dynamic convolution as a matmul changes summation order only.
    """

    name = "fixed_matrix_nms"
    tolerance = 1e-5

    def targets(self):
        from mmdet.models.dense_heads.solov2_head import SOLOV2Head

        def _predict_by_feat_single(head, kernel_preds, cls_scores, mask_feats, img_meta,
                                    cfg=None):
            return fixed_predict_by_feat_single(head, kernel_preds, cls_scores, mask_feats,
                                                img_meta, cfg)

        _predict_by_feat_single.__doc__ = fixed_predict_by_feat_single.__doc__
        return [(SOLOV2Head, "_predict_by_feat_single", _predict_by_feat_single)]
