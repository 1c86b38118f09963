"""``detcore doctor``: what is installed, what each plugin needs, and what ``auto`` would pick."""
from __future__ import annotations

import platform
import sys
import warnings
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def checks() -> list[dict]:
    from . import devices
    from .plugins import Registry

    rows = []

    def add(name, status, detail):
        rows.append({"name": name, "status": status, "detail": detail})

    add("python", "ok" if sys.version_info >= (3, 10) else "missing", platform.python_version())
    for dist in ("torch", "torchvision", "pycocotools", "onnx", "onnxruntime"):
        v = _version(dist)
        add(dist, "ok" if v else "missing", v or f"not installed (pip install {dist})")
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as exc:
        add("torch import", "missing", f"import failed: {exc}")
        return rows
    npu_ok = _npu_rows(add)
    for tool in ("atc", "npu-smi"):
        add(tool, "ok" if devices.which(tool) else "info", devices.which(tool) or "not on PATH")
    add("ais_bench", "ok" if _version("ais_bench") else "info",
        _version("ais_bench") or "not installed (offline .om inference unavailable)")
    cuda_ok, cuda_why = devices.cuda_status()
    add("cuda", "ok" if cuda_ok else "info", cuda_why)
    add("auto device", "info", devices.auto_device_name())
    registry = Registry()
    for info in registry.plugins.values():
        status = "ok" if info.status in ("ok", "disabled") else "missing"
        add(f"plugin {info.name}", status,
            f"{info.distribution} {info.version} [{info.status}] {info.reason}".strip())
        for pin in info.upstream:
            add(f"  pin {pin['requirement']}", "ok" if pin["ok"] else "missing",
                f"installed {pin['installed'] or 'none'}")
    seen = set()
    for spec in registry.models.values():
        for need, check in spec.needs.items():
            if (spec.plugin, need) in seen:  # e.g. efficientdet-d0..d7 share one check
                continue
            seen.add((spec.plugin, need))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ok, detail = check()
            except Exception as exc:  # a check must never crash doctor
                ok, detail = False, f"check failed: {exc}"
            add(f"  {spec.plugin}: {need}", "ok" if ok else "missing", detail)
    _auto_patch_rows(add, registry, npu_ok)
    return rows


def _npu_rows(add) -> bool:
    """torch_npu (the version it reports: a simulated one says so), CANN and its version, and
    the NPUs torch sees; returns whether the NPU backend is usable."""
    from . import devices

    npu_ok, npu_why = devices.npu_status()  # imports torch_npu only where CANN is present
    version = devices.torch_npu_version()
    add("torch_npu", "ok" if npu_ok else "info", f"{version}: {npu_why}" if version else npu_why)
    home = devices.cann_home()
    add("CANN", "ok" if home else "info",
        f"{home} (version {devices.cann_version(home) or 'unknown'})" if home else "not found")
    if npu_ok:
        import torch

        add("npu devices", "ok", f"{torch.npu.device_count()} x {torch.npu.get_device_name(0)}")
    return npu_ok


def auto_patches(registry, spec, device) -> list:
    """The patches ``--patches auto`` applies to ``spec`` on ``device``, as the runner applies
    them (default config); applied, then reverted at once."""
    from .config import resolve_config

    _, config = resolve_config(spec, None, [])
    applied = []
    try:
        for patches in registry.hooks_for(spec).apply_npu_patches(spec=spec, config=config,
                                                                   device=device):
            applied.extend(patches or [])
    finally:
        for patch in reversed(applied):
            patch.revert()
    return applied


def _auto_patch_rows(add, registry, npu_ok: bool) -> None:
    """Per plugin: the patches ``auto`` applies on the NPU, the torch_npu ops their NPU branches
    call (``Patch.npu_ops``), and those this torch_npu lacks (that branch cannot run)."""
    if not npu_ok:
        add("auto patches", "info", "none here: --patches auto applies the vendored patches on an "
                                    "NPU only")
        return
    import torch
    import torch_npu

    groups: dict[tuple, list[str]] = {}
    for spec in registry.models.values():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                patches = auto_patches(registry, spec, torch.device("npu", 0))
            ops = sorted({op for p in patches for op in getattr(p, "npu_ops", ())})
            key = (spec.plugin, tuple(p.name for p in patches), tuple(ops), None)
        except Exception as exc:  # a plugin's failure is a row, never a crash
            key = (spec.plugin, (), (), f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        groups.setdefault(key, []).append(spec.name)
    for (plugin, names, ops, error), models in groups.items():
        which = models[0] if len(models) == 1 else f"{models[0]} (and {len(models) - 1} more)"
        if error:
            add(f"  {plugin}: auto patches on npu", "missing", f"{which}: {error}")
            continue
        add(f"  {plugin}: auto patches on npu", "ok", f"{which}: {', '.join(names) or 'none'}")
        missing = [op for op in ops if not _has(torch_npu, op)]
        detail = (f"torch_npu lacks {', '.join(missing)}: the patches calling it cannot run"
                  if missing else f"all present ({', '.join(ops)})" if ops else "none called")
        add(f"  {plugin}: torch_npu ops", "missing" if missing else "ok", detail)


def _has(module, dotted: str) -> bool:
    for part in dotted.split("."):
        try:
            module = getattr(module, part)
        except AttributeError:
            return False
    return True
