"""``detcore run``: resolve model, config, data, device, world size, weights and task semantics
once, then run one task. Below this module nothing re-reads the environment or the command
line, or decides any of these again."""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from .context import CHOICES, RunContext, RunOptions
from .errors import UserError
from .spec import ModelSpec

log = logging.getLogger("detcore")

#: torchrun's variables: (rank, local rank, world size, workers on this node).
_WORLD_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


def default_work_dir(model: str, task: str) -> Path:
    return Path("work_dirs") / model / task


def default_weights(model: str) -> Path:
    return default_work_dir(model, "train") / "checkpoints" / "last.pt"


def check_options(opts: RunOptions) -> None:
    """The closed choices, checked once (the CLI offers only these; API callers may not)."""
    from .tasks import TASKS

    if opts.task not in TASKS:
        raise UserError(f"unknown task {opts.task!r}: use one of {', '.join(TASKS)}")
    for name, allowed in CHOICES.items():
        value = getattr(opts, name)
        if value is not None and value not in allowed:
            raise UserError(f"--{name.replace('fmt', 'format')} {value!r}: use one of "
                            f"{', '.join(allowed)}")


def prepare(registry, opts: RunOptions, in_memory: bool = False) -> RunContext:
    """Resolve ``opts`` once. ``in_memory``: the caller brings its images and writes nothing
    (the Python API's predict), so no work dir is made and no synthetic set generated."""
    from .config import resolve_config

    check_options(opts)
    spec = registry.get_model(opts.model)
    check_pins(spec)
    config_name, config = resolve_config(spec, opts.config, list(opts.sets))
    _task_config(config, opts)
    work_dir = Path(opts.work_dir) if opts.work_dir else default_work_dir(spec.name, opts.task)
    if not in_memory:
        _ensure_writable(work_dir)
    weights, init_weights = _weights(spec, opts)
    from . import distributed as dist
    from .devices import resolve_device

    rank, local_rank, world_size, local_world_size = (int(os.environ.get(v, d)) for v, d in
                                                      zip(_WORLD_ENV, (0, 0, 1, 1)))
    device = resolve_device(opts.device, local_rank)
    dist.init(device, world_size, float(config["train"]["dist_timeout_s"]))
    data_root = Path(opts.data) if opts.data else None if in_memory else synthetic_root(config)
    return RunContext(spec=spec, config_name=config_name, config=config, device=device,
                      work_dir=work_dir, data_root=data_root, options=opts,
                      hooks=registry.hooks_for(spec), progress=opts.progress and rank == 0,
                      rank=rank, world_size=world_size, local_world_size=local_world_size,
                      weights=weights, init_weights=init_weights,
                      finetune=opts.task == "finetune", resume=opts.resume)


def _task_config(config: dict, opts: RunOptions) -> None:
    """What the options and the task mean for the config: AMP, loss scale, ``perf``'s length
    (``--amp`` is one of :data:`CHOICES`, checked by :func:`check_options`)."""
    from .config_schema import CORE_KEYS, check

    tcfg = config["train"]
    if opts.amp is not None:
        tcfg["amp"] = opts.amp
    if opts.loss_scale is not None:
        check("train.loss_scale", opts.loss_scale, CORE_KEYS["train.loss_scale"], "--loss-scale")
        tcfg["loss_scale"] = opts.loss_scale
    if opts.task == "perf":  # the reference's train_performance_*.sh: fixed steps, FPS only
        tcfg["max_steps"] = int(tcfg["perf_steps"]) + int(tcfg["warmup_fps_steps"])
        tcfg["eval_after"] = False


def _weights(spec: ModelSpec, opts: RunOptions) -> tuple[Path | None, Path | None]:
    """``(weights the task reads, weights training starts from)``; a missing file is named."""
    task, given = opts.task, Path(opts.weights) if opts.weights else None
    if task == "infer":
        if given is None:
            raise UserError("--task infer needs --weights MODEL.onnx (or .om with --engine ais_bench)")
        if not given.is_file():
            raise UserError(f"model file {given} does not exist")
        return given, None
    if task in ("train", "perf"):
        return None, (given if given and not opts.resume else None)
    path = given or default_weights(spec.name)
    if given is None and not path.is_file():
        raise UserError(f"no weights: looked for {path.resolve()}, where `detcore run --model "
                        f"{spec.name} --task train` run from this folder without --work-dir "
                        f"saves them; train first, or pass --weights FILE (a train run's "
                        f"WORK_DIR/checkpoints/last.pt)")
    return (None, path) if task == "finetune" else (path, None)


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
    from .data.synthetic import SHAPES, SynthSpec, ensure_synthetic

    try:
        spec = SynthSpec(**config["data"]["synthetic"])
    except TypeError as exc:
        raise UserError(f"data.synthetic: {exc}") from None
    if not 1 <= spec.num_classes <= len(SHAPES) or spec.min_size > spec.max_size or spec.num_train < 1:
        raise UserError(f"data.synthetic: need 1..{len(SHAPES)} classes, min_size <= max_size, "
                        f"num_train >= 1")
    return ensure_synthetic(spec)


def _ensure_writable(work_dir: Path) -> None:
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create work dir {work_dir}: {exc.strerror}; pass --work-dir "
                        f"with a writable folder") from None
    if not os.access(work_dir, os.W_OK | os.X_OK):
        raise UserError(f"work dir {work_dir} is not writable; pass --work-dir with a writable folder")


def run(registry, opts: RunOptions) -> dict | None:
    """Run one task; write ``result.json`` and return it (on rank 0; other ranks get None)."""
    from . import distributed as dist
    from .result import build_result, now, write_json_atomic
    from .tasks import TASKS

    started, t0 = now(), time.perf_counter()
    ctx = prepare(registry, opts)
    try:
        with patched(ctx):
            metrics, fps = TASKS[opts.task](ctx)
    finally:
        dist.shutdown()
    if not ctx.is_main:
        return None
    result = build_result(ctx, opts.task, metrics, fps, started, time.perf_counter() - t0)
    write_json_atomic(ctx.work_dir / "result.json", result)
    return result


@contextlib.contextmanager
def patched(ctx: RunContext):
    """The model's vendored NPU patches (``--patches``) applied for the block, then reverted, so
    a process that runs several tasks (the Python API) never leaves one behind."""
    try:
        _apply_patches(ctx)
        yield ctx
    finally:
        for patch in reversed(ctx.patches):
            patch.revert()
        ctx.patches.clear()


def _apply_patches(ctx: RunContext) -> None:
    mode = ctx.options.patches
    if mode == "off" or (mode == "auto" and ctx.device.type != "npu"):
        return
    for applied in ctx.hooks.apply_npu_patches(spec=ctx.spec, config=ctx.config, device=ctx.device):
        ctx.patches.extend(applied or [])
    ctx.artifacts["patches"] = [p.name for p in ctx.patches]
