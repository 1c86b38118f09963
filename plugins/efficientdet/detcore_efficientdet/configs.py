"""Named configs (plain dicts, no torch import), merged by core over ``CORE_DEFAULTS``.

Every key a user may want to ``--set`` exists here or in core's defaults:
``model.*`` is this plugin's section (read by :func:`detcore_efficientdet.model.build`).

* ``smoke``: 256x256, batch 4, 512 steps, AdamW 2e-3, PreciseBN, core's synthetic shapes;
  learns in minutes on a CPU.
* ``tiny``: 128x128 and a 16-image synthetic set; for tests and quick checks of the plumbing.
* ``coco``: the reference Ascend run (EfficientDet-D0 on COCO, 8 devices x batch 16,
  momentum SGD lr 0.16, weight decay 4e-5, 300 epochs, EMA 0.9998, sync-BN, fp16 AMP).
"""
from __future__ import annotations

import copy

from detcore.config_schema import choice, integer, number, text

from .variants import VARIANTS

#: This plugin's ``model.*`` keys (``ModelSpec.config_keys``), checked when a run starts.
MODEL_KEYS = {
    "model.arch": text("the effdet model config built (effdet.get_efficientdet_config)"),
    "model.drop_path_rate": number("backbone stochastic-depth rate (null: the arch's, 0.2 for "
                                   "d0..d7)", ge=0, lt=1, nullable=True),
    "model.max_targets": integer("ground-truth boxes padded to this fixed count (-1 fill)", ge=1),
    "model.max_detection_points": integer("top-k anchor/class candidates fed to NMS (effdet: "
                                          "5000)", ge=1),
    "model.label_smoothing": number("focal-loss label smoothing", ge=0, lt=1),
    "model.bn_momentum": number("BiFPN/head BatchNorm momentum (null: effdet's 0.01)", gt=0,
                                le=1, nullable=True),
    # effdet's checkpoints (released weights, effdet train.py runs) have its 90-output COCO
    # head (category id - 1)
    "model.coco_90_classes": choice("effdet's 90-output COCO head: true; auto: when the data has "
                                    "COCO's 80 classes, mapping labels <-> outputs; false: one "
                                    "output per class", (True, False, "auto")),
}


def model_section(name: str) -> dict:
    """The ``model`` keys (:data:`MODEL_KEYS` says what each means)."""
    return {
        "arch": VARIANTS[name].arch,
        "drop_path_rate": None,
        "max_targets": 100,
        "max_detection_points": 5000,
        "label_smoothing": 0.0,
        "bn_momentum": None,
        "coco_90_classes": False,
    }


def smoke(name: str) -> dict:
    # No stochastic depth and a faster BN momentum (effdet's 0.01 lags weights that move this
    # fast), then BatchNorm statistics recomputed for the final weights (train.precise_bn): on
    # this few steps the running averages training leaves are what decides the figure (measured
    # on one checkpoint: bbox mAP@0.5 0.12 with them, 0.77 recomputed at batch 32).
    model = {**model_section(name), "drop_path_rate": 0.0, "bn_momentum": 0.1}
    return {
        "model": model,
        "data": {"input_size": [256, 256], "batch_size": 4, "workers": 2, "hflip": 0.5,
                 "max_images": 0},
        # 256 images / batch 4 = 64 steps an epoch; 8 epochs = 512 steps, about 8 min on 2 CPU
        # cores (the README's first command: ≤ 10 min with data generation and evaluation)
        "train": {"epochs": 8, "log_interval": 10, "clip_grad": 0.0, "ema": 0.0, "amp": "off",
                  "precise_bn": 256, "precise_bn_batch": 32},
        # From scratch on a few hundred steps, AdamW wants its full rate early and long:
        # measured here, a 50-step warm-up + cosine ended at loss 0.75 where the constant
        # rate reached 0.36 in as many steps; one 10x drop near the end settles the weights.
        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-2},
        "scheduler": {"name": "step", "warmup_steps": 10, "warmup_ratio": 0.1,
                      "milestones": [0.85], "gamma": 0.1},
        "eval": {"batch_size": 8, "score_threshold": 0.05, "max_detections": 100},
    }


def tiny(name: str) -> dict:
    cfg = smoke(name)
    cfg["data"].update({"input_size": [128, 128], "batch_size": 4, "workers": 0})
    # merged by core over its data.synthetic defaults
    cfg["data"]["synthetic"] = {"num_train": 16, "num_val": 8, "min_size": 96, "max_size": 160}
    # no PreciseBN: on a model trained a few steps, statistics recomputed over 16 images leave
    # near-constant channels with near-zero variances that magnify float differences (its
    # onnxruntime export check measured 0.0245 px against a 1e-3 tolerance; the smoke-trained
    # model exports at 3e-5)
    cfg["train"].update({"epochs": 1, "log_interval": 1, "warmup_fps_steps": 1, "perf_steps": 2,
                         "precise_bn": 0})
    cfg["scheduler"]["warmup_steps"] = 2
    cfg["eval"]["batch_size"] = 4
    return cfg


# COCO train2017 has 117,266 images with annotations: 916 steps an epoch at 8 x 16.
COCO_STEPS_PER_EPOCH_8P = 117266 // (8 * 16)


def coco(name: str) -> dict:
    size = VARIANTS[name].size
    return {
        "model": {**model_section(name), "coco_90_classes": "auto"},
        "data": {"input_size": [size, size], "batch_size": 16, "workers": 4, "hflip": 0.5,
                 "max_images": 0},
        "train": {
            "epochs": 300,
            "ema": 0.9998,          # effdet train.py --model-ema-decay
            "sync_bn": True,        # reference --sync-bn (effective with world size > 1)
            "amp": "fp16",          # reference apex O1; NPU runs used a fixed --loss-scale 128
            "loss_scale": "dynamic",
            "clip_grad": 10.0,      # effdet train.py --clip-grad default
            "log_interval": 50,
        },
        # effdet train.py: --opt momentum (SGD, no Nesterov), --momentum 0.9, --weight-decay 4e-5
        # (not applied to biases and norm weights, as timm's create_optimizer does);
        # the reference: --lr 0.16 for 8 devices, scaled linearly for other world sizes.
        "optimizer": {"name": "sgd", "lr": 0.16, "momentum": 0.9, "weight_decay": 4e-5,
                      "scale_lr_by_world_size": True, "base_world_size": 8},
        # effdet: cosine, 5 warm-up epochs from --warmup-lr 1e-4 (ratio 1e-4 / 0.16)
        "scheduler": {"name": "cosine", "warmup_steps": 5 * COCO_STEPS_PER_EPOCH_8P,
                      "warmup_ratio": 1e-4 / 0.16},
        "eval": {"batch_size": 16, "score_threshold": 0.001, "max_detections": 100},
        "export": {"opset": 17, "batch_size": 1},
    }


def configs_for(name: str) -> dict:
    """The named configs of model ``name`` (zero-argument callables, each a fresh dict)."""
    return {"smoke": lambda: copy.deepcopy(smoke(name)),
            "tiny": lambda: copy.deepcopy(tiny(name)),
            "coco": lambda: copy.deepcopy(coco(name))}
