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

__all__ = ["API_VERSION", "RESULT_SCHEMA_VERSION", "__version__", "hookimpl"]
