"""FCOS built from mmdet's shipped configs, wrapped as a detcore :class:`~detcore.model.Detector`."""
from __future__ import annotations

import warnings

import torch

from detcore.adapters.mmdet import MMDetDetector
from detcore.errors import UserError

from .configs import ARCHS
from .postprocess import static_detections  # imports torchvision, which must not happen mid-trace

# mmdet's point generator calls torch.meshgrid without `indexing` (its default 'ij' is what it
# means): a warning on every forward pass that says nothing to a detcore user.
warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release",
                        category=UserWarning)


class FCOSDetector(MMDetDetector):
    """mmdet's FCOS behind core's contract (training and eval through the mmdet adapter).

    ``export_forward`` runs the backbone, neck and head, then the static post-processing of
    :mod:`detcore_fcos.postprocess` (ONNX ``NonMaxSuppression``, fixed-size outputs), so it
    exports with or without the vendored patches. Outputs in the reference's order
    (``atc --out_node="labels;dets"``): ``labels [B,100]`` int64 and ``dets [B,100,5]``.
    """

    export_output_names = ("labels", "dets")

    def __init__(self, model, mean, std, bgr: bool):
        super().__init__(model, mean, std, bgr, task_type="bbox")
        self.max_detections = int(model.bbox_head.test_cfg["max_per_img"])

    def export_forward(self, images: torch.Tensor):
        feats = self.model.extract_feat(self.normalise(images))
        cls_scores, bbox_preds, centernesses = self.model.bbox_head(feats)
        return static_detections(self.model.bbox_head, cls_scores, bbox_preds, centernesses,
                                 tuple(images.shape[-2:]), self.model.bbox_head.test_cfg, "onnx")

    def class_parameter_prefixes(self) -> tuple[str, ...]:
        return ("model.bbox_head.conv_cls.",)

    def convert_state_dict(self, state: dict) -> dict:
        """An mmdet-native FCOS state dict (``backbone.*``, ``neck.*``, ``bbox_head.*``) -> this
        wrapper's keys (``model.*``); a detcore state dict is returned as it is.

        For checkpoints trained with mmdet itself (e.g. the reference's). Core does not call
        this yet (see the plugin README); ``model.backbone_weights`` covers the backbone part.
        """
        if any(k.startswith("model.") for k in state):
            return state
        return {(f"model.{k}" if k.split(".", 1)[0] in ("backbone", "neck", "bbox_head") else k): v
                for k, v in state.items()}


def mmdet_model_config(config: dict, num_classes: int):
    """mmdet's config for ``model.arch`` with this plugin's keys applied: ``(model_cfg, data_preprocessor)``."""
    from detcore.adapters.mmdet import config_path, load_config

    mcfg, ecfg = config["model"], config["eval"]
    arch = str(mcfg["arch"])
    rel = ARCHS.get(arch, arch)
    if not config_path(rel).is_file():
        raise UserError(f"model.arch {arch!r}: no mmdet config {rel}; use one of "
                        f"{', '.join(ARCHS)} or a path under mmdet/.mim/configs")
    cfg = load_config(rel).model
    preprocessor = cfg.pop("data_preprocessor")  # core feeds the model; the adapter normalises
    backbone, head = cfg.backbone, cfg.bbox_head
    backbone.init_cfg = None  # nothing is downloaded; local weights via model.backbone_weights
    backbone.frozen_stages = int(mcfg["frozen_stages"])
    backbone.norm_eval = bool(mcfg["norm_eval"])
    if not backbone.norm_eval:  # BN statistics learn, so its affine parameters do too
        backbone.norm_cfg = dict(backbone.get("norm_cfg", {"type": "BN"}), requires_grad=True)
    width = int(mcfg["width"])
    if width:
        if width % 32:
            raise UserError(f"model.width={width}: must be a multiple of 32 (GroupNorm groups)")
        cfg.neck.out_channels = head.in_channels = head.feat_channels = width
    if int(mcfg["stacked_convs"]):
        head.stacked_convs = int(mcfg["stacked_convs"])
    head.num_classes = int(num_classes)
    test = cfg.test_cfg
    test.nms_pre = int(mcfg["nms_pre"])
    test.min_bbox_size = float(mcfg["min_bbox_size"])
    test.score_thr = float(ecfg["score_threshold"])
    test.max_per_img = int(ecfg["max_detections"])
    test.nms = dict(type="nms", iou_threshold=float(mcfg["nms_iou"]))
    return cfg, preprocessor


def build(config: dict, num_classes: int) -> FCOSDetector:
    from detcore.adapters.mmdet import build_model, init_backbone

    cfg, dp = mmdet_model_config(config, num_classes)
    model = build_model(cfg)  # with mmdet's init_weights (the focal-loss prior on conv_cls)
    init_backbone(model.backbone, str(config["model"]["backbone_weights"] or ""), "fcos")
    return FCOSDetector(model, dp.mean, dp.std, bgr=not dp.get("bgr_to_rgb", False))
