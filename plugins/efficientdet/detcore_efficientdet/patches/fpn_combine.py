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
        weights = weights / (torch.sum(weights) + 0.0001)
        return (stacked * weights.view(-1, 1, 1, 1, 1)).sum(dim=0)
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
    reduces there (weights broadcast as ``(n, 1, 1, 1, 1)``), the same arithmetic
    for ``attn``, ``fastattn`` and ``sum`` nodes; portable, the same on every device.
    (``fastattn`` divides the weights by their sum first instead of each product:
    a rounding-level difference.)

    Tolerance: 1e-4 absolute on model outputs in float32 (only the summation order
    and, for ``fastattn``, the division order differ; measured differences are ~1e-6).
    """

    name = "fpn_combine_stack"
    tolerance = 1e-4

    def targets(self):
        from effdet import efficientdet

        return [(efficientdet.FpnCombine, "forward", fpn_combine_forward)]
