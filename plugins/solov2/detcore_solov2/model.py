"""SOLOv2 (mmdet 3.3's ``SOLOv2`` detector) behind detcore's :class:`~detcore.model.Detector`.

Training and evaluation go through mmdet's own ``loss``/``predict`` (patched or not, see
:mod:`detcore_solov2.patches`) via detcore-mmdet's adapter. SOLOv2 predicts masks, not
boxes (mmdet fills ``bboxes`` with zeros), so boxes are the masks' tight bounding boxes,
as mmdet's ``mask2bbox``; that gives bbox mAP too. ``export_forward`` runs the network
and :func:`detcore_solov2.static.postprocess` in fixed shapes.
"""
from __future__ import annotations

import torch

from detcore.errors import UserError
from detcore_mmdet.adapter import MMDetDetector, build_detector, model_config

from . import static
from .configs import EXPANSION


#: The reference port's layout (WXinlong/SOLO, on mmdet 1.x / mmcv 0.x): ``SOLOv2Head`` as
#: ``bbox_head`` (``cate_convs``, ``solo_cate``, ``solo_kernel``) and ``MaskFeatHead`` as
#: ``mask_feat_head`` (its 1x1 ``conv_pred`` inside an ``nn.Sequential``) -> mmdet's
#: ``SOLOV2Head`` as ``mask_head`` with its ``mask_feature_head``. Same layers and shapes
#: (``solo_cate`` has ``num_classes - 1`` outputs for 1.x's background-first class count,
#: i.e. mmdet's ``num_classes``; the class order is the same). mmdet 2.x (2.25+) has 3.x's keys.
SOLO_KEY_PREFIXES = (
    ("bbox_head.cate_convs.", "mask_head.cls_convs."),
    ("bbox_head.kernel_convs.", "mask_head.kernel_convs."),
    ("bbox_head.solo_cate.", "mask_head.conv_cls."),
    ("bbox_head.solo_kernel.", "mask_head.conv_kernel."),
    ("mask_feat_head.conv_pred.0.", "mask_head.mask_feature_head.conv_pred."),
    ("mask_feat_head.", "mask_head.mask_feature_head."),
)


class SOLOv2Detector(MMDetDetector):
    task_type = "segm"
    legacy_key_prefixes = SOLO_KEY_PREFIXES

    def __init__(self, model, preprocessor, max_detections: int = 100):
        super().__init__(model, preprocessor, task_type="segm")
        self.max_detections = int(max_detections)
        head = model.mask_head
        self.register_buffer("point_strides", static.point_strides(head.num_grids, head.strides),
                             persistent=False)

    def forward(self, images, targets=None):
        if self.training:
            return super().forward(images, targets)
        results = self.model.predict(self.normalise(images), self.data_samples(images),
                                     rescale=False)
        return [_to_detcore(r.pred_instances) for r in results]

    def export_forward(self, images):
        """Fixed-shape outputs: ``dets`` (B, N, 5), ``labels`` (B, N) (-1 empty), ``masks``.

        ``masks`` (B, N, H, W) are mask probabilities on the input canvas (mmdet thresholds
        them at ``mask_thr`` = 0.5; so does core's evaluation); empty slots are all zero.
        N = ``eval.max_detections``. Boxes are the tight boxes of the thresholded masks.
        """
        head = self.model.mask_head
        cfg = head.test_cfg
        feats = self.model.extract_feat(self.normalise(images))
        kernel_preds, cls_preds, mask_feats = head(feats)
        cls_scores = [static.point_nms(c.sigmoid()) for c in cls_preds]
        kernels, scores = static.flatten_levels(kernel_preds, cls_scores)
        scores, labels, probs, valid = static.postprocess(
            kernels, scores, mask_feats, self.point_strides, score_thr=cfg.score_thr,
            mask_thr=cfg.mask_thr, filter_thr=cfg.filter_thr, nms_pre=cfg.nms_pre,
            max_per_img=self.max_detections, kernel=cfg.kernel, sigma=cfg.sigma)
        h, w = images.shape[-2:]
        probs = static.upsample_masks(probs, head.mask_stride, (h, w), (h, w))
        boxes = static.masks_to_boxes(probs > cfg.mask_thr)
        dets = torch.cat([boxes, scores[..., None]], dim=-1) * valid[..., None].to(boxes.dtype)
        return dets, labels, probs

    def class_parameter_prefixes(self) -> tuple[str, ...]:
        return ("model.mask_head.conv_cls.",)


def _to_detcore(pred) -> dict:
    masks = pred.masks.bool()
    labels = pred.labels.to(torch.int64)
    return {"boxes": static.masks_to_boxes(masks), "scores": pred.scores.float(),
            "labels": labels, "masks": masks}


def mmdet_model_config(config: dict, num_classes: int):
    """The mmdet ``model`` config of ``config["model"]["mmdet_config"]`` with detcore's keys applied."""
    mcfg = config["model"]
    m, preprocessor = model_config(str(mcfg["mmdet_config"]), mcfg)
    bb = m.backbone
    depth, base = int(mcfg["depth"]), int(mcfg["base_channels"])
    if depth not in EXPANSION:
        raise UserError(f"model.depth {depth}: use one of {', '.join(map(str, EXPANSION))}")
    if depth != int(bb.depth) or base != int(bb.get("base_channels", 64)):
        bb.depth, bb.base_channels = depth, base
        m.neck.in_channels = [base * EXPANSION[depth] * 2 ** i
                              for i in range(len(m.neck.in_channels))]
    fpn = int(mcfg["fpn_channels"])
    m.neck.out_channels = fpn
    head = m.mask_head
    head.in_channels = fpn
    head.mask_feature_head.in_channels = fpn
    head.num_classes = int(num_classes)
    head.feat_channels = int(mcfg["feat_channels"])
    head.stacked_convs = int(mcfg["stacked_convs"])
    head.num_grids = [int(g) for g in mcfg["num_grids"]]
    if len(head.num_grids) != len(head.strides):
        raise UserError(f"model.num_grids needs {len(head.strides)} values (one per level), "
                        f"got {head.num_grids}")
    head.mask_feature_head.feat_channels = int(mcfg["mask_feat_channels"])
    head.mask_feature_head.out_channels = int(mcfg["mask_out_channels"])
    test = m.test_cfg
    test.score_thr = float(mcfg["score_thr"])
    test.mask_thr = float(mcfg["mask_thr"])
    test.nms_pre = int(mcfg["nms_pre"])
    test.filter_thr = float(config["eval"]["score_threshold"])
    test.max_per_img = int(config["eval"]["max_detections"])
    return m, preprocessor


def build(config: dict, num_classes: int) -> SOLOv2Detector:
    model_cfg, preprocessor = mmdet_model_config(config, num_classes)
    # with mmdet's init_weights, then model.backbone_weights
    return build_detector(SOLOv2Detector, model_cfg, preprocessor,
                          config["model"]["backbone_weights"], "solov2",
                          max_detections=int(config["eval"]["max_detections"]))
