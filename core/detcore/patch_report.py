"""``detcore patches``: every installed plugin's vendored patches, what they replace and why.

For each patch (the classes a model's ``npu_patches`` hook lists): its name, the upstream
targets it replaces and reproduces with their fingerprint status against the installed
upstream (:meth:`detcore.patching.Patch.upstream_status`), the NPU limitation (its
docstring), its tolerance, the ``torch_npu`` ops its NPU branch calls, and whether
``--patches auto`` applies it on an NPU; with ``diff``, each replaced upstream function
beside its replacement (a unified diff), for the NPU branch and the portable one.

Nothing is applied. The NPU branch's replacements are obtained the way an NPU run gets them
(``Patch.targets()`` with an NPU device); off an Ascend host that needs ``torch_npu``, so the
CPU simulator (:mod:`detcore.testing.npu_sim`) stands in for it while they are built; the
only simulator object a listing can show is a ``torch_npu`` class, named, never diffed.
Import-light: the upstream libraries are imported when a listing is collected.
"""
from __future__ import annotations

import difflib
import functools
import inspect
import textwrap
import types

from .patching import resolve, source_of, target_name

#: How each fingerprint status reads in the listing.
STATUS_TEXT = {"matches": "matches the installed source",
               "differs": "DIFFERS from the installed source ({installed}): the patch refuses to apply",
               "missing": "MISSING from the installed upstream: the patch refuses to apply",
               "new": "a new attribute: nothing upstream replaced",
               "own": "the plugin's own attribute: no upstream code replaced",
               "undeclared": "NOT FINGERPRINTED although upstream has it ({installed})",
               "unchecked": "not checked (the patch declares no Patch.replaces)"}
#: Statuses with which ``apply()`` refuses.
REFUSED = ("differs", "missing", "undeclared")


def collect(registry, model: str | None = None, diff: bool = False) -> list[dict]:
    """One entry per plugin and set of patches: ``plugin``, ``models``, ``patches`` (each
    :func:`describe`). ``model``: only that model's (an unknown name is a ``UserError``)."""
    import warnings

    specs = [registry.get_model(model)] if model else list(registry.models.values())
    with warnings.catch_warnings():  # upstream import-time deprecation notices are not ours
        warnings.simplefilter("ignore")
        return _collect(registry, specs, diff)


def _collect(registry, specs, diff: bool) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for spec in specs:
        classes = [cls for group in registry.hooks_for(spec).npu_patches(spec=spec)
                   for cls in group or []]
        key = (spec.plugin, tuple(classes))
        if key not in groups:
            hooks = registry.plugins[spec.plugin].hooks
            groups[key] = {"plugin": spec.plugin, "models": [],
                           "listed": "npu_patches" in hooks or "apply_npu_patches" not in hooks,
                           "patches": [describe(cls, diff) for cls in classes]}
        groups[key]["models"].append(spec.name)
    return list(groups.values())


def describe(cls, diff: bool = False) -> dict:
    """What ``detcore patches`` shows of one patch class."""
    patch = cls()
    if cls.replaces is None:
        targets = [{"target": target_name(owner, attr), "role": "replaces", "expected": None,
                    "installed": None, "status": "unchecked"}
                   for owner, attr, _ in patch.targets()]
    else:
        targets = patch.upstream_status()
    entry = {"name": cls.name, "class": f"{cls.__module__}.{cls.__qualname__}",
             "declared": cls.replaces is not None, "targets": targets,
             "tolerance": cls.tolerance, "npu_ops": list(cls.npu_ops),
             # npu_patches lists what apply_npu_patches applies (the conformance suite checks
             # it), and core calls that hook on an NPU with --patches auto
             "auto_on_npu": True, "limitation": inspect.cleandoc(cls.__doc__ or "")}
    if diff:
        entry["diff"] = diffs(cls)
    return entry


def refused(groups: list[dict]) -> list[str]:
    """``patch: target`` for every target whose status stops its patch from applying."""
    return [f"{p['name']}: {t['target']}" for g in groups for p in g["patches"]
            for t in p["targets"] if t["status"] in REFUSED]


# -- diffs -----------------------------------------------------------------------------------

ELSEWHERE = "on cpu/cuda (--patches on)"
ON_NPU = "on an NPU (--patches auto or on)"


def diffs(cls) -> list[str]:
    """For each attribute the patch sets: a unified diff of the installed upstream source
    and the replacement (one per distinct replacement: on an NPU, elsewhere), or the two
    values when either has no Python source (a class swapped, a ``functools.partial``)."""
    variants = [(ELSEWHERE, _targets(cls, None))]
    try:
        variants.append((ON_NPU, _npu_targets(cls)))
    except Exception as exc:  # the listing goes on without the NPU branch
        variants.append((ON_NPU, exc))
    out = []
    for owner, attr, _ in variants[0][1]:
        name = target_name(owner, attr)
        try:
            old = resolve(name)
        except (ImportError, AttributeError):
            old = None
        replacements: dict[int, tuple] = {}
        for label, targets in variants:
            if isinstance(targets, Exception):
                out.append(f"# {cls.name}: {name} {label}: not available "
                           f"({type(targets).__name__}: {targets})")
                continue
            new = next(n for o, a, n in targets if target_name(o, a) == name)
            replacements.setdefault(_identity(new), (new, []))[1].append(label)
        for new, labels in replacements.values():
            where = "on every device" if len(labels) == len(variants) else labels[0]
            out.append(_diff(cls.name, name, old, new, where))
    return out


def _diff(patch: str, name: str, old, new, where: str) -> str:
    old_src = source_of(old) if old is not None else None
    new_src = source_of(new) if isinstance(new, types.FunctionType) else None
    if old_src is None or new_src is None:
        return f"# {patch}: {name} {where}: {_value(old)} -> {_value(new)}"
    if old_src == new_src:
        return (f"# {patch}: {name} {where}: {_value(old)} -> {_value(new)} (the same source: "
                f"one compiled, one plain Python)" if old is not new else
                f"# {patch}: {name} {where}: unchanged")
    lines = difflib.unified_diff(textwrap.dedent(old_src).splitlines(),
                                 textwrap.dedent(new_src).splitlines(),
                                 fromfile=f"upstream {name} ({_where(old)})",
                                 tofile=f"{patch} {where}: {_value(new)} ({_where(new)})",
                                 lineterm="")
    return "\n".join(lines)


def _targets(cls, device) -> list:
    return cls(device).targets()


def _npu_targets(cls) -> list:
    """``cls``'s targets on an NPU: with the real torch_npu where it is installed, else
    while the CPU simulator stands in for it (only to build the replacements)."""
    from .testing.npu_sim import npu_device, real_torch_npu_importable, simulated_torch_npu

    device = npu_device()  # .type == "npu", what Patch branches read
    if real_torch_npu_importable():
        return _targets(cls, device)
    with simulated_torch_npu():
        return _targets(cls, device)


def _identity(fn):
    """Replacements made by one factory are the same when their code and the simple values
    they close over are (a closure over ``backend="npu"`` is not the one over ``"onnx"``)."""
    if isinstance(fn, types.FunctionType):
        return fn.__code__, tuple(_simple(_cell(c)) for c in fn.__closure__ or ())
    return id(fn)


def _cell(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a cell not filled yet
        return None


def _simple(value):
    return value if isinstance(value, (str, int, float, bool, type(None))) else id(value)


def _closure_values(fn) -> str:
    pairs = [(name, _cell(cell)) for name, cell in
             zip(fn.__code__.co_freevars, fn.__closure__ or ())]
    shown = [f"{n}={v!r}" for n, v in pairs if isinstance(v, (str, int, float, bool))]
    return f"[{', '.join(shown)}]" if shown else ""


def _value(obj) -> str:
    if obj is None:
        return "(nothing)"
    if isinstance(obj, functools.partial):
        args = [_value(obj.func), *map(repr, obj.args),
                *(f"{k}={v!r}" for k, v in obj.keywords.items())]
        return f"functools.partial({', '.join(args)})"
    if hasattr(obj, "_torchdynamo_inline"):
        return f"torch.jit.script({_value(obj._torchdynamo_inline)})"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(obj, type):
        name = obj.__name__  # a class made in a factory: its public name
    module = getattr(obj, "__module__", None)
    if not (module and name):
        return repr(obj)
    closure = _closure_values(obj) if isinstance(obj, types.FunctionType) else ""
    return f"{module}.{name}{closure}"


def _where(obj) -> str:
    obj = getattr(obj, "_torchdynamo_inline", obj)
    try:
        path = inspect.getsourcefile(obj)
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return "no source"
    return f"{path}:{line}"


# -- text ------------------------------------------------------------------------------------

def render(groups: list[dict]) -> str:
    """The listing as text (``detcore patches``)."""
    out = []
    for group in groups:
        models = ", ".join(group["models"])
        count = len(group["patches"])
        out.append(f"{group['plugin']} (models: {models}): "
                   + (f"{count} patch{'es' if count != 1 else ''}, applied in this order by "
                      f"--patches on, and by --patches auto on an NPU" if count else
                      "no patches" if group["listed"] else
                      "patches not listed (the plugin implements apply_npu_patches but not the "
                      "npu_patches hook)"))
        for p in group["patches"]:
            out.append(f"  {p['name']}  [{p['class']}]")
            roles = {"replaces": "replaces", "reproduces": "reproduces"}
            for t in p["targets"]:
                status = STATUS_TEXT[t["status"]].format(installed=t["installed"])
                fp = t["expected"] or "-"
                out.append(f"    {roles.pop(t['role'], ''):<13} {t['target']}  {fp}  {status}")
            out.append(f"    tolerance     {p['tolerance']:g}")
            out.append(f"    torch_npu     {', '.join(p['npu_ops']) or '(none: the same code on every device)'}")
            out.append("    auto          applied on an NPU (on cpu/cuda only with --patches on)")
            doc = p["limitation"].splitlines() or ["(no docstring)"]
            out.append(f"    why           {doc[0]}")
            out.extend(f"                  {line}".rstrip() for line in doc[1:])
            for text in p.get("diff", []):
                out.extend(["", text])
            if p.get("diff"):
                out.append("")
    return "\n".join(out)
