"""The ``build_optimizer`` hook: effdet's momentum SGD (timm ``create_optimizer`` semantics).

For ``optimizer.name: sgd`` (or ``momentum``) this builds what effdet's ``train.py``
builds with ``--opt momentum``: ``SGD(momentum, nesterov=False)`` with weight decay
on weights only; biases and normalisation parameters (1-D tensors) get none, as
timm's ``create_optimizer(filter_bias_and_bn=True)`` does. The learning rate is
core's: ``optimizer.lr`` scaled by the world size core passes to the hook. Any other
optimizer name returns ``None``, so core's default (e.g. AdamW for ``smoke``) is used.
"""
from __future__ import annotations

import torch

#: What the hook constructs. The ``fused_sgd`` patch swaps in ``NpuFusedSGD`` on NPU
#: and ``SGD(fused=True)`` elsewhere (see ``patches/fused_sgd.py``).
SGD_FACTORY = torch.optim.SGD


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(config: dict, model: torch.nn.Module, world_size: int):
    """``world_size``: the run's, as core passes it to the hook (scales ``optimizer.lr``)."""
    from detcore.train.optim import scaled_lr

    ocfg = config["optimizer"]
    if str(ocfg["name"]).lower() not in ("sgd", "momentum"):
        return None
    lr = scaled_lr(config, int(world_size))
    groups = param_groups(model, float(ocfg["weight_decay"]))
    return SGD_FACTORY(groups, lr=lr, momentum=float(ocfg["momentum"]), nesterov=False)
