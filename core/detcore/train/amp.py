"""Mixed precision: ``torch.amp`` autocast plus a dynamic or static loss scale (replaces apex O1)."""
from __future__ import annotations

import contextlib

import torch

from ..errors import UserError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class NonFiniteLoss(UserError):
    """A NaN/Inf loss or gradient that a static loss scale cannot recover from."""


def autocast(device: torch.device, amp: str):
    """``amp``: ``off``, ``fp16`` or ``bf16`` (checked once by the runner)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[amp])


class StaticLossScaler:
    """A fixed loss scale, as the reference NPU runs use (``--loss-scale 32``).

    Mirrors the subset of ``torch.amp.GradScaler``'s API the trainer calls. With a
    fixed scale a non-finite gradient cannot be recovered by lowering the scale,
    so it stops training with a message naming the step.
    """

    def __init__(self, scale: float):
        self._scale = float(scale)
        self._unscaled = False

    def scale(self, loss):
        return loss * self._scale

    def unscale_(self, optimizer):
        if self._unscaled:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self._scale)
        self._unscaled = True

    def step(self, optimizer):
        self.unscale_(optimizer)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.float().abs().sum() for g in grads])).all():
            raise NonFiniteLoss("non-finite gradient")
        optimizer.step()

    def update(self):
        self._unscaled = False

    def get_scale(self) -> float:
        return self._scale

    def state_dict(self) -> dict:
        return {"scale": self._scale}

    def load_state_dict(self, state: dict) -> None:
        self._scale = float(state["scale"])


def make_scaler(device: torch.device, amp: str, loss_scale):
    """fp16 needs a scale; bf16 and fp32 do not. ``loss_scale``: ``dynamic`` or a number."""
    if amp != "fp16":
        return None
    if str(loss_scale) == "dynamic":
        return torch.amp.GradScaler(device.type)
    try:
        value = float(loss_scale)
    except ValueError:
        raise UserError(f"--loss-scale {loss_scale!r}: use 'dynamic' or a number such as 128") from None
    if value <= 0:
        raise UserError(f"--loss-scale {loss_scale!r} must be positive")
    return StaticLossScaler(value)
