"""Static TF-"SAME" padding for timm's ``Conv2dSame``, ``MaxPool2dSame`` and ``AvgPool2dSame``."""
from __future__ import annotations

import warnings

from detcore.patching import Patch


def _static_pad(module, x, kernel_size, stride, dilation):
    """The (left, right, top, bottom) SAME padding for ``x``'s size, as Python ints.

    Computed once per input size (and kernel/stride/dilation) and cached on the module: for a fixed input size
    (detcore always feeds ``data.input_size``) it is a constant, so the graph carries
    a ``Pad`` with literal amounts instead of a chain of Shape/Div/Ceil ops.
    """
    import torch
    from timm.layers.padding import pad_same_arg

    if torch.jit.is_tracing():  # sizes are traced tensors: take their values, as constants
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            size = (int(x.shape[-2]), int(x.shape[-1]))
    else:
        size = (int(x.shape[-2]), int(x.shape[-1]))
    # keyed by the layer's hyper-parameters too: a cached pad never outlives a changed stride
    key = (size, tuple(int(k) for k in kernel_size), tuple(int(s) for s in stride),
           tuple(int(d) for d in dilation))
    cache = module.__dict__.setdefault("_detcore_same_pad", {})
    pad = cache.get(key)
    if pad is None:
        pad = tuple(int(v) for v in pad_same_arg(size, *(list(k) for k in key[1:])))
        cache[key] = pad
    return pad


def conv2d_same_forward(self, x):
    import torch.nn.functional as F

    pad = _static_pad(self, x, self.kernel_size, self.stride, self.dilation)
    if any(pad):
        x = F.pad(x, pad)
    return F.conv2d(x, self.weight, self.bias, self.stride, (0, 0), self.dilation, self.groups)


def max_pool2d_same_forward(self, x):
    import torch.nn.functional as F

    pad = _static_pad(self, x, self.kernel_size, self.stride, self.dilation)
    if any(pad):
        x = F.pad(x, pad, value=-float("inf"))
    return F.max_pool2d(x, self.kernel_size, self.stride, (0, 0), self.dilation, self.ceil_mode)


def avg_pool2d_same_forward(self, x):
    import torch.nn.functional as F

    pad = _static_pad(self, x, self.kernel_size, self.stride, (1, 1))
    if any(pad):
        x = F.pad(x, pad)
    return F.avg_pool2d(x, self.kernel_size, self.stride, (0, 0), self.ceil_mode,
                        self.count_include_pad)


class StaticSamePadPatch(Patch):
    """Compute timm's TF-"SAME" pad amounts once, as constants, instead of per call.

    NPU limitation: timm's ``pad_same`` derives the pad from the input's runtime
    shape on every call (``x.size()`` -> ceil/max arithmetic -> ``F.pad``), which
    lowers to the dynamic ``PadV3D`` operator that the Ascend NPU does not support
    (the reference replaced timm's ``conv2d_same.py``, ``pool2d_same.py`` and
    ``padding.py`` for this). Because detcore runs at a fixed ``data.input_size``,
    the amounts are constants: this patch computes them once per layer and input
    size with timm's own formula and pads with literal values (a static ``Pad``,
    also in ONNX). Replaces ``forward`` of ``Conv2dSame``, ``MaxPool2dSame`` and
    ``AvgPool2dSame`` in ``timm.layers``; used by EfficientDet's backbone stride-2
    convolutions and BiFPN max-pool downsampling. The same on every device.

    Tolerance: 0 (the same pad amounts and the same ops, so bit-identical outputs).
    """

    name = "static_same_pad"
    tolerance = 0.0

    def targets(self):
        import importlib

        # by path: ``timm.layers.conv2d_same`` the attribute is a function, not the module
        conv2d_same = importlib.import_module("timm.layers.conv2d_same")
        pool2d_same = importlib.import_module("timm.layers.pool2d_same")

        return [(conv2d_same.Conv2dSame, "forward", conv2d_same_forward),
                (pool2d_same.MaxPool2dSame, "forward", max_pool2d_same_forward),
                (pool2d_same.AvgPool2dSame, "forward", avg_pool2d_same_forward)]
