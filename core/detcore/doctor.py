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
    npu_ok, npu_why = devices.npu_status()
    add("torch_npu", "ok" if npu_ok else "info", _version("torch_npu") or npu_why)
    add("CANN", "ok" if devices.cann_home() else "info", devices.cann_home() or "not found")
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
    return rows
