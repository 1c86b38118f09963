"""Checks of a plugin's vendored patches (:class:`detcore.patching.Patch`) for its tests.

* :func:`stale_fingerprints`: are the fingerprints a patch declares (``replaces``,
  ``reproduces``) those of the pinned upstream installed here? Each problem is one line
  saying how to refresh the literal. Honest only against the pinned, unedited upstream, so it
  first checks the pins and that every fingerprinted file is byte for byte what its
  distribution installed (the hashes in the distribution's ``RECORD``).
* :func:`recording_torch_npu_calls`: under the simulator (:mod:`detcore.testing.npu_sim`),
  the names of the ``torch_npu`` functions and classes called, to compare with a patch's
  declared ``npu_ops``.
* :func:`edited_copy`: an upstream function as it would be after a one-line local edit (from
  a temporary copy of its source), to show that a patch refuses to replace it.

The conformance suite (:class:`detcore.testing.ConformanceSuite`) runs both on every patch a
model lists through the ``npu_patches`` hook.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import inspect
import textwrap
import types
from importlib import metadata
from pathlib import Path

from ..errors import PluginError
from ..patching import resolve, source_of


def stale_fingerprints(patch_classes, pins=()) -> list[str]:
    """Problems with the declarations of ``patch_classes`` against the upstream installed here
    (``pins``: the plugin's pinned requirements, e.g. ``ModelSpec.upstream``); empty when all
    fingerprints are current."""
    from ..plugins import check_requirement

    unmet = [p for p in map(check_requirement, pins) if not p["ok"]]
    if unmet:
        return [f"pin {p['requirement']}: installed {p['installed'] or 'nothing'}; fingerprints "
                f"are checked against the pinned upstream only" for p in unmet]
    problems = []
    for cls in patch_classes:
        where = f"{cls.__module__}.{cls.__qualname__}"
        if cls.replaces is None:
            problems.append(f"{where} declares no Patch.replaces (the attributes it sets, with "
                            f"the fingerprints of the upstream code they replace)")
            continue
        patch = cls()
        try:
            patch.check_declaration(patch.targets())
        except PluginError as exc:
            problems.append(str(exc))
        for row in patch.upstream_status():
            field = f"{where}.{row['role']}[{row['target']!r}]"
            if row["status"] in ("matches", "new", "own"):
                edited = _edited_file(row["target"])
                if edited:
                    problems.append(f"{field}: {edited}")
            elif row["status"] == "missing":
                problems.append(f"{field}: the pinned upstream has no such attribute; the patch "
                                f"must be rewritten for it")
            else:
                problems.append(
                    f"{field} = {row['expected']!r}, but the pinned upstream installed here gives "
                    f"{row['installed']!r}: review the change (detcore patches --diff), adapt the "
                    f"patch if it no longer fits, then set the literal to {row['installed']!r}")
    return problems


def _edited_file(target: str) -> str | None:
    """Why the file defining ``target`` cannot vouch for the pinned upstream, or ``None``."""
    try:
        obj = resolve(target)
    except (ImportError, AttributeError):
        return None
    obj = getattr(obj, "_torchdynamo_inline", obj)
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        return None
    module = getattr(obj, "__module__", None) or target.partition(":")[0]
    for dist_name in metadata.packages_distributions().get(module.split(".")[0], []):
        dist = metadata.distribution(dist_name)
        for record in dist.files or []:
            if record.hash is None or str(dist.locate_file(record)) != path:
                continue
            if _file_digest(path) != record.hash.value:
                return (f"{path} differs from what {dist_name} {dist.version} installed (its "
                        f"RECORD hash): reinstall {dist_name} before checking fingerprints")
            return None
    return None  # not installed from a distribution with hashes (e.g. the plugin's own code)


def _file_digest(path) -> str:
    """A file's sha256 as a wheel's ``RECORD`` writes it (urlsafe base64, no padding)."""
    with open(path, "rb") as fh:
        return base64.urlsafe_b64encode(hashlib.sha256(fh.read()).digest()).rstrip(b"=").decode()


@contextlib.contextmanager
def recording_torch_npu_calls(torch_npu):
    """While active, each public function of the (simulated) ``torch_npu`` module and of its
    submodules records its name when called, and each class when instantiated (``"npu_nms_v4"``,
    ``"optim.NpuFusedSGD"``: the form of ``Patch.npu_ops``). Yields the set of names."""
    called: set[str] = set()
    saved = []

    def wrap(module, prefix):
        for name, value in list(vars(module).items()):
            if name.startswith("_"):
                continue
            label = prefix + name
            if isinstance(value, types.ModuleType):
                if value.__name__ == f"{module.__name__}.{name}":
                    wrap(value, f"{label}.")
                continue
            if isinstance(value, type):
                replacement = _recording_class(value, label, called)
            elif callable(value):
                replacement = _recording_function(value, label, called)
            else:
                continue
            saved.append((module, name, value))
            setattr(module, name, replacement)

    wrap(torch_npu, "")
    try:
        yield called
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)


def _recording_function(fn, label, called):
    @functools.wraps(fn)
    def recorded(*args, **kwargs):
        called.add(label)
        return fn(*args, **kwargs)

    return recorded


def _recording_class(cls, label, called):
    def __init__(self, *args, **kwargs):
        called.add(label)
        cls.__init__(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})


def edited_copy(obj, old: str, new: str, directory):
    """``obj`` (an upstream function, or a method taken from its class) rebuilt from a
    temporary copy of its source in which ``old`` (one occurrence) is replaced by ``new``.

    The copy is written to ``directory`` (so ``inspect.getsource`` reads the edited text, as
    it would read a locally edited file) and runs in the original module's namespace; set it
    in place of the original (``monkeypatch.setattr``) to see a patch refuse it."""
    inner = getattr(obj, "_torchdynamo_inline", obj)
    source = textwrap.dedent(source_of(inner) or "")
    if source.count(old) != 1:
        raise ValueError(f"{old!r} occurs {source.count(old)} times in the source of {obj!r}")
    path = Path(directory) / f"edited_{inner.__module__.replace('.', '_')}_{inner.__name__}.py"
    path.write_text(source.replace(old, new))
    namespace = dict(inner.__globals__)
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 (a test helper)
    return namespace[inner.__name__]


__all__ = ["edited_copy", "recording_torch_npu_calls", "stale_fingerprints"]
