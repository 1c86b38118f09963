"""Vendored patches for mmdet's FCOS, each a reversible :class:`detcore.patching.Patch`.

Each module names the Ascend NPU limitation its patch works around and the tolerance
within which it is equivalent to the code it replaces (checked by the plugin's tests).
On NPU the patches use torch_npu kernels; elsewhere (``--patches on`` on CPU/GPU) their
portable versions. The reference's replaced mmcv files need no patch: core owns what they
did (see the plugin README's table). Importing this package does not import torch.
"""
from __future__ import annotations

from detcore.patching import apply_patches

from .static_postprocess import StaticPostprocessPatch

#: In application order.
PATCHES = (StaticPostprocessPatch,)


def apply_all(config, device) -> list:
    """Apply every patch for ``device``; on failure revert those already applied."""
    return apply_patches(cls(device) for cls in PATCHES)


__all__ = ["PATCHES", "StaticPostprocessPatch", "apply_all"]
