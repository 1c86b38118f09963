"""Shared helpers for the NPU branches of the patches."""
from __future__ import annotations

from detcore.errors import MissingDependency


def is_npu(device) -> bool:
    return device is not None and getattr(device, "type", str(device)) == "npu"


def require_torch_npu(patch_name: str):
    """Import torch_npu for an NPU branch, or fail with a message that names it."""
    try:
        import torch_npu as module
    except ImportError:
        raise MissingDependency(
            f"patch {patch_name}: the NPU version needs torch_npu, which is not installed "
            f"(pip install 'detcore[npu]' on a host with CANN); on CPU/GPU the portable "
            f"version is used instead") from None
    return module
