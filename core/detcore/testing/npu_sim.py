"""A CPU simulator of the ``torch_npu`` surface that detcore's patches call.

Plugins' vendored patches take an NPU branch (``torch_npu`` kernels) when their device
is an NPU. Without Ascend hardware that branch never runs, so its call signatures,
dtypes, shapes and control flow are never checked. This module provides a fake
``torch_npu`` module whose functions run on CPU and follow **Ascend's own
documentation** of each API: signature and argument order, accepted dtypes, output
shapes and dtypes, padding values and the documented restrictions, which it enforces
(it raises where the documentation says an input is not allowed, and also where real
hardware would silently give "unpredictable results", so that a test sees it).

What it proves and what it cannot: see :data:`LIMITS`. For a whole simulated NPU *device*
(``--device npu`` end to end, in subprocesses), see :mod:`detcore.testing.npu_device`.

Use it in tests::

    from detcore.testing.npu_sim import npu_device, simulated_npu  # a pytest fixture

    def test_my_patch_npu_branch(simulated_npu):
        with MyPatch(npu_device()):
            ...

or as a context manager, ``with simulated_torch_npu() as torch_npu: ...``, or for a
whole pytest session with ``DETCORE_SIMULATE_NPU=1`` (or ``=910b`` etc.: also enforce
which Ascend products each API's page lists, see :data:`SUPPORTED`): detcore's ``pytest11``
entry point ``detcore_npu_sim`` loads this module as a pytest plugin in every pytest run,
where it does nothing unless asked. The fake module is in
``sys.modules`` only while the simulator is active, and it refuses to install where a
real ``torch_npu`` is importable: it can never shadow the real one.

The simulated surface (each function's docstring names the page it follows):
``torch_npu.npu_one_hot``, ``torch_npu.npu_nms_v4``, ``torch_npu.npu_batch_nms`` and
``torch_npu.optim.NpuFusedSGD``. Any other attribute raises ``AttributeError`` naming
this module: add it here, from the documentation, when a patch starts calling it.

Patches pick their branch with :func:`detcore.patching.is_npu`, which reads only
``device.type``; ``torch.device("npu")`` does not exist without the real backend, so
tests pass :func:`npu_device` (``type == "npu"``). The simulated ops take and return
CPU tensors: the patches' NPU branches put nothing on the device themselves (they
work on the tensors they are given), so no device placement is simulated.

This module imports torch only when the simulator is used (it is loaded at every
pytest start-up as a plugin).
"""
from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import math
import os
import sys
import threading
import types

ENV = "DETCORE_SIMULATE_NPU"
#: What ``torch_npu.__version__`` says while simulated (no real release has a local part).
SIMULATED_VERSION = "0.0.0+detcore.npu_sim"

#: Ascend documentation each simulated API follows (op-plugin's API reference, the
#: operator prototypes of CANN's ops-cv and, where Ascend says the op is TensorFlow's,
#: TensorFlow's op reference).
DOCS = {
    "npu_one_hot": "op-plugin docs/zh/custom_APIs/torch_npu/（beta）torch_npu-npu_one_hot.md "
                   "(hiascend.com Pytorch apiref ptaoplist_000811, (beta)torch_npu.npu_one_hot)",
    "npu_nms_v4": "op-plugin docs/zh/custom_APIs/torch_npu/（beta）torch_npu-npu_nms_v4.md "
                  "(hiascend.com Pytorch apiref ptaoplist_000809); CANN operator prototype "
                  "NonMaxSuppressionV4 ('Compatible with tensorflow NonMaxSuppressionV4')",
    "npu_batch_nms": "op-plugin docs/zh/custom_APIs/torch_npu/（beta）torch_npu-npu_batch_nms.md "
                     "(hiascend.com Pytorch apiref ptaoplist_000777); CANN ops-cv "
                     "objdetect/batch_multi_class_non_max_suppression README and prototype",
    "NpuFusedSGD": "op-plugin docs/zh/custom_APIs/torch_npu-optim/torch_npu-optim-NpuFusedSGD.md "
                   "(hiascend.com Pytorch apiref ptaoplist_001374) and "
                   "torch_npu-optim-NpuFusedOptimizerBase.md",
}

#: Products each API's page lists as supported (产品支持情况), by the keys those pages use:
#: ``910`` Atlas training series, ``910b`` Atlas A2 training series, ``A3`` Atlas A3
#: training series, ``310p`` Atlas inference series, ``950`` Ascend 950.
PRODUCTS = {"910": "Atlas training series (Ascend 910)",
            "910b": "Atlas A2 training series (Ascend 910B)",
            "A3": "Atlas A3 training series",
            "310p": "Atlas inference series (Ascend 310P)",
            "950": "Ascend 950"}
SUPPORTED = {"npu_one_hot": {"A3", "910b", "310p", "910"},
             "npu_nms_v4": {"A3", "910b", "310p", "910"},
             "npu_batch_nms": {"910", "310p"},
             "NpuFusedSGD": {"950", "A3", "910b", "910"}}

LIMITS = """\
The simulator proves: that each NPU branch calls the torch_npu API with the documented
signature and argument order, dtypes and shapes; that it handles the documented
outputs (dtypes, padding, valid counts) correctly; that its control flow runs; and
that it respects the documented restrictions (e.g. NpuFusedSGD's refusal of
zero_grad(set_to_none=True) and its rule that parameters and, once fused, gradients
are never re-allocated). Results are compared with the CPU branch within each patch's
tolerance.
Only real Ascend hardware can show: kernel numerics (fp16 accumulation, the NPU's IoU
rounding, the order of equal scores, which the documentation leaves unspecified),
device placement and host/device transfers, dynamic-shape recompiles, private formats
(NC1HWC0), speed, and anything CANN versions differ in beyond their documentation."""

_lock = threading.RLock()
_depth = 0
_installed: dict | None = None
_product: str | None = None


class RealTorchNpuPresent(RuntimeError):
    """A real torch_npu is importable here: the simulator never shadows it."""


def _check_product(api: str) -> None:
    """Raise where the simulated product is not among those the API's page lists."""
    if _product is not None and _product not in SUPPORTED[api]:
        listed = ", ".join(PRODUCTS[p] for p in sorted(SUPPORTED[api]))
        raise RuntimeError(f"torch_npu.{api} is not supported on {PRODUCTS[_product]} (simulated): "
                           f"its documentation lists {listed}")


# ---------------------------------------------------------------------------------------
# the device stand-in


class SimulatedNpuDevice:
    """What patches receive as their NPU device: ``.type == "npu"``, ``.index``.

    :func:`detcore.patching.is_npu` reads only ``.type``; ``torch.device("npu")`` cannot
    be built without the real backend (torch_npu renames PrivateUse1 to ``npu``, once per
    process and irreversibly, which a test must not do).
    """

    type = "npu"

    def __init__(self, index: int = 0):
        self.index = int(index)

    def __repr__(self) -> str:
        return f"SimulatedNpuDevice('npu:{self.index}')"

    def __str__(self) -> str:
        return f"npu:{self.index}"

    def __eq__(self, other) -> bool:
        return getattr(other, "type", None) == "npu" and getattr(other, "index", 0) == self.index

    def __hash__(self) -> int:
        return hash(("npu", self.index))


def npu_device(index: int = 0) -> SimulatedNpuDevice:
    return SimulatedNpuDevice(index)


# ---------------------------------------------------------------------------------------
# argument checks shared by the ops


def _require_tensor(name, value, op):
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"torch_npu.{op}: {name} must be a Tensor (documented), "
                        f"got {type(value).__name__}")
    return value


def _require_float_tensor(name, value, op, dims=None):
    import torch

    _require_tensor(name, value, op)
    if value.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"torch_npu.{op}: {name} must be float16 or float32, got {value.dtype}")
    if dims is not None and value.dim() != dims:
        raise ValueError(f"torch_npu.{op}: {name} must be {dims}-D, got shape {tuple(value.shape)}")
    return value


def _require_int(name, value, op, low=None, high=None):
    import torch

    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise TypeError(f"torch_npu.{op}: {name} must be an integer scalar, got a "
                            f"{value.dtype} tensor of shape {tuple(value.shape)}")
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"torch_npu.{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"torch_npu.{op}: {name}={value} is outside the documented range "
                         f"[{low}, {high if high is not None else 'inf'}]")
    return value


def _require_number(name, value, op):
    import torch

    if isinstance(value, torch.Tensor) or isinstance(value, bool) \
            or not isinstance(value, (int, float)):
        raise TypeError(f"torch_npu.{op}: {name} must be a Python float (documented as a "
                        f"float attribute), got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"torch_npu.{op}: {name} must be finite, got {value}")
    return float(value)


def _iou_matrix(a, b, eps: float = 0.0):
    """IoU of (N, 4) against (M, 4) boxes given as any two diagonal corners; float32."""
    import torch

    a, b = a.float(), b.float()
    a_lo, a_hi = torch.minimum(a[:, :2], a[:, 2:]), torch.maximum(a[:, :2], a[:, 2:])
    b_lo, b_hi = torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])
    area_a = (a_hi - a_lo).prod(dim=1)
    area_b = (b_hi - b_lo).prod(dim=1)
    lo = torch.maximum(a_lo[:, None], b_lo[None])
    hi = torch.minimum(a_hi[:, None], b_hi[None])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None] - inter
    if eps:
        return inter / union.clamp(min=eps)
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                      torch.zeros_like(union))
    return torch.where((area_a[:, None] > 0) & (area_b[None] > 0), iou, torch.zeros_like(iou))


def _greedy_nms(boxes, scores, candidates, iou_threshold: float, limit: int, eps: float = 0.0):
    """Indices kept by greedy NMS among ``candidates`` (bool mask), best score first.

    Equal scores are taken lowest index first (a stable sort); Ascend leaves their order
    unspecified, so only real hardware shows its order for ties.
    """
    import torch

    order = torch.nonzero(candidates, as_tuple=True)[0]
    order = order[torch.sort(scores[order].float(), descending=True, stable=True).indices]
    keep = []
    alive = torch.ones(len(order), dtype=torch.bool)
    pos = 0
    while len(keep) < limit:
        rest = torch.nonzero(alive[pos:], as_tuple=True)[0]
        if len(rest) == 0:
            break
        pos += int(rest[0])
        best = order[pos]
        keep.append(int(best))
        alive[pos] = False
        later = order[pos + 1:]
        if len(later):
            iou = _iou_matrix(boxes[best][None], boxes[later], eps)[0]
            alive[pos + 1:] &= ~(iou > iou_threshold)
    return torch.tensor(keep, dtype=torch.int64)


# ---------------------------------------------------------------------------------------
# the simulated ops


def npu_one_hot(input, num_classes: int = -1, depth: int = 1, on_value=1, off_value=0):
    """``torch_npu.npu_one_hot(input, num_classes=-1, depth=1, on_value=1, off_value=0)``.

    Follows op-plugin's ``（beta）torch_npu-npu_one_hot.md`` (hiascend.com ``ptaoplist_000811``):

    * ``input``: class indices of any shape; the documentation asks for an integer
      index tensor, so floating, bool and complex inputs are rejected (``TypeError``).
      Indices are used as int32, as the kernel casts them.
    * ``num_classes`` is **the axis** where the one-hot dimension is inserted (-1 appends
      it after the last dimension), not the class count; ``depth`` is the class count
      (``-1``: inferred as ``max(input) + 1``). An axis outside ``[-1, input.dim()]`` or
      a depth below 1 (other than -1) is rejected (``ValueError``).
    * Output: ``on_value`` where the index equals the position, ``off_value`` elsewhere;
      an index outside ``[0, depth)`` gives a row of ``off_value`` only. float32, as in
      the documented example (``npu_one_hot(IntTensor([5, 3, 2, 1]), depth=5)`` gives a
      first row of zeros because 5 is out of range).
    """
    import torch

    op = "npu_one_hot"
    _check_product(op)
    _require_tensor("input", input, op)
    if input.dtype.is_floating_point or input.dtype.is_complex or input.dtype == torch.bool:
        raise TypeError(f"torch_npu.{op}: input must be an integer index tensor "
                        f"(documented), got {input.dtype}")
    axis = _require_int("num_classes (the axis)", num_classes, op)
    if not -1 <= axis <= input.dim():
        raise ValueError(f"torch_npu.{op}: num_classes is the axis to insert the one-hot "
                         f"dimension at; {axis} is outside [-1, {input.dim()}] for a "
                         f"{input.dim()}-D input")
    depth = _require_int("depth", depth, op)
    index = input.to(torch.int32).to(torch.int64)
    if depth == -1:
        if index.numel() == 0:
            raise ValueError(f"torch_npu.{op}: depth=-1 needs a non-empty input to infer it")
        depth = int(index.max()) + 1
    if depth < 1:
        raise ValueError(f"torch_npu.{op}: depth must be >= 1 (or -1 to infer it), got {depth}")
    for name, value in (("on_value", on_value), ("off_value", off_value)):
        if isinstance(value, torch.Tensor) or not isinstance(value, (int, float, bool)):
            raise TypeError(f"torch_npu.{op}: {name} must be a Scalar, got {type(value).__name__}")
    hit = index.unsqueeze(-1) == torch.arange(depth, dtype=torch.int64)
    out = torch.where(hit, torch.tensor(float(on_value)), torch.tensor(float(off_value)))
    out = out.to(torch.float32)
    if axis != -1 and axis != input.dim():
        out = out.movedim(-1, axis)
    return out


def npu_nms_v4(boxes, scores, max_output_size, iou_threshold, scores_threshold,
               pad_to_max_output_size: bool = False):
    """``torch_npu.npu_nms_v4(boxes, scores, max_output_size, iou_threshold, scores_threshold,
    pad_to_max_output_size=False) -> (selected_indices, valid_outputs)``.

    Follows op-plugin's ``（beta）torch_npu-npu_nms_v4.md`` (hiascend.com ``ptaoplist_000809``)
    and CANN's ``NonMaxSuppressionV4`` prototype, which is "compatible with tensorflow
    NonMaxSuppressionV4" (whose reference gives the semantics):

    * ``boxes``: 2-D ``[num_boxes, 4]``; ``scores``: 1-D ``[num_boxes]``; both float16 or
      float32 (the prototype's ``TensorType``); anything else is rejected.
    * ``max_output_size``: a Scalar (int). ``iou_threshold`` and ``scores_threshold``:
      **0-D float tensors** (a Python float there is a ``TypeError``, as in torch_npu's
      schema, which also catches swapped arguments).
    * Greedy selection in descending score order; a box whose IoU with a selected box
      exceeds ``iou_threshold`` is pruned; boxes whose score is less than
      ``scores_threshold`` are removed. Boxes may be given as any two diagonal corners
      (TensorFlow's contract), so xyxy works as well as yxyx.
    * ``selected_indices``: int32 ``[M]``, ``M <= max_output_size``; with
      ``pad_to_max_output_size=True`` padded to ``max_output_size`` (with zeros, as
      TensorFlow pads). ``valid_outputs``: 0-D int32, the number of valid entries, which
      come first.
    """
    import torch

    op = "npu_nms_v4"
    _check_product(op)
    _require_float_tensor("boxes", boxes, op, dims=2)
    _require_float_tensor("scores", scores, op, dims=1)
    if boxes.shape[1] != 4 or boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"torch_npu.{op}: boxes must be [num_boxes, 4] and scores [num_boxes]; "
                         f"got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    limit = _require_int("max_output_size", max_output_size, op, low=0)
    thresholds = []
    for name, value in (("iou_threshold", iou_threshold), ("scores_threshold", scores_threshold)):
        _require_float_tensor(name, value, op)
        if value.dim() != 0:
            raise ValueError(f"torch_npu.{op}: {name} must be a 0-D tensor, got shape "
                             f"{tuple(value.shape)}")
        thresholds.append(float(value))
    if not isinstance(pad_to_max_output_size, bool):
        raise TypeError(f"torch_npu.{op}: pad_to_max_output_size must be a bool")
    iou_thr, score_thr = thresholds
    keep = _greedy_nms(boxes, scores, scores.float() >= score_thr, iou_thr, limit)
    valid = torch.tensor(len(keep), dtype=torch.int32)
    selected = keep.to(torch.int32)
    if pad_to_max_output_size:
        selected = torch.cat([selected, selected.new_zeros(limit - len(keep))])
    return selected, valid


def npu_batch_nms(self, scores, score_threshold, iou_threshold, max_size_per_class,
                  max_total_size, change_coordinate_frame: bool = False,
                  transpose_box: bool = False):
    """``torch_npu.npu_batch_nms(self, scores, score_threshold, iou_threshold,
    max_size_per_class, max_total_size, change_coordinate_frame=False, transpose_box=False)
    -> (nmsed_boxes, nmsed_scores, nmsed_classes, nmsed_num)``.

    Follows op-plugin's ``（beta）torch_npu-npu_batch_nms.md`` (hiascend.com
    ``ptaoplist_000777``) and CANN ops-cv's ``BatchMultiClassNonMaxSuppression`` README and
    prototype:

    * ``self`` (boxes): 4-D ``[batch, num_anchors, q, 4]`` with ``q`` 1 or ``num_classes``
      (``[batch, q, 4, num_anchors]`` with ``transpose_box=True``); ``scores``: 3-D
      ``[batch, num_anchors, num_classes]`` **of the same dtype as the boxes**. The torch_npu
      page lists float16 for both while its own example passes float32 and the CANN
      prototype takes float16 or float32: float16 and float32 are accepted, any other
      dtype or a dtype mismatch is rejected.
    * ``score_threshold``, ``iou_threshold``: Python floats (float attributes; a tensor is a
      ``TypeError``); ``iou_threshold`` in ``[0, 1]``. ``max_size_per_class`` and
      ``max_total_size``: ints in ``[1, 1000]`` (the range CANN's README states).
    * Per image and class, candidates with ``score > score_threshold`` (strictly), greedy
      NMS pruning boxes whose IoU with a kept one is strictly above ``iou_threshold``
      (IoU denominator at least 1e-12), at most ``max_size_per_class`` per class; then the
      best ``max_total_size`` over all classes by score. Boxes pass through unchanged
      (IoU does not care whether they are yxyx, as documented, or xyxy).
    * Outputs: ``nmsed_boxes [batch, max_total_size, 4]``, ``nmsed_scores`` and
      ``nmsed_classes [batch, max_total_size]`` (class index as a float), all in the
      boxes' dtype and padded with zeros; ``nmsed_num [batch]`` int32, the valid count.
    * Empty inputs (a zero batch, anchor or class count) are rejected: the README requires
      them positive.
    * ``change_coordinate_frame=True`` needs a clip window, which this API does not take:
      not simulated (``NotImplementedError``).
    """
    import torch

    op = "npu_batch_nms"
    _check_product(op)
    boxes = _require_float_tensor("self (boxes)", self, op, dims=4)
    _require_float_tensor("scores", scores, op, dims=3)
    if scores.dtype != boxes.dtype:
        raise TypeError(f"torch_npu.{op}: scores must have the boxes' dtype ({boxes.dtype}), "
                        f"got {scores.dtype}")
    if not isinstance(transpose_box, bool) or not isinstance(change_coordinate_frame, bool):
        raise TypeError(f"torch_npu.{op}: change_coordinate_frame and transpose_box are bools")
    if transpose_box:
        boxes = boxes.permute(0, 3, 1, 2)  # [B, q, 4, N] -> [B, N, q, 4]
    batch, anchors, q, four = boxes.shape
    if four != 4 or scores.shape[0] != batch or scores.shape[1] != anchors \
            or q not in (1, scores.shape[2]):
        raise ValueError(f"torch_npu.{op}: boxes must be [batch, num_anchors, q, 4] (q = 1 or "
                         f"num_classes) and scores [batch, num_anchors, num_classes]; got "
                         f"{tuple(self.shape)} and {tuple(scores.shape)}")
    if min(batch, anchors, scores.shape[2]) <= 0:
        raise ValueError(f"torch_npu.{op}: batch, num_anchors and num_classes must be positive "
                         f"(documented); got boxes {tuple(self.shape)}, scores {tuple(scores.shape)}")
    score_thr = _require_number("score_threshold", score_threshold, op)
    iou_thr = _require_number("iou_threshold", iou_threshold, op)
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"torch_npu.{op}: iou_threshold must be in [0, 1], got {iou_thr}")
    per_class = _require_int("max_size_per_class", max_size_per_class, op, low=1, high=1000)
    total = _require_int("max_total_size", max_total_size, op, low=1, high=1000)
    if change_coordinate_frame:
        raise NotImplementedError(f"torch_npu.{op}: change_coordinate_frame=True needs a clip "
                                  f"window; not simulated")
    classes = scores.shape[2]
    out_boxes = boxes.new_zeros((batch, total, 4))
    out_scores = scores.new_zeros((batch, total))
    out_classes = scores.new_zeros((batch, total))
    out_num = torch.zeros(batch, dtype=torch.int32)
    for b in range(batch):
        rows = []  # (score, class, anchor)
        for c in range(classes):
            cand_boxes = boxes[b, :, 0 if q == 1 else c]
            cand_scores = scores[b, :, c]
            keep = _greedy_nms(cand_boxes, cand_scores, cand_scores.float() > score_thr, iou_thr,
                               per_class, eps=1e-12)
            rows += [(float(cand_scores[i]), c, int(i)) for i in keep]
        rows.sort(key=lambda r: -r[0])  # stable: equal scores keep class, then kept order
        rows = rows[:total]
        for slot, (_, c, i) in enumerate(rows):
            out_boxes[b, slot] = boxes[b, i, 0 if q == 1 else c]
            out_scores[b, slot] = scores[b, i, c]
            out_classes[b, slot] = c
        out_num[b] = len(rows)
    return out_boxes, out_scores, out_classes, out_num


def _make_fused_sgd():
    import torch
    from torch.optim.optimizer import Optimizer, required

    class NpuFusedSGD(Optimizer):
        """``torch_npu.optim.NpuFusedSGD(params, lr, momentum=0, dampening=0, weight_decay=0,
        nesterov=False)``: SGD compatible with ``torch.optim.SGD``, fused on the NPU.

        Follows op-plugin's ``torch_npu-optim-NpuFusedSGD.md`` (hiascend.com
        ``ptaoplist_001374``) and ``torch_npu-optim-NpuFusedOptimizerBase.md``:

        * ``ValueError`` when ``lr`` is missing or negative, ``momentum`` or
          ``weight_decay`` is negative, or ``nesterov`` without a positive momentum and
          zero dampening. The update is ``torch.optim.SGD``'s ("core functionality
          compatible with torch.optim.SGD").
        * Restriction (约束说明): the parameter objects must never be re-allocated while
          the optimizer is in use (``.cpu()`` on the model, pointing a parameter at a new
          tensor, setting it to None); in-place updates and reads are fine. Real hardware
          gives "unpredictable results"; the simulator raises ``RuntimeError`` at the next
          ``step()``/``zero_grad()`` when a parameter's storage changed.
        * The fusion (张量融合) happens at the first ``step()`` (or a ``zero_grad()`` after
          a backward): the gradients present then are packed into one buffer per dtype
          and used from then on. The base class (whose page says it implements zero_grad;
          the behaviour below is in torch_npu's ``torch_npu/optim/npu_fused_optim_base.py``,
          not on the pages) therefore refuses ``zero_grad(set_to_none=True)`` with
          ``ValueError`` (its default is ``set_to_none=False``), parameters must be float32
          or float16 (``TypeError``),
          a gradient that is later replaced by a new tensor (``set_to_none``, DDP's
          ``gradient_as_bucket_view=True`` re-pointing it) is no longer the one stepped,
          and a parameter without a gradient at that moment is never updated. The
          simulator raises ``RuntimeError`` in the last two cases instead of silently
          not training.
        """

        def __init__(self, params, lr=required, momentum=0.0, dampening=0.0, weight_decay=0.0,
                     nesterov=False):
            _check_product("NpuFusedSGD")
            if lr is required or lr is None or lr < 0.0:
                raise ValueError(f"Invalid learning rate: {lr}")
            if momentum < 0.0:
                raise ValueError(f"Invalid momentum value: {momentum}")
            if weight_decay < 0.0:
                raise ValueError(f"Invalid weight_decay value: {weight_decay}")
            if nesterov and (momentum <= 0.0 or not math.isclose(dampening, 0.0, abs_tol=1e-15)):
                raise ValueError("Nesterov momentum requires a momentum and zero dampening")
            super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                          weight_decay=weight_decay, nesterov=nesterov))
            self._param_ptrs = {p: p.data_ptr() for g in self.param_groups for p in g["params"]}
            self._fused_grads = None  # param -> grad data_ptr, from the fusion on

        def _params(self):
            return [p for group in self.param_groups for p in group["params"]]

        def _check_params(self):
            for i, p in enumerate(self._params()):
                if p.data_ptr() != self._param_ptrs.get(p, p.data_ptr()):
                    raise RuntimeError(
                        f"NpuFusedSGD (simulated): parameter {i} {tuple(p.shape)} was "
                        f"re-allocated after the optimizer was created (.cpu()/.to(), "
                        f"p.data = ...); torch_npu documents that this gives unpredictable "
                        f"results: build the optimizer after moving the model")

        def _maybe_fuse(self):
            if self._fused_grads is not None:
                return
            with_grad = [p for p in self._params() if p.grad is not None]
            if not with_grad:
                return
            for p in with_grad:
                if p.dtype not in (torch.float32, torch.float16):
                    raise TypeError("Fused optimizer's parameters must be either float32 or "
                                    f"float16, but received {p.dtype}")
            self._fused_grads = {p: p.grad.data_ptr() for p in with_grad}

        def _check_grads(self):
            if self._fused_grads is None:
                return
            for i, p in enumerate(self._params()):
                if p in self._fused_grads:
                    if p.grad is None or p.grad.data_ptr() != self._fused_grads[p]:
                        raise RuntimeError(
                            f"NpuFusedSGD (simulated): the gradient of parameter {i} "
                            f"{tuple(p.shape)} was replaced after the optimizer fused the "
                            f"gradients at its first step (zero_grad(set_to_none=True), "
                            f"p.grad = ..., DDP gradient_as_bucket_view=True); on the NPU the "
                            f"fused buffer would be stepped with stale gradients")
                elif p.grad is not None:
                    raise RuntimeError(
                        f"NpuFusedSGD (simulated): parameter {i} {tuple(p.shape)} had no "
                        f"gradient at the optimizer's first step, so it is not in the fused "
                        f"buffers and the NPU would never update it")

        @torch.no_grad()
        def zero_grad(self, set_to_none: bool = False):
            if set_to_none:
                raise ValueError("set_to_none is not supported in fused optimizers")
            self._check_params()
            self._maybe_fuse()
            self._check_grads()
            for p in self._params():
                if p.grad is not None:
                    p.grad.zero_()

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            self._check_params()
            self._maybe_fuse()
            self._check_grads()
            if self._fused_grads is None:
                return loss
            for group in self.param_groups:
                lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
                decay, nesterov = group["weight_decay"], group["nesterov"]
                for p in group["params"]:
                    if p not in self._fused_grads:
                        continue
                    d_p = p.grad if decay == 0 else p.grad.add(p, alpha=decay)
                    if momentum != 0:
                        state = self.state[p]
                        buf = state.get("momentum_buffer")
                        if buf is None:
                            buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                        else:
                            buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                        d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
                    p.add_(d_p, alpha=-lr)
            return loss

    NpuFusedSGD.__module__ = "torch_npu.optim"
    return NpuFusedSGD


_FUSED_SGD = None


def __getattr__(name):  # PEP 562: ``npu_sim.NpuFusedSGD`` without importing torch at load
    global _FUSED_SGD
    if name == "NpuFusedSGD":
        if _FUSED_SGD is None:
            _FUSED_SGD = _make_fused_sgd()
        return _FUSED_SGD
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------
# the fake module and its installation


class _SimulatedModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(
            f"{self.__name__}.{name} is not simulated by detcore.testing.npu_sim; add it there, "
            f"implemented from Ascend's documentation of the API")


def _module(name: str) -> types.ModuleType:
    mod = _SimulatedModule(name, f"CPU simulation of {name} (detcore.testing.npu_sim)")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    mod.__file__ = __file__
    mod.__detcore_simulated__ = True
    return mod


def _build() -> dict:
    root = _module("torch_npu")
    root.__path__ = []  # a package, so that ``import torch_npu.optim`` resolves
    root.__version__ = SIMULATED_VERSION
    root.npu_one_hot = npu_one_hot
    root.npu_nms_v4 = npu_nms_v4
    root.npu_batch_nms = npu_batch_nms
    optim = _module("torch_npu.optim")
    optim.NpuFusedSGD = __getattr__("NpuFusedSGD")
    root.optim = optim
    return {"torch_npu": root, "torch_npu.optim": optim}


def is_simulated(module) -> bool:
    return bool(getattr(module, "__detcore_simulated__", False))


def real_torch_npu_importable() -> bool:
    """Is a real (not simulated) torch_npu importable in this interpreter?"""
    loaded = sys.modules.get("torch_npu")
    if loaded is not None:
        return not is_simulated(loaded)
    try:
        spec = importlib.util.find_spec("torch_npu")
    except (ImportError, ValueError):
        return False
    # detcore.testing.npu_device's import hook (DETCORE_SIMULATE_NPU) finds the simulator
    return spec is not None and not getattr(spec.loader, "detcore_simulated", False)


def active() -> bool:
    return _depth > 0


def install(product: str | None = None):
    """Put the simulated torch_npu into ``sys.modules`` (reentrant; pair with :func:`uninstall`).

    ``product`` (a key of :data:`PRODUCTS`): the simulated ops then also refuse to run
    where their page does not list that product (``None``: no product check).
    """
    global _depth, _installed, _product
    if product is not None and product not in PRODUCTS:
        raise ValueError(f"product {product!r}: use one of {', '.join(PRODUCTS)}")
    with _lock:
        if _depth == 0:
            if real_torch_npu_importable():
                raise RealTorchNpuPresent(
                    "detcore.testing.npu_sim: a real torch_npu is importable here; the simulator "
                    "never shadows it (unset DETCORE_SIMULATE_NPU and run on the NPU)")
            _installed = _build()
            sys.modules.update(_installed)
            _product = product
        elif product != _product:
            raise ValueError(f"the simulator is already active for product {_product!r}, "
                             f"not {product!r}")
        _depth += 1
        return _installed["torch_npu"]


def uninstall() -> None:
    global _depth, _installed, _product
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth == 0:
            for name, mod in _installed.items():
                if sys.modules.get(name) is mod:
                    del sys.modules[name]
            _installed = None
            _product = None


@contextlib.contextmanager
def simulated_torch_npu(product: str | None = None):
    """``with simulated_torch_npu() as torch_npu:``: the simulator, active for the block.

    ``product``: simulate that Ascend product's documented API support (see :func:`install`).
    """
    module = install(product)
    try:
        yield module
    finally:
        uninstall()


def from_env(environ=None) -> tuple[bool, str | None]:
    """``DETCORE_SIMULATE_NPU``: ``(on, product)``.

    ``1`` turns the simulator on; a product key (``910``, ``910b``, ``A3``, ``310p``,
    ``950``) turns it on for that product's documented API support; unset, empty or ``0``
    leaves it off. Anything else is an error, so that it is never on by accident.
    """
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if value in ("", "0"):
        return False, None
    if value == "1":
        return True, None
    if value in PRODUCTS:
        return True, value
    raise ValueError(f"{ENV}={value!r}: use 1 (simulate torch_npu on CPU), a product "
                     f"({', '.join(PRODUCTS)}), or 0/unset")


def requested(environ=None) -> bool:
    return from_env(environ)[0]


# ---------------------------------------------------------------------------------------
# pytest: the ``simulated_npu`` fixture and DETCORE_SIMULATE_NPU=1 for a whole session

try:
    import pytest
except ImportError:  # pragma: no cover - detcore.testing is used under pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def simulated_npu():
        """The simulated ``torch_npu`` module, in ``sys.modules`` for this test only.

        Skips the test where a real torch_npu is installed (run it on the NPU instead).
        """
        if real_torch_npu_importable():
            pytest.skip("a real torch_npu is installed: the simulator never shadows it")
        with simulated_torch_npu() as module:
            yield module

    #: The simulated-NPU lane (dev/test.sh: ``pytest -m npu_sim`` under coverage).
    MARKER = "npu_sim"

    def pytest_configure(config):
        config.addinivalue_line(
            "markers", f"{MARKER}: the simulated-NPU lane: NPU code paths, under detcore.testing's "
                       f"torch_npu simulator or without torch_npu (tests using the simulated_npu "
                       f"fixture, and tests with npu as a word of their name, get it)")
        try:
            wanted, product = from_env()
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        if wanted:
            try:
                install(product)
            except RealTorchNpuPresent as exc:
                raise pytest.UsageError(str(exc)) from None
            config._detcore_npu_sim = True

    def pytest_collection_modifyitems(config, items):
        import re

        for item in items:
            name = getattr(item, "originalname", None) or item.name
            if "simulated_npu" in getattr(item, "fixturenames", ()) \
                    or re.search(r"(^|_)npu($|_)", name):
                item.add_marker(MARKER)

    def pytest_unconfigure(config):
        if getattr(config, "_detcore_npu_sim", False):
            uninstall()
            config._detcore_npu_sim = False

    def pytest_report_header(config):
        if getattr(config, "_detcore_npu_sim", False):
            where = f", {PRODUCTS[_product]}" if _product else ""
            return f"detcore: torch_npu simulated on CPU{where} (detcore.testing.npu_sim, {ENV})"
        return None
