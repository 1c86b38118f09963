"""Vendored patches for effdet/timm, each a reversible :class:`detcore.patching.Patch`.

Each module names the Ascend NPU limitation its patch works around and the tolerance
within which it is equivalent to the code it replaces (checked by the plugin's tests).
On NPU the patches use torch_npu kernels; elsewhere (``--patches on`` on CPU/GPU)
their portable versions. Importing this package does not import torch.
"""
from __future__ import annotations

from detcore.patching import apply_patches

from .fixed_nms import FixedSizeNmsPatch
from .fpn_combine import FpnCombineStackPatch
from .fused_sgd import FusedSgdPatch
from .one_hot import OneHotPatch

#: In application order (``apply_npu_patches`` applies them, ``npu_patches`` lists them). The
#: float32-metrics change of the reference needs no patch: core scores with pycocotools on the
#: host; nor do its timm padding edits (see README: the retired ``static_same_pad``).
PATCHES = (OneHotPatch, FixedSizeNmsPatch, FpnCombineStackPatch, FusedSgdPatch)


def apply_all(config, device) -> list:
    """Apply every patch for ``device``; on failure revert those already applied."""
    return apply_patches(cls(device) for cls in PATCHES)


__all__ = ["PATCHES", "apply_all", "FixedSizeNmsPatch", "FpnCombineStackPatch", "FusedSgdPatch",
           "OneHotPatch"]
