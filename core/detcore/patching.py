"""Reversible runtime patches: how plugins vendor their changes to upstream code.

A :class:`Patch` replaces attributes (functions, methods, classes) of upstream
modules and remembers the originals, so ``revert()`` restores them exactly.
Subclass it, set ``name``, write a docstring naming the NPU limitation it works
around and the tolerance it is equivalent within, and implement ``targets()``.

A patch also proves what it replaces: ``replaces`` names every attribute ``targets()``
sets, with a fingerprint (:func:`fingerprint`) of the upstream source there in the
version the plugin pins, and ``reproduces`` the upstream code the replacement re-implements
without replacing it. ``apply()`` compares them with the installed upstream first and
refuses, naming the target, when one differs (a pin bypassed, a local edit): a patch never
silently replaces code it was not written for. ``detcore patches`` lists all of this, and
:func:`detcore.testing.patch_checks.stale_fingerprints` tells a plugin's tests when the
pinned upstream changed.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import textwrap
import types
from typing import Any, Iterable

from .errors import MissingDependency, PluginError

#: How a fingerprint is written: the first 16 hex digits of a sha256 (64 bits: an edit is
#: never mistaken for the original; the literal stays readable in the plugin's code).
FINGERPRINT_DIGITS = 16


def normalised_source(source: str) -> str:
    """``source`` without what formatting alone changes: common indentation, trailing
    whitespace and blank lines (comments and docstrings stay: they are part of the version)."""
    lines = (line.rstrip() for line in textwrap.dedent(source).splitlines())
    return "\n".join(line for line in lines if line)


def source_of(obj) -> str | None:
    """The Python source of a function, method or class, or ``None`` when it has none.

    A ``torch.jit.script`` function is fingerprinted by the Python function it compiled
    (torch keeps it as ``_torchdynamo_inline``); static/class methods and properties by
    their function.
    """
    obj = getattr(obj, "_torchdynamo_inline", obj)
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    if not isinstance(obj, (type, types.FunctionType, types.MethodType)):
        return None
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return None


def fingerprint_source(source: str) -> str:
    return hashlib.sha256(normalised_source(source).encode()).hexdigest()[:FINGERPRINT_DIGITS]


def fingerprint(obj) -> str:
    """The fingerprint of ``obj``'s source (see :func:`normalised_source`)."""
    source = source_of(obj)
    if source is None:
        raise TypeError(f"{obj!r} has no Python source to fingerprint")
    return fingerprint_source(source)


def target_name(owner, attr: str) -> str:
    """``"module:Qual.name"`` for an attribute ``targets()`` sets on ``owner``."""
    if isinstance(owner, str):
        return f"{owner}:{attr}"
    if isinstance(owner, types.ModuleType):
        return f"{owner.__name__}:{attr}"
    return f"{owner.__module__}:{owner.__qualname__}.{attr}"


def resolve(target: str):
    """The object a ``"module:Qual.name"`` target names now (inherited attributes included);
    ``AttributeError``/``ImportError`` when it does not exist."""
    module, _, qualname = target.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_MISSING = object()


class Patch:
    name = "unnamed"
    #: Largest absolute difference the equivalence test allows against the unpatched code.
    tolerance = 0.0
    #: Every attribute ``targets()`` sets, ``"module:Qual.name"`` -> the :func:`fingerprint` of
    #: the upstream source it replaces in the version the plugin pins (an inherited method:
    #: the one it shadows), or ``None`` where no upstream code is replaced (a new attribute, or
    #: one of the plugin's own). ``None`` for the whole (the default): not declared, nothing is
    #: checked, and ``detcore patches`` says so.
    replaces: dict[str, str | None] | None = None
    #: Upstream code the replacement re-implements without replacing it (e.g. the per-image
    #: helper a replaced method used to call), ``"module:Qual.name"`` -> fingerprint: a change
    #: there stops ``apply()`` as well.
    reproduces: dict[str, str] = {}
    #: The ``torch_npu`` functions the NPU branch calls (``"npu_nms_v4"``, ``"optim.NpuFusedSGD"``);
    #: the conformance suite checks the declaration against the calls under the simulator.
    npu_ops: tuple[str, ...] = ()

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
        targets = [(importlib.import_module(owner) if isinstance(owner, str) else owner, attr, new)
                   for owner, attr, new in self.targets()]
        self.check(targets)
        for owner, attr, new in targets:
            self._saved.append((owner, attr, owner.__dict__.get(attr, _MISSING)))
            setattr(owner, attr, new)
        return self

    def check(self, targets=None) -> None:
        """Refuse, with one line naming the target, unless the installed upstream is the code
        this patch was written against (:meth:`upstream_status`); ``targets``: what
        ``targets()`` returned, checked against the declaration."""
        if self.replaces is None:
            return
        if targets is not None:
            self.check_declaration(targets)
        for row in self.upstream_status():
            where = f"patch {self.name}: {row['target']}"
            if row["status"] == "differs":
                raise MissingDependency(
                    f"{where} differs from the upstream source the patch was written for "
                    f"(fingerprint {row['installed']}, expected {row['expected']}); install the "
                    f"upstream version the plugin pins (detcore plugins lists the pins; "
                    f"detcore patches --diff shows the code), or run with --patches off")
            if row["status"] == "missing":
                raise MissingDependency(
                    f"{where} does not exist in the installed upstream, which the patch was "
                    f"written for; install the upstream version the plugin pins (detcore plugins "
                    f"lists the pins), or run with --patches off")
            if row["status"] == "undeclared":
                raise PluginError(
                    f"{where} exists upstream ({row['installed'] or 'no Python source'}) but the "
                    f"patch declares no fingerprint for it; set replaces[{row['target']!r}] to "
                    f"{row['installed']!r} (the plugin's authors should)")

    def check_declaration(self, targets) -> None:
        """``PluginError`` unless ``targets`` (what ``targets()`` returned) sets exactly the
        attributes ``replaces`` declares."""
        declared = set(self.replaces)
        names = {target_name(owner, attr) for owner, attr, _ in targets}
        if names != declared:
            raise PluginError(
                f"patch {self.name}: targets() sets {', '.join(sorted(names)) or 'nothing'} but "
                f"Patch.replaces declares {', '.join(sorted(declared)) or 'nothing'}; the two must "
                f"name the same attributes (the plugin's authors should fix the declaration)")

    def upstream_status(self) -> list[dict]:
        """The declared targets against the installed upstream (call it before ``apply()``:
        once applied, a replaced attribute is the replacement).

        One row per declared target: ``target``, ``role`` (``replaces`` or ``reproduces``),
        ``expected`` (the declared fingerprint), ``installed`` (the installed source's, or
        ``None``) and ``status``: ``matches``, ``differs``, ``missing`` (gone upstream),
        ``new`` (declared ``None`` and absent: nothing replaced), ``own`` (declared ``None``,
        the plugin's own attribute) or ``undeclared`` (declared ``None`` but upstream has it)."""
        rows = []
        own = type(self).__module__.split(".")[0]
        declared = [("replaces", t, fp) for t, fp in (self.replaces or {}).items()]
        declared += [("reproduces", t, fp) for t, fp in self.reproduces.items()]
        for role, target, expected in declared:
            try:
                obj = resolve(target)
            except (ImportError, AttributeError):
                obj = _MISSING
            source = None if obj is _MISSING else source_of(obj)
            installed = None if source is None else fingerprint_source(source)
            if expected is not None:
                status = ("missing" if obj is _MISSING else
                          "matches" if installed == expected else "differs")
            elif obj is _MISSING:
                status = "new"
            elif target.split(":")[0].split(".")[0] == own:
                status = "own"
            else:
                status = "undeclared"
            rows.append({"target": target, "role": role, "expected": expected,
                         "installed": installed, "status": status})
        return rows

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
