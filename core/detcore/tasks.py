"""The ``--task`` table: one function per task, each ``(ctx) -> (metrics, fps)`` filling
``ctx.artifacts``. Torch-free at import (the CLI reads :data:`TASKS` for its choices); each task
calls the model's hooks, whose core defaults are the services (train, evaluate, export)."""
from __future__ import annotations

from pathlib import Path

from .context import RunContext
from .errors import UserError


def trained_model(ctx: RunContext, num_classes: int | None = None):
    """Build the model and load ``ctx.weights`` strictly: ``(model on the device, checkpoint)``."""
    from .checkpoint import load_checkpoint, load_model_weights, recorded_classes

    ckpt = load_checkpoint(ctx.weights, ctx.spec.checkpoint_globals)
    recorded = recorded_classes(ckpt)
    recorded = len(recorded) if isinstance(recorded, list) else recorded
    n = num_classes or recorded
    if n is None and ctx.options.data:  # a plain state dict: the COCO root given says
        try:
            n = ctx.dataset("val").num_classes
        except UserError:
            pass
    if n is None:
        raise UserError(f"{ctx.weights} does not record its class count; pass --data with the "
                        f"dataset it was trained on")
    if num_classes and recorded not in (None, num_classes):
        raise UserError(f"{ctx.weights} was trained for {recorded} classes but the data "
                        f"has {num_classes}; use --task finetune to adapt it")
    model = ctx.build_model(int(n))
    load_model_weights(model, ckpt, str(ctx.weights), finetune=False, expected_model=ctx.spec.name)
    ctx.artifacts["weights"] = str(ctx.weights)
    return model.to(ctx.device), ckpt


def task_train(ctx: RunContext):
    """``train`` and ``finetune``: the runner has set what differs in ``ctx``; then the plots."""
    from .report.outputs import write_outputs

    metrics, fps = _fit(ctx)
    write_outputs(ctx)
    return metrics, fps


def _fit(ctx: RunContext):
    result = ctx.hooks.train(ctx=ctx)
    ctx.artifacts.update(result.get("artifacts", {}))
    return result.get("metrics", {}), result.get("fps")


def task_perf(ctx: RunContext):
    """The reference's ``train_performance_*.sh``: a fixed number of steps (set by the runner)."""
    metrics, fps = _fit(ctx)
    return {"steps": metrics.get("steps", 0)}, fps


def task_eval(ctx: RunContext):
    from .report.outputs import write_outputs

    data = ctx.dataset("val")
    model, _ = trained_model(ctx, data.num_classes)
    metrics = ctx.hooks.evaluate(ctx=ctx, model=model, dataset=data)
    write_outputs(ctx, data)
    return metrics, None


def load_predictor(ctx: RunContext):
    """The trained model, loaded once, with what predicting needs from the run's config (the
    letterbox, the class names the checkpoint records, ``predict.score_threshold``)."""
    from .checkpoint import recorded_classes
    from .predict import Predictor

    model, ckpt = trained_model(ctx)
    names = recorded_classes(ckpt)
    return Predictor(model, names if isinstance(names, list) else (),
                     ctx.config["data"]["input_size"], ctx.device,
                     float(ctx.config["predict"]["score_threshold"]), ctx.letterbox)


def task_predict(ctx: RunContext):
    from .predict import image_paths, predict_images

    predictor = load_predictor(ctx)
    paths = image_paths(Path(ctx.options.data) if ctx.options.data else ctx.data_root,
                        int(ctx.config["predict"]["max_images"]))
    out_dir = ctx.work_dir / "images"
    summary = predict_images(predictor, paths, out_dir)
    ctx.artifacts["images"] = str(out_dir)
    ctx.artifacts["predicted"] = summary
    return {"images": len([s for s in summary if "output" in s]),
            "detections": sum(s.get("detections", 0) for s in summary)}, None


def task_export(ctx: RunContext):
    model, _ = trained_model(ctx)
    out = ctx.hooks.export(ctx=ctx, model=model, path=ctx.work_dir / f"{ctx.spec.name}.onnx",
                           fmt=ctx.options.fmt)
    ctx.artifacts.update(out.get("artifacts", {}))
    return out.get("metrics", {}), None


def task_infer(ctx: RunContext):
    from .evaluate import coco_metrics
    from .infer import ENGINES, run_offline

    engine = ENGINES[ctx.options.engine](ctx.weights)
    data = ctx.dataset("val", input_size=engine.input_size)
    batch = int(ctx.options.batch_size or engine.batch or 1)
    results, perf = run_offline(engine, data, batch, ctx.progress)
    iou_types = ("bbox", "segm") if ctx.spec.task_type == "segm" else ("bbox",)
    metrics = coco_metrics(data.coco, results, iou_types, str(ctx.config["eval"]["backend"]))
    metrics["end_to_end_fps"] = perf["end_to_end_fps"]
    ctx.artifacts.update({"model_file": str(ctx.weights), "engine": ctx.options.engine,
                          "batch_size": batch})
    return metrics, perf["fps"]


#: ``--task`` name -> function.
TASKS = {"train": task_train, "finetune": task_train, "perf": task_perf, "eval": task_eval,
         "predict": task_predict, "export": task_export, "infer": task_infer}
