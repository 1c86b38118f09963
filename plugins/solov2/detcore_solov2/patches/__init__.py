"""Vendored patches for mmdet 3.3's SOLOv2, each a reversible :class:`detcore.patching.Patch`.

From the reference (SOLOv2 on Ascend, after WXinlong/SOLO), what still applies to
mmdet 3.3's code:

* ``static_targets``: fixed-shape target generation and loss (padded ground truth, a
  fixed number of positive slots with a validity mask, int32/float counts instead of
  INT64 sums, one batched matmul instead of a dynamic conv per image and level);
* ``fixed_matrix_nms``: fixed-size inference (top-k candidates, static matrix NMS,
  int32 mask-area sums).

What the reference changed that core makes unnecessary: apex O1 and its loss scale
(core's ``torch.amp`` autocast with ``--loss-scale``), mmcv's runner/hooks and the
DDP launcher scripts (core's trainer and ``torchrun`` launcher), padding every image
to 1344 x 1344 (core letterboxes to a fixed ``data.input_size``) and moving inference
post-processing to the host (``fixed_matrix_nms`` keeps it on the device with static
shapes). Importing this package does not import torch or mmdet.
"""
from __future__ import annotations

from detcore.patching import apply_patches

from .fixed_matrix_nms import FixedMatrixNmsPatch
from .static_targets import StaticTargetsPatch

#: In application order.
PATCHES = (StaticTargetsPatch, FixedMatrixNmsPatch)


def apply_all(config, device) -> list:
    """Apply every patch with its settings from ``config``; on failure revert those applied."""
    mcfg = config.get("model", {})
    options = {StaticTargetsPatch: {"max_instances": int(mcfg.get("max_instances", 100)),
                                    "max_positives": int(mcfg.get("max_positives", 512))}}
    return apply_patches(cls(device, **options.get(cls, {})) for cls in PATCHES)


__all__ = ["PATCHES", "apply_all", "FixedMatrixNmsPatch", "StaticTargetsPatch"]
