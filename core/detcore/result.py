"""``WORK_DIR/result.json``: the contract tests, benchmarks and users read.

Schema (version 1, documented in docs/result-schema.md)::

    schema_version  int      RESULT_SCHEMA_VERSION
    status          "ok"     written only for runs that finished
    model, task, config      str
    device          str      e.g. "cpu", "cuda:0", "npu:0"
    world_size      int
    metrics         {str: float}   COCO names: bbox_mAP, bbox_mAP_50, ..., segm_mAP, ...
    fps             float|null     images/s over timed iterations (warm-up excluded)
    artifacts       {str: str|...} checkpoint, onnx, om, predictions, images ...
    versions        {str: str}     python, torch, detcore, the plugin, its upstream pins
    started_at      str (ISO 8601, UTC), duration_s float
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import RESULT_SCHEMA_VERSION, __version__

REQUIRED_KEYS = ("schema_version", "status", "model", "task", "config", "device", "world_size",
                 "metrics", "fps", "artifacts", "versions", "started_at", "duration_s")


def versions(spec) -> dict:
    out = {"python": platform.python_version(), "detcore": __version__}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "pycocotools"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    from .devices import torch_npu_version

    npu = torch_npu_version()  # the one this run loaded (a simulated one says so), if any
    if npu:
        out["torch_npu"] = npu
    for req in spec.upstream:
        from packaging.requirements import Requirement

        name = Requirement(req).name
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_result(ctx, task: str, metrics: dict, fps, started: datetime, duration_s: float) -> dict:
    return {
        "schema_version": RESULT_SCHEMA_VERSION, "status": "ok", "model": ctx.spec.name,
        "task": task, "config": ctx.config_name, "device": str(ctx.device),
        "world_size": ctx.world_size, "metrics": metrics, "fps": fps,
        "artifacts": ctx.artifacts, "versions": versions(ctx.spec),
        "started_at": started.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
    }


def write_json_atomic(path: Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def validate_result(data: dict) -> list[str]:
    """Problems with a result.json against schema 1 (empty list: it conforms)."""
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in data]
    if data.get("schema_version") != RESULT_SCHEMA_VERSION:
        problems.append(f"schema_version {data.get('schema_version')!r} != {RESULT_SCHEMA_VERSION}")
    if not isinstance(data.get("metrics", {}), dict) or not all(
            isinstance(v, (int, float)) for v in data.get("metrics", {}).values()):
        problems.append("metrics must map names to numbers")
    if data.get("fps") is not None and not isinstance(data["fps"], (int, float)):
        problems.append("fps must be a number or null")
    return problems


def now() -> datetime:
    return datetime.now(timezone.utc)
