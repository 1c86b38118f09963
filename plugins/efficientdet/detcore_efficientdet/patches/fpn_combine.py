"""``FpnCombine.forward`` without the last-axis ``stack`` (weighted sum over a leading axis)."""
from __future__ import annotations

from detcore.patching import Patch


def fpn_combine_forward(self, x):
    import torch

    dtype = x[0].dtype
    nodes = [resample(x[offset]) for offset, resample in zip(self.inputs_offsets, self.resample.values())]
    stacked = torch.stack(nodes, dim=0)  # (n, B, C, H, W): contiguous, no 5-D last-axis layout
    if self.weight_method == "attn":
        weights = torch.softmax(self.edge_weights.to(dtype=dtype), dim=0)
        return (stacked * weights.view(-1, 1, 1, 1, 1)).sum(dim=0)
    if self.weight_method == "fastattn":
        weights = torch.nn.functional.relu(self.edge_weights.to(dtype=dtype))
        # effdet's order of operations: each product, then the division by the sum
        return ((stacked * weights.view(-1, 1, 1, 1, 1)) / (torch.sum(weights) + 0.0001)).sum(dim=0)
    if self.weight_method == "sum":
        return stacked.sum(dim=0)
    raise ValueError(f"unknown weight_method {self.weight_method}")


class FpnCombineStackPatch(Patch):
    """BiFPN node fusion with ``stack`` on a leading axis instead of the last one.

    NPU limitation: effdet's ``FpnCombine.forward`` fuses the resampled inputs with
    ``torch.stack(nodes, dim=-1) * w`` then ``sum(dim=-1)``: a 5-D tensor whose new
    innermost axis has only 2-3 elements, which maps badly onto the Ascend NPU's
    5HD (NC1HWC0) layout and costs format conversions around every BiFPN node (the
    reference rewrote this ``stack`` in ``effdet/efficientdet.py``). This version stacks on axis 0 and
    reduces there (weights broadcast as ``(n, 1, 1, 1, 1)``), with effdet's arithmetic in
    effdet's order for ``attn``, ``fastattn`` (each product, then the division by the
    weight sum) and ``sum`` nodes, and its ``ValueError`` for any other method; portable,
    the same on every device.

    Tolerance: 0 on CPU (bit-identical model outputs; also for 1-3 input nodes, float64
    and bfloat16, and an empty batch). Only the axis that is reduced differs, and a sum
    of 2-3 terms is added in the same order on either axis.
    """

    name = "fpn_combine_stack"
    tolerance = 0.0
    replaces = {"effdet.efficientdet:FpnCombine.forward": "e32cefa118f4b373"}

    def targets(self):
        from effdet import efficientdet

        return [(efficientdet.FpnCombine, "forward", fpn_combine_forward)]
