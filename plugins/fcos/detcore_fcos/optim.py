"""The reference's optimizer: SGD/AdamW with mmdet's ``paramwise_cfg`` for biases.

``fcos_r50-caffe_fpn_gn-head_1x_coco.py`` sets ``paramwise_cfg=dict(bias_lr_mult=2.,
bias_decay_mult=0.)``: biases learn twice as fast and get no weight decay. mmengine's
``DefaultOptimWrapperConstructor`` applies ``bias_lr_mult`` and ``bias_decay_mult`` to every
parameter named ``*.bias`` except those of normalisation layers (and DCN offsets, which FCOS
does not have); normalisation biases keep the base settings. Same here, with core's
world-size lr scaling.
"""
from __future__ import annotations

import torch

from detcore.errors import UserError
from detcore.train.optim import scaled_lr


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, bias_lr_mult: float,
                 bias_decay_mult: float) -> list[dict]:
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm

    norm_types = (_BatchNorm, _InstanceNorm, torch.nn.GroupNorm, torch.nn.LayerNorm)
    base, bias = [], []
    for module in model.modules():
        is_norm = isinstance(module, norm_types)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (bias if name == "bias" and not is_norm else base).append(param)
    groups = [{"params": base, "lr": lr, "weight_decay": weight_decay}]
    if bias:
        groups.append({"params": bias, "lr": lr * bias_lr_mult,
                       "weight_decay": weight_decay * bias_decay_mult})
    return groups


def build_optimizer(config: dict, model: torch.nn.Module, world_size: int):
    ocfg = config["optimizer"]
    lr, wd = scaled_lr(config, world_size), float(ocfg["weight_decay"])
    groups = param_groups(model, lr, wd, float(ocfg.get("bias_lr_mult", 1.0)),
                          float(ocfg.get("bias_decay_mult", 1.0)))
    name = str(ocfg["name"]).lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(ocfg["momentum"]), weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    raise UserError(f"optimizer.name {name!r}: use sgd or adamw")
