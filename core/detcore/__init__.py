"""detcore: one core and one CLI for object-detection models on NPU, GPU and CPU.

Importing this package must stay cheap (no torch): ``detcore --help`` and
``detcore plugins`` are budgeted at 0.5 s.
"""
import os

import pluggy

# torch auto-loads installed device backends on import; torch_npu on a host without
# CANN then makes `import torch` itself fail. detcore imports torch_npu explicitly
# (detcore.devices) when an NPU is wanted, so turn the auto-load off.
os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")

__version__ = "0.1.0"

#: Version of the hook contract. A plugin declares the version it was written
#: against as ``DETCORE_API_VERSION`` in its entry-point module; a different
#: major version is listed as incompatible instead of being loaded.
API_VERSION = 1

#: Version of the ``result.json`` schema (see docs/result-schema.md).
RESULT_SCHEMA_VERSION = 1

hookimpl = pluggy.HookimplMarker("detcore")

# Test-only switch (docs/writing-a-plugin.md, "Testing the NPU branch without an NPU"):
# DETCORE_SIMULATE_NPU=1 makes `import torch_npu` load detcore.testing's CPU simulator of
# torch_npu and of an NPU device, in this process and in those it starts (CLI runs, torchrun
# workers). Unset or 0, nothing here runs; a real torch_npu is never shadowed.
if os.environ.get("DETCORE_SIMULATE_NPU", "").strip() not in ("", "0"):
    from .testing.npu_device import install_import_hook

    install_import_hook()

__all__ = ["API_VERSION", "Detections", "Model", "RESULT_SCHEMA_VERSION", "__version__",
           "hookimpl"]


def __getattr__(name: str):
    """``detcore.Model`` and ``detcore.Detections`` (the Python API, detcore.api), imported on
    first use: they need torch, and ``import detcore`` must not. By name through importlib: every
    core module imports this package (``hookimpl``), and none of them depends on the API (the
    import contracts check that)."""
    if name in ("Model", "Detections"):
        import importlib

        return getattr(importlib.import_module("detcore.api"), name)
    raise AttributeError(f"module 'detcore' has no attribute {name!r}")
