"""Core's default optimizer and schedule, from the config (torch.optim only)."""
from __future__ import annotations

import math

import torch

from ..config_schema import SCHEDULERS
from ..errors import UserError


def scaled_lr(cfg: dict, world_size: int) -> float:
    ocfg = cfg["optimizer"]
    lr = float(ocfg["lr"])
    if ocfg.get("scale_lr_by_world_size"):
        lr *= world_size / float(ocfg.get("base_world_size", 1))
    return lr


def default_optimizer(model: torch.nn.Module, cfg: dict, world_size: int):
    ocfg = cfg["optimizer"]
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = scaled_lr(cfg, world_size), float(ocfg["weight_decay"])
    name = str(ocfg["name"]).lower()
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(ocfg["momentum"]), weight_decay=wd)
    raise UserError(f"optimizer.name {name!r}: use adamw or sgd (or a plugin's build_optimizer)")


def build_scheduler(optimizer, scfg: dict, total_steps: int):
    """Linear warm-up, then ``cosine``, ``step`` (milestones as fractions) or ``constant``."""
    name = str(scfg["name"])
    if name not in SCHEDULERS:
        raise UserError(f"scheduler.name {name!r}: use one of {', '.join(SCHEDULERS)}")
    warm = min(int(scfg["warmup_steps"]), max(0, total_steps - 1))
    ratio = float(scfg["warmup_ratio"])
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return ratio + (1 - ratio) * step / warm
        progress = (step - warm) / max(1, total - warm)
        if name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if name == "step":
            passed = sum(progress >= m for m in scfg["milestones"])
            return float(scfg["gamma"]) ** passed
        return 1.0  # constant

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
