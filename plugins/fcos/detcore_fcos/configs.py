"""Named configs of model ``fcos`` (plain dicts, no torch/mmdet import), merged over core's defaults.

The network itself comes from mmdet's own config files shipped inside the mmdet wheel
(``mmdet/.mim/configs/fcos/...``, picked by ``model.arch``); nothing is copied here. The
``model`` section holds this plugin's keys, so ``--set model.backbone_weights=r50.pth`` works;
:data:`MODEL_KEYS` says what each means and the values it takes (checked when a run starts).

The score threshold and the detections per image are core's ``eval.score_threshold`` and
``eval.max_detections`` (100: the export contract's ``[B, 100]``).

* ``smoke``: R18 unfrozen, FPN/head width 128, 192x192, batch 8, AdamW 1e-3 (cosine, 9 epochs),
  the synthetic shapes; minutes on a CPU.
* ``coco``: the reference run, ``fcos_r50-caffe_fpn_gn-head_4xb4-1x_coco.py`` (FCOS R50-caffe,
  800x1333, 12 epochs, 4 devices x batch 4, SGD 0.01 scaled by world size, momentum 0.9, wd 1e-4,
  bias lr x2 and no bias decay, grad clip 35, steps at epochs 8 and 11, warm-up 500 iterations).

Neither config has a ``data.synthetic`` section: the synthetic dataset used without ``--data``
is core's default one (``--set data.synthetic.num_train=16`` still works).
"""
from __future__ import annotations

from detcore.config_schema import flag, integer, number, text

#: ``model.arch`` names -> mmdet config files (relative to ``mmdet/.mim/configs``).
ARCHS = {
    "fcos_r18": "fcos/fcos_r18_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py",
    "fcos_r50": "fcos/fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py",
    "fcos_r50_caffe": "fcos/fcos_r50-caffe_fpn_gn-head_4xb4-1x_coco.py",
    "fcos_r101_caffe": "fcos/fcos_r101-caffe_fpn_gn-head-1x_coco.py",
}

#: This plugin's keys (``ModelSpec.config_keys``), checked when a run starts.
MODEL_KEYS = {
    "model.arch": text(f"one of {', '.join(ARCHS)}, or a config path relative to mmdet's "
                       f"config folder"),
    "model.backbone_weights": text("local ResNet weights (torchvision/caffe state dict, or an "
                                   "mmdet detector checkpoint: its backbone.* part); empty: from "
                                   "scratch", empty=True),
    "model.frozen_stages": integer("ResNet stages frozen (-1: none); the reference freezes "
                                   "stage 1", ge=-1, le=4),
    "model.norm_eval": flag("keep BN statistics frozen (right only with pretrained weights)"),
    "model.width": integer("FPN/head channels, a multiple of 32 (0: the arch's 256)", ge=0),
    "model.stacked_convs": integer("head conv tower depth (0: the arch's 4)", ge=0),
    "model.nms_pre": integer("top-k (point, class) candidates kept per FPN level before NMS",
                             ge=1),
    "model.nms_iou": number("class-aware NMS IoU threshold", gt=0, le=1),
    "model.min_bbox_size": number("boxes not wider and higher than this are dropped (mmdet's "
                                  "rule)", unit="px", ge=0),
    "optimizer.bias_lr_mult": number("lr multiplier of biases (not normalisation ones)", ge=0),
    "optimizer.bias_decay_mult": number("weight-decay multiplier of biases", ge=0),
}

# COCO train2017 has 117,266 images with annotations; the reference: 4 devices x batch 4.
COCO_EPOCHS = 12


def smoke() -> dict:
    return {
        "model": {"arch": "fcos_r18", "backbone_weights": "", "frozen_stages": -1,
                  "norm_eval": False, "width": 128, "stacked_convs": 2, "nms_pre": 1000,
                  "nms_iou": 0.6, "min_bbox_size": 0},
        # 192x192: the shapes (15-40% of a 192-320 px image) stay >= 17 px, and a step costs
        # about half of 256x256; 256 images / batch 8 = 32 steps an epoch, 9 epochs = 288 steps
        # (measured: ~9 min on 2 busy CPU cores with 1 thread, bbox mAP@0.5 0.63)
        "data": {"input_size": [192, 192], "batch_size": 8, "workers": 2, "hflip": 0.5,
                 "max_images": 0},
        "train": {"epochs": 9, "log_interval": 10, "clip_grad": 35.0, "amp": "off"},
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4,
                      "bias_lr_mult": 1.0, "bias_decay_mult": 1.0},
        "scheduler": {"name": "cosine", "warmup_steps": 50, "warmup_ratio": 0.001},
        "eval": {"batch_size": 8, "score_threshold": 0.05, "max_detections": 100},
        "export": {"opset": 11, "batch_size": 1},
    }


def coco() -> dict:
    return {
        "model": {"arch": "fcos_r50_caffe", "backbone_weights": "", "frozen_stages": 1,
                  "norm_eval": True, "width": 0, "stacked_convs": 0, "nms_pre": 1000,
                  "nms_iou": 0.5, "min_bbox_size": 0},
        # mmdet's pipeline: Resize(1333, 800, keep_ratio) then pad; detcore letterboxes into
        # an 800 x 1333 canvas (the reference's ONNX/om input shape).
        "data": {"input_size": [800, 1333], "batch_size": 4, "workers": 4, "hflip": 0.5,
                 "max_images": 0},
        "train": {"epochs": COCO_EPOCHS, "log_interval": 50, "clip_grad": 35.0, "amp": "off",
                  "loss_scale": "dynamic"},
        # lr 0.01 is for 4 devices x 4 images; core scales it by world_size / 4.
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
                      "scale_lr_by_world_size": True, "base_world_size": 4,
                      "bias_lr_mult": 2.0, "bias_decay_mult": 0.0},
        # mmdet: ConstantLR(1/3) for 500 iterations, then MultiStepLR at epochs 8 and 11.
        # Core's step milestones are fractions of the post-warm-up steps.
        "scheduler": {"name": "step", "warmup_steps": 500, "warmup_ratio": 1.0 / 3,
                      "milestones": [8 / COCO_EPOCHS, 11 / COCO_EPOCHS], "gamma": 0.1},
        "eval": {"batch_size": 4, "score_threshold": 0.05, "max_detections": 100},
        "export": {"opset": 11, "batch_size": 1},
    }


CONFIGS = {"smoke": smoke, "coco": coco}
