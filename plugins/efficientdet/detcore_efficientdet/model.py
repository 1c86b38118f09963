"""effdet's EfficientDet as a :class:`detcore.model.Detector`.

The detector *is* an ``effdet.EfficientDet`` (subclass), so its ``state_dict`` keys
are exactly effdet's (``backbone.*``, ``fpn.*``, ``class_net.*``, ``box_net.*``):
released effdet weights and effdet ``train.py`` checkpoints (``state_dict`` /
``state_dict_ema``, saved through ``unwrap_bench``) load with ``--weights FILE``
unchanged. Everything else it holds (anchors, normalisation constants) is a
non-persistent buffer.

Training reproduces ``effdet.DetBenchTrain`` (anchor labeler + ``DetectionLoss``);
inference reproduces ``effdet.DetBenchPredict`` (``_post_process`` + ``_batch_detection``),
with detcore's conventions on both sides: xyxy canvas-pixel boxes, 0-based labels.
"""
from __future__ import annotations

import os
import warnings

import torch

from detcore.errors import UserError
from detcore.model import Detector

os.environ.setdefault("HF_HUB_OFFLINE", "1")
with warnings.catch_warnings():  # effdet's import-time torch.jit.script FutureWarnings
    warnings.simplefilter("ignore")
    import effdet.bench as effdet_bench
    from effdet import DetBenchTrain, get_efficientdet_config
    from effdet.anchors import AnchorLabeler, Anchors
    from effdet.efficientdet import EfficientDet
    from effdet.loss import DetectionLoss

from .patches.fixed_nms import batch_detection_fixed

#: The 80 category ids of COCO 2017 among effdet's 90 COCO outputs (output index = id - 1).
COCO80_CATEGORY_IDS = tuple(i for i in range(1, 91)
                            if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def effdet_targets(targets: list[dict], max_targets: int, device,
                   label_to_output: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """detcore targets -> effdet's ``bbox`` (B x N x 4, yxyx) and ``cls`` (B x N, 1-based).

    Padded with -1 to a fixed ``N = max_targets`` (grown if an image has more), as
    effdet's collate does, so the labeler sees static shapes. ``label_to_output`` maps
    dataset labels to head outputs (the 90-output COCO head), if the head has its own order.
    """
    n = max([max_targets] + [len(t["boxes"]) for t in targets])
    bbox = torch.full((len(targets), n, 4), -1.0, dtype=torch.float32, device=device)
    cls = torch.full((len(targets), n), -1.0, dtype=torch.float32, device=device)
    for i, t in enumerate(targets):
        k = len(t["boxes"])
        if k:
            bbox[i, :k] = t["boxes"].to(device=device, dtype=torch.float32)[:, [1, 0, 3, 2]]
            labels = t["labels"].to(device)
            if label_to_output is not None:
                labels = label_to_output[labels]
            cls[i, :k] = labels.to(torch.float32) + 1
    return bbox, cls


class EfficientDetDetector(EfficientDet, Detector):
    """An effdet ``EfficientDet`` with detcore's train/eval/export interface."""

    task_type = "bbox"

    def __init__(self, arch: str, num_classes: int, input_size, *, drop_path_rate=None,
                 max_detections: int = 100, score_threshold: float = 0.05, max_targets: int = 100,
                 max_detection_points: int = 5000, label_smoothing: float = 0.0, bn_momentum=None,
                 class_map=None):
        """``class_map``: for each dataset label, the head output that predicts it, when the
        head has more outputs than the dataset has classes (effdet's 90-output COCO head:
        ``[category_id - 1 for category_id in COCO80_CATEGORY_IDS]``); None: output = label."""
        num_outputs = int(num_classes) if class_map is None else max(class_map) + 1
        if class_map is not None and len(class_map) != int(num_classes):
            raise ValueError(f"class_map has {len(class_map)} entries for {num_classes} classes")
        config = get_efficientdet_config(arch)
        config.image_size = tuple(int(v) for v in input_size)
        config.num_classes = num_outputs
        config.max_det_per_image = int(max_detections)
        config.max_detection_points = int(max_detection_points)
        config.label_smoothing = float(label_smoothing)
        config.jit_loss = False
        config.soft_nms = False
        if bn_momentum is not None:  # BiFPN and head BN (effdet: 0.01, TF's 0.99 decay)
            config.norm_kwargs = dict(config.norm_kwargs or {}, momentum=float(bn_momentum))
        if drop_path_rate is not None:
            config.backbone_args = dict(config.backbone_args or {}, drop_path_rate=float(drop_path_rate))
        super().__init__(config, pretrained_backbone=False)  # never downloads
        self.max_detections = int(max_detections)
        self.score_threshold = float(score_threshold)
        self.max_targets = int(max_targets)
        self.anchors = Anchors.from_config(self.config)
        # anchors depend only on the input size: out of the state_dict, as in effdet checkpoints
        self.anchors.register_buffer("boxes", self.anchors.boxes, persistent=False)
        self.anchor_labeler = AnchorLabeler(self.anchors, self.config.num_classes, match_threshold=0.5)
        self.loss_fn = DetectionLoss(self.config)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if class_map is None:
            self.label_to_output = self.output_to_label = None
        else:
            to_output = torch.tensor([int(c) for c in class_map], dtype=torch.int64)
            to_label = torch.full((num_outputs,), -1, dtype=torch.int64)
            to_label[to_output] = torch.arange(len(to_output))
            self.register_buffer("label_to_output", to_output, persistent=False)
            self.register_buffer("output_to_label", to_label, persistent=False)

    # -- pieces ------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.config.num_classes)

    def raw_outputs(self, images: torch.Tensor):
        """[0, 1] images -> effdet's per-level class logits and box regressions."""
        x = (images - self.pixel_mean) / self.pixel_std
        return EfficientDet.forward(self, x)

    def losses(self, cls_out, box_out, bbox, cls) -> dict:
        """effdet's DetBenchTrain loss, split so that the values sum to its ``loss``."""
        cls_targets, box_targets, num_positives = self.anchor_labeler.batch_label_anchors(bbox, cls)
        _, class_loss, box_loss = self.loss_fn(cls_out, box_out, cls_targets, box_targets, num_positives)
        return {"loss_cls": class_loss, "loss_box": self.config.box_loss_weight * box_loss}

    def detect(self, cls_out, box_out, static: bool = False) -> torch.Tensor:
        """B x K x 6 detections: x1, y1, x2, y2 (canvas pixels), score, label (0-based, -1 empty).

        Uses ``effdet.bench._batch_detection`` (effdet's NMS, or the ``fixed_size_nms``
        patch's). ``static=True`` (ONNX export) always uses the portable static-shape
        version: effdet's scripted one does not trace to a fixed-shape graph, and an NPU
        kernel cannot run in the CPU trace core exports from.

        Boxes are clipped to the canvas *before* NMS, as ``DetBenchPredict`` clips them
        when given ``img_info`` (effdet's ``validate.py``): passed as ``img_scale`` 1 and
        ``img_size`` the canvas, so the suppression sees the boxes that are scored. (effdet
        clips to the resized image inside the canvas; the model sees only the canvas.)
        """
        num_points = min(int(self.config.max_detection_points),
                         int(self.anchors.boxes.shape[0]) * self.num_classes)
        cls_pp, box_pp, indices, classes = effdet_bench._post_process(
            cls_out, box_out, num_levels=self.config.num_levels, num_classes=self.num_classes,
            max_detection_points=num_points)
        batch = cls_out[0].shape[0]
        h, w = self.config.image_size
        device = cls_out[0].device
        img_scale = torch.ones(batch, dtype=torch.float32, device=device)
        img_size = torch.tensor([[float(w), float(h)]], dtype=torch.float32, device=device).expand(batch, 2)
        fn = batch_detection_fixed if static else effdet_bench._batch_detection
        dets = fn(batch, cls_pp, box_pp, self.anchors.boxes, indices, classes, img_scale, img_size,
                  max_det_per_image=self.max_detections, soft_nms=False)
        limits = dets.new_tensor([w, h, w, h])
        boxes = torch.minimum(dets[..., :4].clamp(min=0), limits)
        labels = dets[..., 5:6] - 1
        if self.output_to_label is not None:  # head outputs -> dataset labels (-1: no such class)
            mapped = self.output_to_label[labels.clamp(min=0).long()].to(labels.dtype)
            labels = torch.where(labels >= 0, mapped, labels)
        return torch.cat([boxes, dets[..., 4:5], labels], dim=-1)

    # -- detcore contract -------------------------------------------------
    def forward(self, images: torch.Tensor, targets: list[dict] | None = None):
        cls_out, box_out = self.raw_outputs(images)
        if self.training:
            if targets is None:
                raise ValueError("training forward needs targets")
            bbox, cls = effdet_targets(targets, self.max_targets, images.device, self.label_to_output)
            return self.losses(cls_out, box_out, bbox, cls)
        dets = self.detect(cls_out, box_out)
        results = []
        for d in dets:
            keep = (d[:, 5] >= 0) & (d[:, 4] > 0) & (d[:, 4] >= self.score_threshold)
            results.append({"boxes": d[keep, :4], "scores": d[keep, 4], "labels": d[keep, 5].long()})
        return results

    def export_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Core's export contract: ``dets`` (B x K x 5 float32: x1, y1, x2, y2, score) and
        ``labels`` (B x K int64), K = ``max_detections``; empty slots have an all-zero
        ``dets`` row and label -1.

        Rows scoring below ``eval.score_threshold`` are emptied, as the eval forward drops
        them, so offline inference scores what ``eval`` scores.
        """
        cls_out, box_out = self.raw_outputs(images)
        dets = self.detect(cls_out, box_out, static=True)
        scores, labels = dets[..., 4], dets[..., 5]
        keep = (labels >= 0) & (scores > 0) & (scores >= self.score_threshold)
        boxes_scores = torch.where(keep[..., None], dets[..., :5], torch.zeros_like(dets[..., :5]))
        empty = torch.full_like(labels, -1, dtype=torch.int64)
        return boxes_scores.to(torch.float32), torch.where(keep, labels.to(torch.int64), empty)

    def class_parameter_prefixes(self) -> tuple[str, ...]:
        return ("class_net.predict.",)

    def convert_sync_batchnorm(self, process_group=None) -> "EfficientDetDetector":
        """SyncBN conversion that keeps timm's fused BN+activation layers intact.

        Core's trainer calls it for ``train.sync_bn`` (a model's own converter, when it has
        one). ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` turns timm's ``BatchNormAct2d``
        (the backbone's BN + SiLU) into a plain ``SyncBatchNorm`` and silently drops the
        activation; timm's converter maps it to ``SyncBatchNormAct`` instead.
        """
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(self, process_group)


class _Network(torch.nn.Module):
    """The detector's bare ``EfficientDet.forward`` (features -> class/box outputs), for effdet's benches."""

    def __init__(self, detector: EfficientDetDetector):
        super().__init__()
        self.detector = detector
        self.config = detector.config

    def forward(self, x):
        return EfficientDet.forward(self.detector, x)


def baseline_train_step(model: EfficientDetDetector, optimizer, config: dict):
    """One training step done effdet's own way, for ``detcore bench``'s overhead figure.

    ``effdet.DetBenchTrain`` (its anchor labeler and ``DetectionLoss``) over the same
    weights, fed as effdet's loader feeds it: ImageNet-normalised images and targets
    padded with -1 (yxyx boxes, 1-based classes); then the update effdet's ``train.py``
    makes under the same settings: ``autocast`` and timm's ``NativeScaler`` (scaled backward,
    unscale, ``dispatch_clip_grad``, step, update) with ``train.amp``, the clip with
    ``train.clip_grad``, timm's ``ModelEmaV2`` with ``train.ema``; otherwise
    ``loss.backward()``, ``optimizer.step()``. (train.py's per-step LR update is host-side
    arithmetic and is left out.)
    """
    from timm.utils import ModelEmaV2, NativeScaler, dispatch_clip_grad

    device = model.pixel_mean.device
    bench = DetBenchTrain(_Network(model), create_labeler=True).to(device).train()
    tcfg = config["train"]
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(str(tcfg["amp"]))
    scaler = NativeScaler(device=device.type) if dtype is torch.float16 else None
    clip = float(tcfg["clip_grad"]) or None
    ema = ModelEmaV2(model, decay=float(tcfg["ema"])) if float(tcfg["ema"]) > 0 else None

    def step(images, targets):
        x = (images - model.pixel_mean) / model.pixel_std
        bbox, cls = effdet_targets(targets, model.max_targets, images.device, model.label_to_output)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = bench(x, {"bbox": bbox, "cls": cls})["loss"]
        optimizer.zero_grad()  # no set_to_none: NpuFusedSGD (fused_sgd patch) refuses it
        if scaler is not None:
            scaler(loss, optimizer, clip_grad=clip, parameters=model.parameters())
        else:
            loss.backward()
            if clip:
                dispatch_clip_grad(model.parameters(), clip)
            optimizer.step()
        if ema is not None:
            ema.update(model)
        return loss.detach()

    step.ema = ema
    return step


def build(name: str, config: dict, num_classes: int) -> EfficientDetDetector:
    """The detector for model ``name`` from a resolved detcore config."""
    mcfg, dcfg = config["model"], config["data"]
    size = dcfg["input_size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        raise UserError(f"data.input_size {size!r}: expected [height, width], e.g. [512, 512]")
    arch = str(mcfg.get("arch") or "")
    try:
        probe = get_efficientdet_config(arch)
    except Exception:
        raise UserError(f"model.arch {arch!r} is not an effdet model config "
                        f"(e.g. tf_efficientdet_d0)") from None
    stride = 2 ** int(probe.max_level)
    if any(int(v) <= 0 or int(v) % stride for v in size):
        raise UserError(f"data.input_size {list(size)}: {name} needs sides that are multiples of "
                        f"{stride} (its coarsest feature stride), e.g. [{stride * 2}, {stride * 2}]")
    coco_head = mcfg.get("coco_90_classes", False)
    if coco_head not in (True, False, "auto"):
        raise UserError(f"model.coco_90_classes {coco_head!r}: use true, false or auto")
    class_map = None
    if coco_head is True and num_classes != len(COCO80_CATEGORY_IDS):
        raise UserError(f"model.coco_90_classes=true needs the 80-category COCO dataset; this "
                        f"dataset has {num_classes} classes (use auto or false)")
    if coco_head and num_classes == len(COCO80_CATEGORY_IDS):
        class_map = [cat - 1 for cat in COCO80_CATEGORY_IDS]
    return EfficientDetDetector(
        arch, num_classes, size, drop_path_rate=mcfg.get("drop_path_rate"), class_map=class_map,
        max_detections=int(config["eval"]["max_detections"]),
        score_threshold=float(config["eval"]["score_threshold"]),
        max_targets=int(mcfg.get("max_targets", 100)),
        max_detection_points=int(mcfg.get("max_detection_points", 5000)),
        label_smoothing=float(mcfg.get("label_smoothing", 0.0)),
        bn_momentum=mcfg.get("bn_momentum"))
