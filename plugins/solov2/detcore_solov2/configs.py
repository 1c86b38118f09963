"""Named configs, built from the configs shipped inside the mmdet wheel (nothing is copied).

Each named config is a zero-argument callable (core calls it when the config is chosen)
that reads mmdet's config with mmengine and maps it onto detcore's keys; the result is
merged by core over ``CORE_DEFAULTS``. Every key a user may ``--set`` is in the returned
dict. ``model.*`` is this plugin's section, read by :func:`detcore_solov2.model.build`;
:data:`MODEL_KEYS` says what each key means and the values it takes (checked when a run starts).

``eval.score_threshold`` is mmdet's ``filter_thr`` (score after matrix NMS) and
``eval.max_detections`` its ``max_per_img``, also the ``N`` of the exported outputs.

Both models (``solov2``, ``solov2-light``) are the same code; the model name picks the
mmdet config the architecture and the COCO recipe come from (:data:`MMDET_CONFIGS`).

* ``coco``: mmdet's COCO recipe for the model. For ``solov2`` it is the reference run,
  ``solov2/solov2_r50_fpn_1x_coco.py``: ResNet-50 FPN, 12 epochs, SGD lr 0.01 momentum 0.9
  wd 1e-4 for 8 devices x 2 images (scaled linearly with the world size), gradient
  clipping 35, linear warm-up 500 steps from 0.001, steps at epochs 8 and 11, input
  1333 x 800 (a fixed 800 x 1344 canvas), fp16 AMP with the reference's static loss
  scale 128. For ``solov2-light``: ``solov2/solov2-light_r18_fpn_ms-3x_coco.py`` (36 epochs,
  448 x 768).
* ``smoke``: the model's head on a small backbone (ResNet-18 at half width, 64-channel FPN,
  128-channel head, coarser grids) at 224 x 224 on the synthetic shapes, from scratch,
  AdamW 2e-3 cosine, 21 epochs capped at 15 minutes: minutes on a CPU. For ``solov2-light``
  that is SOLOv2-light R18, narrowed.

Neither config has a ``data.synthetic`` section: the synthetic dataset used without ``--data``
is core's default one (``--set data.synthetic.num_train=16`` still works).
"""
from __future__ import annotations

import functools
import math

from detcore.config_schema import choice, flag, integer, integers, number, text

#: ResNet block expansion per depth (BasicBlock 1, Bottleneck 4): the depths ``model.depth`` takes.
EXPANSION = {18: 1, 34: 1, 50: 4, 101: 4, 152: 4}

#: This plugin's ``model.*`` keys (``ModelSpec.config_keys``), checked when a run starts.
MODEL_KEYS = {
    "model.mmdet_config": text("the mmdet config the architecture comes from (inside the wheel)"),
    "model.depth": choice("ResNet depth", EXPANSION),
    "model.backbone_weights": text("local ResNet checkpoint (torchvision layout, e.g. "
                                   "resnet50-19c8e357.pth); empty: random init (nothing is ever "
                                   "downloaded)", empty=True),
    "model.frozen_stages": integer("ResNet stages frozen (mmdet: 1, assumes pretrained weights; "
                                   "-1: none)", ge=-1, le=4),
    "model.norm_eval": flag("keep backbone BN statistics frozen (mmdet: true, assumes "
                            "pretrained)"),
    "model.base_channels": integer("ResNet stem width (64 = standard)", ge=1),
    "model.fpn_channels": integer("FPN / head input channels", ge=1),
    "model.feat_channels": integer("head (kernel and class branch) channels", ge=1),
    "model.mask_feat_channels": integer("mask-feature branch hidden channels", ge=1),
    "model.mask_out_channels": integer("mask-feature (dynamic kernel) channels", ge=1),
    "model.stacked_convs": integer("convs per head branch", ge=1),
    "model.num_grids": integers("SOLO grid per FPN level (one per level)", ge=1),
    "model.score_thr": number("class-score threshold before matrix NMS (mmdet test_cfg)", ge=0,
                              le=1),
    "model.mask_thr": number("mask binarisation threshold", gt=0, lt=1),
    "model.nms_pre": integer("candidates fed to matrix NMS (fixed size with the patches and in "
                             "export)", ge=1),
    "model.max_instances": integer("ground truth padded to this count (static_targets patch)",
                                   ge=1),
    "model.max_positives": integer("positive (instance, cell) slots per image (static_targets "
                                   "patch)", ge=1),
}

#: model name -> the mmdet config (inside the wheel) its architecture and COCO recipe come from
MMDET_CONFIGS = {"solov2": "solov2/solov2_r50_fpn_1x_coco.py",
                 "solov2-light": "solov2/solov2-light_r18_fpn_ms-3x_coco.py"}


def _mmdet(relpath: str):
    from detcore_mmdet.adapter import load_config

    return load_config(relpath)


def model_section(cfg, relpath: str) -> dict:
    """This plugin's ``model`` keys with the values of mmdet config ``cfg``."""
    m = cfg.model
    head, feat = m.mask_head, m.mask_head.mask_feature_head
    return {
        "mmdet_config": relpath,
        "depth": int(m.backbone.depth),
        "backbone_weights": "",
        "frozen_stages": int(m.backbone.get("frozen_stages", -1)),
        "norm_eval": bool(m.backbone.get("norm_eval", True)),
        "base_channels": int(m.backbone.get("base_channels", 64)),
        "fpn_channels": int(m.neck.out_channels),
        "feat_channels": int(head.feat_channels),
        "mask_feat_channels": int(feat.feat_channels),
        "mask_out_channels": int(feat.out_channels),
        "stacked_convs": int(head.stacked_convs),
        "num_grids": [int(g) for g in head.num_grids],
        "score_thr": float(m.test_cfg.score_thr),
        "mask_thr": float(m.test_cfg.mask_thr),
        "nms_pre": int(m.test_cfg.nms_pre),
        "max_instances": 100,
        "max_positives": 512,
    }


def _schedule(cfg, epochs: int) -> dict:
    """mmdet's LinearLR warm-up + MultiStepLR as core's ``step`` scheduler (milestones as fractions)."""
    warm = next(s for s in cfg.param_scheduler if s.type == "LinearLR")
    steps = next(s for s in cfg.param_scheduler if s.type == "MultiStepLR")
    return {"name": "step", "warmup_steps": int(warm.end), "warmup_ratio": float(warm.start_factor),
            "milestones": [round(m / epochs, 4) for m in steps.milestones],
            "gamma": float(steps.gamma)}


def _input_size(cfg) -> list[int]:
    """The test Resize scale (e.g. 1333 x 800) as a fixed canvas, each side rounded up to 32."""
    resize = next(t for t in cfg.test_pipeline if t.type == "Resize")
    long_side, short_side = max(resize.scale), min(resize.scale)
    return [int(math.ceil(short_side / 32) * 32), int(math.ceil(long_side / 32) * 32)]


def coco(model: str) -> dict:
    relpath = MMDET_CONFIGS[model]
    cfg = _mmdet(relpath)
    optim = cfg.optim_wrapper.optimizer
    epochs = int(cfg.train_cfg.max_epochs)
    per_device = int(cfg.train_dataloader.batch_size)
    base_world = int(cfg.auto_scale_lr.base_batch_size) // per_device  # 16 images = 8 x 2
    return {
        "model": model_section(cfg, relpath),
        "data": {"input_size": _input_size(cfg), "batch_size": per_device, "workers": 4,
                 "hflip": 0.5, "max_images": 0},
        # loss_scale as a string, so that --set train.loss_scale=dynamic works too
        "train": {"epochs": epochs, "amp": "fp16", "loss_scale": "128",
                  "clip_grad": float(cfg.optim_wrapper.clip_grad.max_norm), "ema": 0.0,
                  "log_interval": 50, "checkpoint_every": 1},
        "optimizer": {"name": "sgd", "lr": float(optim.lr), "momentum": float(optim.momentum),
                      "weight_decay": float(optim.weight_decay), "scale_lr_by_world_size": True,
                      "base_world_size": base_world},
        "scheduler": _schedule(cfg, epochs),
        "eval": {"batch_size": per_device, "score_threshold": float(cfg.model.test_cfg.filter_thr),
                 "max_detections": int(cfg.model.test_cfg.max_per_img)},
        "export": {"opset": 17, "dynamic_batch": False, "batch_size": 1, "soc_version": None},
    }


def smoke(model: str) -> dict:
    relpath = MMDET_CONFIGS[model]
    cfg = _mmdet(relpath)
    model = model_section(cfg, relpath)
    # from scratch: nothing frozen; narrower and coarser than COCO's to train in minutes
    model.update({"depth": 18, "frozen_stages": -1, "norm_eval": False, "base_channels": 32,
                  "fpn_channels": 64, "feat_channels": 128, "mask_feat_channels": 64,
                  "mask_out_channels": 64, "num_grids": [20, 16, 12, 8, 6], "nms_pre": 200,
                  "max_instances": 16, "max_positives": 128})
    return {
        "model": model,
        "data": {"input_size": [224, 224], "batch_size": 4, "workers": 2, "hflip": 0.5,
                 "max_images": 0},
        # 256 images / batch 4 = 64 steps an epoch; 21 epochs ~ 13 min on one CPU thread
        "train": {"epochs": 21, "amp": "off", "loss_scale": "dynamic", "clip_grad": 35.0,
                  "ema": 0.0, "log_interval": 10, "max_minutes": 15.0},
        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "momentum": 0.9,
                      "scale_lr_by_world_size": True, "base_world_size": 1},
        "scheduler": {"name": "cosine", "warmup_steps": 50, "warmup_ratio": 0.001},
        "eval": {"batch_size": 4, "score_threshold": float(cfg.model.test_cfg.filter_thr),
                 "max_detections": 20},
    }


def configs_for(model: str) -> dict:
    """The named configs of ``model`` (callables: mmdet's config is read only when chosen)."""
    return {"smoke": functools.partial(smoke, model), "coco": functools.partial(coco, model)}
