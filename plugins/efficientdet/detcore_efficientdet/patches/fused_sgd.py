"""Fused momentum SGD: ``torch_npu.optim.NpuFusedSGD`` on NPU, ``SGD(fused=True)`` elsewhere."""
from __future__ import annotations

import functools

from detcore.patching import Patch, is_npu, require_torch_npu


def fused_sgd_factory(device):
    """The optimizer class (or partial) the patched ``build_optimizer`` hook constructs."""
    import torch

    if is_npu(device):
        require_torch_npu(FusedSgdPatch.name)
        from torch_npu.optim import NpuFusedSGD

        return NpuFusedSGD
    kind = getattr(device, "type", str(device or "cpu"))
    if _fused_supported(kind):
        return functools.partial(torch.optim.SGD, fused=True)
    return torch.optim.SGD


@functools.lru_cache(maxsize=None)
def _fused_supported(kind: str) -> bool:
    """Does this torch build have a fused SGD kernel for device type ``kind``?"""
    import torch

    if kind not in ("cpu", "cuda"):
        return False
    try:
        p = torch.nn.Parameter(torch.zeros(1, device=kind))
        p.grad = torch.zeros_like(p)
        torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True).step()
        return True
    except (RuntimeError, TypeError, ValueError):
        return False


class FusedSgdPatch(Patch):
    """Build the momentum-SGD optimizer as a fused, multi-tensor kernel.

    NPU limitation: a per-parameter ``torch.optim.SGD`` step launches several small
    kernels for each of EfficientDet's ~800 tensors, which dominates the step time
    on the Ascend NPU (host-bound dispatch); the reference swapped timm's
    ``optim_factory`` to ``apex``/``torch_npu``'s ``NpuFusedSGD``. The optimizer is
    built by this plugin's ``build_optimizer`` hook (for ``optimizer.name: sgd``), so
    this patch swaps the class that hook uses
    (``detcore_efficientdet.optim.SGD_FACTORY``): ``torch_npu.optim.NpuFusedSGD`` on
    NPU (raising a message naming torch_npu if it is absent), else
    ``torch.optim.SGD(fused=True)`` where this torch has a fused kernel for the
    device (CUDA; CPU in recent torch), else plain ``torch.optim.SGD``. AdamW configs
    (``smoke``) are not affected.

    Tolerance: 1e-6 absolute on parameters after a few steps in float32 (the same
    update rule; fused kernels may round ``p - lr * buf`` differently).
    """

    name = "fused_sgd"
    tolerance = 1e-6
    #: the plugin's own hook point (``torch.optim.SGD`` unpatched): no upstream code replaced
    replaces = {"detcore_efficientdet.optim:SGD_FACTORY": None}
    npu_ops = ("optim.NpuFusedSGD",)

    def targets(self):
        from .. import optim

        return [(optim, "SGD_FACTORY", fused_sgd_factory(self.device))]
