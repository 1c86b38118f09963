"""``one_hot`` of effdet's loss through ``torch_npu.npu_one_hot`` on NPU."""
from __future__ import annotations

from detcore.patching import Patch, is_npu, require_torch_npu


def one_hot_portable(x, num_classes: int):
    """effdet's ``one_hot`` (negative entries -> all zeros) via ``F.one_hot``; float32.

    Accepts what effdet's accepts: int64 and int32 indices (its ``scatter`` takes both;
    ``F.one_hot`` only int64, so int32 is widened), any shape including empty and 0-d.
    Other dtypes raise, as effdet's does.
    """
    import torch
    import torch.nn.functional as F

    x_non_neg = (x >= 0).unsqueeze(-1)
    index = x.clamp(min=0)
    if index.dtype == torch.int32:
        index = index.long()
    return F.one_hot(index, num_classes).to(torch.float32) * x_non_neg


def one_hot_npu(x, num_classes: int):
    """The same through the NPU's OneHot kernel (TF semantics: out-of-range -> off_value)."""
    import torch

    npu = require_torch_npu(OneHotPatch.name)
    x_non_neg = (x >= 0).unsqueeze(-1)
    onehot = npu.npu_one_hot(x.to(torch.int32), -1, num_classes, 1, 0)
    return onehot.to(torch.float32) * x_non_neg


class OneHotPatch(Patch):
    """Route effdet's focal-loss ``one_hot`` to ``torch_npu.npu_one_hot`` on NPU.

    NPU limitation: effdet's ``one_hot`` builds the encoding with ``zeros`` +
    ``scatter`` on a 5-D tensor (anchors x classes per level), a poor fit for the
    Ascend NPU, which has a dedicated OneHot kernel instead (the reference replaced
    it with ``torch.npu_one_hot`` in ``effdet/loss.py``). On NPU this patch uses
    ``torch_npu.npu_one_hot`` (raising a message naming torch_npu if it is absent);
    elsewhere the portable ``F.one_hot`` version. Negative targets (-1 background,
    -2 ignore) stay all-zero rows, as in effdet.

    Also points ``effdet.loss.loss_jit`` at the Python ``loss_fn``: the scripted
    copy compiled effdet's own ``one_hot`` in at import time and would bypass the
    patch when ``jit_loss`` is on (detcore builds with ``jit_loss=False`` anyway).

    Tolerance: 0 (0/1 values either way; the loss is bit-identical).
    """

    name = "npu_one_hot"
    tolerance = 0.0
    replaces = {"effdet.loss:one_hot": "08b4b56ae57e4464",
                "effdet.loss:loss_jit": "ab12ab16fbba23ff"}  # the scripted loss_fn: its source
    npu_ops = ("npu_one_hot",)

    def targets(self):
        from effdet import loss

        if is_npu(self.device):
            require_torch_npu(self.name)  # fail now, with the message, not mid-training
            fn = one_hot_npu
        else:
            fn = one_hot_portable
        return [(loss, "one_hot", fn), (loss, "loss_jit", loss.loss_fn)]
