"""FCOS built from mmdet's shipped configs, wrapped as a detcore :class:`~detcore.model.Detector`."""
from __future__ import annotations

import warnings

import torch

from detcore.errors import UserError
from detcore_mmdet.adapter import MMDetDetector, build_detector, config_path, model_config

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
    exports with or without the vendored patches. Outputs in core's order: ``dets [B,100,5]``
    and ``labels [B,100]`` int64; the ``.om`` lists them as the reference's
    ``atc --out_node="labels;dets"`` did (:attr:`atc_out_nodes`).
    """

    atc_out_nodes = ("labels", "dets")

    #: Early mmdet 2.x's FCOSHead named its predictors ``fcos_cls``/``fcos_reg``/
    #: ``fcos_centerness``; as an ``AnchorFreeHead`` they are ``conv_*``. mmdet renames them
    #: itself in ``AnchorFreeHead._load_from_state_dict`` for state dicts without a head
    #: version; detcore's strict loader checks the keys first, so :meth:`convert_state_dict`
    #: does it. mmdet 2.x's later keys are 3.x's.
    legacy_key_prefixes = (("bbox_head.fcos_cls.", "bbox_head.conv_cls."),
                           ("bbox_head.fcos_reg.", "bbox_head.conv_reg."),
                           ("bbox_head.fcos_centerness.", "bbox_head.conv_centerness."))

    def __init__(self, model, preprocessor):
        super().__init__(model, preprocessor, task_type="bbox")
        self.max_detections = int(model.bbox_head.test_cfg["max_per_img"])

    def export_forward(self, images: torch.Tensor):
        feats = self.model.extract_feat(self.normalise(images))
        cls_scores, bbox_preds, centernesses = self.model.bbox_head(feats)
        return static_detections(self.model.bbox_head, cls_scores, bbox_preds, centernesses,
                                 tuple(images.shape[-2:]), self.model.bbox_head.test_cfg, "onnx")

    def class_parameter_prefixes(self) -> tuple[str, ...]:
        return ("model.bbox_head.conv_cls.",)


def mmdet_model_config(config: dict, num_classes: int):
    """mmdet's config for ``model.arch`` with this plugin's keys applied: ``(model_cfg, data_preprocessor)``."""
    mcfg, ecfg = config["model"], config["eval"]
    arch = str(mcfg["arch"])
    rel = ARCHS.get(arch, arch)
    if not config_path(rel).is_file():
        raise UserError(f"model.arch {arch!r}: no mmdet config {rel}; use one of "
                        f"{', '.join(ARCHS)} or a path under mmdet/.mim/configs")
    cfg, preprocessor = model_config(rel, mcfg)
    head = cfg.bbox_head
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
    cfg, preprocessor = mmdet_model_config(config, num_classes)
    # with mmdet's init_weights (the focal-loss prior on conv_cls), then model.backbone_weights
    return build_detector(FCOSDetector, cfg, preprocessor, config["model"]["backbone_weights"],
                          "fcos")
