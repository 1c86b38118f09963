"""``detcore run``: resolve model, config, data, device and patches, then run one task."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .spec import ModelSpec

log = logging.getLogger("detcore")
TASKS = ("train", "eval", "finetune", "predict", "export", "infer", "bench")


@dataclass
class RunOptions:
    model: str
    task: str
    data: str | None = None
    config: str | None = None
    device: str = "auto"
    work_dir: str | None = None
    weights: str | None = None
    sets: tuple[str, ...] = ()
    resume: bool = False
    patches: str = "auto"
    amp: str | None = None
    loss_scale: str | None = None
    engine: str = "onnxruntime"
    batch_size: int | None = None
    fmt: str = "onnx"
    progress: bool = True


@dataclass
class RunContext:
    """What a task (and a plugin's ``train``/``evaluate``/``export`` hook) receives."""

    spec: ModelSpec
    config_name: str
    config: dict
    device: Any
    work_dir: Path
    data_root: Path
    options: RunOptions
    hook: Any
    progress: bool = True
    world_size: int = 1
    artifacts: dict = field(default_factory=dict)
    patches: list = field(default_factory=list)


def default_work_dir(model: str, task: str) -> Path:
    return Path("work_dirs") / model / task


def default_weights(model: str) -> Path:
    return default_work_dir(model, "train") / "checkpoints" / "last.pt"


def prepare(registry, opts: RunOptions) -> RunContext:
    from .config import resolve_config

    if opts.task not in TASKS:
        raise UserError(f"unknown task {opts.task!r}: use one of {', '.join(TASKS)}")
    spec = registry.get_model(opts.model)
    check_pins(spec)
    config_name, config = resolve_config(spec, opts.config, list(opts.sets))
    if opts.amp is not None:
        config["train"]["amp"] = opts.amp
    if opts.loss_scale is not None:
        config["train"]["loss_scale"] = opts.loss_scale
    work_dir = Path(opts.work_dir) if opts.work_dir else default_work_dir(spec.name, opts.task)
    _ensure_writable(work_dir)
    from . import distributed as dist
    from .devices import resolve_device

    rank, local_rank, world_size = dist.world()
    device = resolve_device(opts.device, local_rank)
    dist.init(device, float(config["train"]["dist_timeout_s"]))
    data_root = Path(opts.data) if opts.data else synthetic_root(config)
    return RunContext(spec=spec, config_name=config_name, config=config, device=device,
                      work_dir=work_dir, data_root=data_root, options=opts, hook=registry.hook,
                      progress=opts.progress and rank == 0, world_size=world_size)


def check_pins(spec: ModelSpec) -> None:
    """A model runs only on the upstream it pins (its vendored patches are written for it)."""
    from .errors import MissingDependency
    from .plugins import check_requirement

    if os.environ.get("DETCORE_IGNORE_PINS") == "1":
        return
    for pin in map(check_requirement, spec.upstream):
        if not pin["ok"]:
            raise MissingDependency(
                f"model {spec.name} pins {pin['requirement']} but "
                f"{pin['installed'] or 'nothing'} is installed; pip install "
                f"'{pin['requirement']}' (or set DETCORE_IGNORE_PINS=1 to try anyway)")


def synthetic_root(config: dict) -> Path:
    from .data.synthetic import SynthSpec, ensure_synthetic

    try:
        spec = SynthSpec(**config["data"]["synthetic"])
    except TypeError as exc:
        raise UserError(f"data.synthetic: {exc}") from None
    if not 1 <= spec.num_classes <= 6 or spec.min_size > spec.max_size or spec.num_train < 1:
        raise UserError("data.synthetic: need 1..6 classes, min_size <= max_size, num_train >= 1")
    return ensure_synthetic(spec)


def _ensure_writable(work_dir: Path) -> None:
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create work dir {work_dir}: {exc.strerror}; pass --work-dir "
                        f"with a writable folder") from None
    if not os.access(work_dir, os.W_OK | os.X_OK):
        raise UserError(f"work dir {work_dir} is not writable; pass --work-dir with a writable folder")


def run(registry, opts: RunOptions) -> dict:
    """Run one task; write ``result.json`` (rank 0) and return it."""
    from .result import build_result, now, write_json_atomic

    started, t0 = now(), time.perf_counter()
    ctx = prepare(registry, opts)
    from . import distributed as dist
    from .tasks import TASK_FUNCTIONS

    try:
        _apply_patches(ctx)
        metrics, fps = TASK_FUNCTIONS[opts.task](ctx)
    finally:
        for patch in reversed(ctx.patches):
            patch.revert()
        dist.shutdown()
    result = build_result(ctx, opts.task, metrics, fps, started, time.perf_counter() - t0)
    if dist.is_main():
        write_json_atomic(ctx.work_dir / "result.json", result)
    return result


def _apply_patches(ctx: RunContext) -> None:
    mode = ctx.options.patches
    if mode not in ("on", "off", "auto"):
        raise UserError(f"--patches {mode!r}: use on, off or auto")
    if mode == "off" or (mode == "auto" and ctx.device.type != "npu"):
        return
    for applied in ctx.hook.apply_npu_patches(spec=ctx.spec, config=ctx.config, device=ctx.device):
        ctx.patches.extend(applied or [])
    ctx.artifacts["patches"] = [p.name for p in ctx.patches]
