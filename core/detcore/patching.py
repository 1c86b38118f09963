"""Reversible runtime patches: how plugins vendor their changes to upstream code.

A :class:`Patch` replaces attributes (functions, methods, classes) of upstream
modules and remembers the originals, so ``revert()`` restores them exactly.
Subclass it, set ``name``, write a docstring naming the NPU limitation it works
around and the tolerance it is equivalent within, and implement ``targets()``.
"""
from __future__ import annotations

import importlib
from typing import Any, Iterable

from .errors import MissingDependency


class Patch:
    name = "unnamed"
    #: Largest absolute difference the equivalence test allows against the unpatched code.
    tolerance = 0.0

    def __init__(self, device=None):
        self.device = device
        self._saved: list[tuple[Any, str, Any]] = []

    def targets(self) -> list[tuple[Any, str, Any]]:
        """``[(module_or_class_or_dotted_path, attribute, replacement), ...]``."""
        raise NotImplementedError

    @property
    def applied(self) -> bool:
        return bool(self._saved)

    def apply(self) -> "Patch":
        if self.applied:
            return self
        for owner, attr, new in self.targets():
            owner = importlib.import_module(owner) if isinstance(owner, str) else owner
            self._saved.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
            setattr(owner, attr, new)
        return self

    def revert(self) -> None:
        for owner, attr, old in reversed(self._saved):
            if old is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)
        self._saved.clear()

    def __enter__(self):
        return self.apply()

    def __exit__(self, *exc):
        self.revert()

    def __repr__(self) -> str:
        return f"<Patch {self.name} {'applied' if self.applied else 'not applied'}>"


_MISSING = object()


def apply_patches(patches: Iterable[Patch]) -> list[Patch]:
    """Apply ``patches`` in order; if one fails, revert those already applied and re-raise."""
    applied: list[Patch] = []
    try:
        for patch in patches:
            applied.append(patch.apply())
    except BaseException:
        for patch in reversed(applied):
            patch.revert()
        raise
    return applied


def is_npu(device) -> bool:
    return device is not None and getattr(device, "type", str(device)) == "npu"


def require_torch_npu(patch_name: str):
    """Import torch_npu for a patch's NPU branch, or fail with one line that names it."""
    try:
        import torch_npu
    except ImportError:
        raise MissingDependency(
            f"patch {patch_name}: the NPU version needs torch_npu, which is not installed "
            f"(pip install 'detcore[npu]' on a host with CANN); on CPU/GPU the portable "
            f"version is used instead") from None
    return torch_npu
