"""Which devices mmcv's compiled ops were built for, asked of mmcv's extension itself.

mmcv 2.1.0 exposes no Python call that says whether its ops were built with NPU kernels:
``mmcv.utils.IS_NPU_AVAILABLE`` is mmengine's runtime check (torch_npu imports and an NPU is
visible), true with any mmcv build, and ``mmcv.ops.get_compiling_cuda_version()`` covers CUDA
only. The build is recorded in the extension, ``mmcv._ext``: each kernel is a C++ function
named ``<op>_<device>`` (``nms_cpu``, ``nms_npu`` from ``csrc/pytorch/npu/nms_npu.cpp``, ...)
that mmcv registers for its device at load time (``REGISTER_NPU_IMPL``), and only the kernels
of the devices it was built for (``FORCE_NPU=1``: npu, ``FORCE_CUDA=1``: cuda) are compiled in.
Their mangled names (``_Z7nms_npu...``) are in the extension's symbol table, which this module
reads without loading the extension.
"""
from __future__ import annotations

import importlib.util
import mmap
import re

DEVICES = ("cpu", "cuda", "npu", "mlu", "mps")
_MANGLED = re.compile(rb"_Z(\d{1,3})")
_KERNEL = re.compile(rb"([A-Za-z_][A-Za-z0-9_]*)_(" + "|".join(DEVICES).encode() + rb")")


def extension_path() -> str | None:
    """The file of ``mmcv._ext`` (mmcv's compiled ops), or None without one."""
    try:
        spec = importlib.util.find_spec("mmcv._ext")
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def kernels(path: str | None = None) -> dict[str, set[str]]:
    """``{device: {op, ...}}``: the ops the extension at ``path`` has a kernel for, per device
    (``{"cpu": {"nms", "roi_align_forward", ...}}`` for a CPU build)."""
    path = path or extension_path()
    found: dict[str, set[str]] = {}
    if path is None:
        return found
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for match in _MANGLED.finditer(data):
            size = int(match.group(1))
            name = _KERNEL.fullmatch(data[match.end():match.end() + size])
            if name:  # a length-prefixed (mangled) identifier <op>_<device>
                found.setdefault(name.group(2).decode(), set()).add(name.group(1).decode())
    return found


def npu_summary(path: str | None = None) -> tuple[bool, str]:
    """``(built with NPU kernels, detail)`` for ``detcore doctor``."""
    found = kernels(path)
    npu, cpu = found.get("npu", set()), found.get("cpu", set())
    if npu:
        return True, f"{len(npu)} NPU kernels ({', '.join(sorted(npu))})"
    return False, (f"no NPU kernels (not built with FORCE_NPU=1): its {len(cpu)} CPU kernels "
                   f"({_some(cpu)}) take CPU tensors only")


def _some(names: set[str], shown: int = 4) -> str:
    names = sorted(names, key=lambda n: (not n.startswith(("nms", "roi_align")), n))
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
