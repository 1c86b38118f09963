"""One function per ``--task``; each returns ``(metrics, fps)`` and fills ``ctx.artifacts``."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .checkpoint import load_checkpoint, load_model_weights
from .errors import PluginError, UserError
from .runner import RunContext, default_weights

log = logging.getLogger("detcore")


# -- shared pieces ----------------------------------------------------------
def dataset(ctx: RunContext, split: str, train: bool = False, input_size=None):
    from .data.coco import CocoDetection

    dcfg = ctx.config["data"]
    return CocoDetection(ctx.data_root, split, input_size or dcfg["input_size"],
                         masks=ctx.spec.task_type == "segm", hflip_prob=float(dcfg["hflip"]),
                         train=train, max_images=int(dcfg["max_images"]))


def build(ctx: RunContext, num_classes: int):
    try:
        model = ctx.hook.build_model(spec=ctx.spec, config=ctx.config, num_classes=num_classes)
    except UserError:
        raise
    except Exception as exc:
        if os.environ.get("DETCORE_DEBUG") == "1":
            raise
        raise PluginError(f"plugin {ctx.spec.plugin!r} failed to build {ctx.spec.name!r}: "
                          f"{type(exc).__name__}: {exc}; check the model.* config keys "
                          f"(DETCORE_DEBUG=1 shows the traceback)") from None
    if model is None:
        raise UserError(f"plugin {ctx.spec.plugin!r} returned no model for {ctx.spec.name!r}")
    return model


def weights_path(ctx: RunContext) -> Path:
    if ctx.options.weights:
        return Path(ctx.options.weights)
    path = default_weights(ctx.spec.name)
    if not path.is_file():
        raise UserError(f"no weights: train first (detcore run --model {ctx.spec.name} --task "
                        f"train) or pass --weights FILE")
    return path


def trained_model(ctx: RunContext, num_classes: int | None = None):
    """Build the model and load ``--weights`` (or the default train checkpoint)."""
    path = weights_path(ctx)
    ckpt = load_checkpoint(path)
    n = num_classes or ckpt.get("num_classes")
    if n is None:
        raise UserError(f"{path} does not record its class count; pass --data with the dataset "
                        f"it was trained on")
    if num_classes and ckpt.get("num_classes") not in (None, num_classes):
        raise UserError(f"{path} was trained for {ckpt['num_classes']} classes but the data has "
                        f"{num_classes}; use --task finetune to adapt it")
    model = build(ctx, int(n))
    load_model_weights(model, ckpt, str(path), finetune=False, expected_model=ctx.spec.name)
    ctx.artifacts["weights"] = str(path)
    return model.to(ctx.device), ckpt


def run_evaluation(ctx: RunContext, model, data) -> dict:
    return ctx.hook.evaluate(ctx=ctx, model=model, dataset=data)


# -- tasks -------------------------------------------------------------------
def task_train(ctx: RunContext):
    result = ctx.hook.train(ctx=ctx)
    ctx.artifacts.update(result.get("artifacts", {}))
    return result.get("metrics", {}), result.get("fps")


def task_finetune(ctx: RunContext):
    return task_train(ctx)


def default_train(ctx: RunContext) -> dict:
    """Core's ``train`` hook: Trainer.fit, then COCO evaluation of the result."""
    from .train.trainer import Trainer, seed_everything

    tcfg = ctx.config["train"]
    seed_everything(int(tcfg["seed"]), bool(tcfg["deterministic"]))
    train_set = dataset(ctx, "train", train=True)
    model = build(ctx, train_set.num_classes)
    task = ctx.options.task
    if task == "finetune" or (ctx.options.weights and not ctx.options.resume):
        path = weights_path(ctx)
        reset = load_model_weights(model, load_checkpoint(path), str(path),
                                   finetune=task == "finetune", expected_model=None)
        ctx.artifacts["init_weights"] = str(path)
        if reset:
            log.info("finetune: re-initialised %d class-dependent tensors", len(reset))
    if task == "bench":
        tcfg["max_steps"] = int(tcfg["bench_steps"]) + int(tcfg["warmup_fps_steps"])
    trainer = Trainer(ctx, model, train_set)
    if ctx.options.resume:
        if not trainer.ckpt_path.is_file():
            raise UserError(f"--resume: no checkpoint at {trainer.ckpt_path}; start without "
                            f"--resume or pass the --work-dir of the run to continue")
        trainer.resume(trainer.ckpt_path)
    stats = trainer.fit()
    artifacts = {"checkpoint": stats["checkpoint"], "metrics_log": str(trainer.metrics_path)}
    metrics = {"steps": stats["steps"], "skipped_steps": stats["skipped_steps"]}
    if stats["final_loss"] is not None:
        metrics["final_loss"] = round(stats["final_loss"], 5)
    if task != "bench" and tcfg["eval_after"]:
        metrics.update(run_evaluation(ctx, trainer.eval_model(), dataset(ctx, "val")))
    return {"metrics": metrics, "fps": stats["fps"], "artifacts": artifacts}


def task_bench(ctx: RunContext):
    metrics, fps = task_train(ctx)
    return {"steps": metrics.get("steps", 0)}, fps


def task_eval(ctx: RunContext):
    data = dataset(ctx, "val")
    model, _ = trained_model(ctx, data.num_classes)
    return run_evaluation(ctx, model, data), None


def task_predict(ctx: RunContext):
    from .predict import image_paths, predict_images

    model, ckpt = trained_model(ctx)
    names = ckpt.get("classes") or [str(i) for i in range(int(ckpt.get("num_classes", 0)))]
    source = Path(ctx.options.data) if ctx.options.data else ctx.data_root
    pcfg = ctx.config["predict"]
    paths = image_paths(source, int(pcfg["max_images"]))
    out_dir = ctx.work_dir / "images"
    summary = predict_images(model, paths, ctx.config["data"]["input_size"], ctx.device, names,
                             out_dir, float(pcfg["score_threshold"]))
    ctx.artifacts["images"] = str(out_dir)
    ctx.artifacts["predicted"] = summary
    return {"images": len([s for s in summary if "output" in s]),
            "detections": sum(s.get("detections", 0) for s in summary)}, None


def task_export(ctx: RunContext):
    model, _ = trained_model(ctx)
    fmt = ctx.options.fmt
    if fmt not in ("onnx", "om"):
        raise UserError(f"--format {fmt!r}: use onnx or om")
    out = ctx.hook.export(ctx=ctx, model=model, path=ctx.work_dir / f"{ctx.spec.name}.onnx", fmt=fmt)
    ctx.artifacts.update(out.get("artifacts", {}))
    return out.get("metrics", {}), None


def default_export(ctx: RunContext, model, path: Path, fmt: str) -> dict:
    from .export import convert_om, export_onnx

    ecfg = ctx.config["export"]
    batch = int(ctx.options.batch_size or ecfg["batch_size"])
    info = export_onnx(model, path, ctx.config["data"]["input_size"], batch, int(ecfg["opset"]),
                       bool(ecfg["dynamic_batch"]), sample=_export_sample(ctx, batch))
    artifacts = {"onnx": info["onnx"], "onnx_inputs": info["inputs"], "onnx_outputs": info["outputs"]}
    metrics = {f"parity_max_abs_diff_{k}": v for k, v in info["parity_max_abs_diff"].items()}
    if "parity_unmatched" in info:
        metrics["parity_unmatched"] = info["parity_unmatched"]
    if fmt == "om":
        artifacts.update(convert_om(path, ctx.config["data"]["input_size"], batch,
                                    info["outputs"], ecfg.get("soc_version")))
    return {"artifacts": artifacts, "metrics": metrics}


def _export_sample(ctx: RunContext, batch: int):
    """Real validation images for the parity check (random ones flatter the comparison)."""
    import torch

    try:
        data = dataset(ctx, "val")
    except UserError:
        return None
    samples = [data[i] for i in range(min(batch, len(data)))]
    samples = [s for s in samples if s is not None]
    if len(samples) < batch:
        return None
    return torch.stack([s[0] for s in samples]).float() / 255


def task_infer(ctx: RunContext):
    from .evaluate import coco_metrics
    from .infer import AisBenchEngine, OnnxRuntimeEngine, run_offline

    if not ctx.options.weights:
        raise UserError("--task infer needs --weights MODEL.onnx (or .om with --engine ais_bench)")
    path = Path(ctx.options.weights)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    engines = {"onnxruntime": OnnxRuntimeEngine, "ais_bench": AisBenchEngine}
    if ctx.options.engine not in engines:
        raise UserError(f"--engine {ctx.options.engine!r}: use {' or '.join(engines)}")
    engine = engines[ctx.options.engine](path)
    data = dataset(ctx, "val", input_size=engine.input_size)
    batch = int(ctx.options.batch_size or engine.batch or 1)
    results, perf = run_offline(engine, data, batch, ctx.progress)
    iou_types = ("bbox", "segm") if ctx.spec.task_type == "segm" else ("bbox",)
    metrics = coco_metrics(data.coco, results, iou_types, str(ctx.config["eval"]["backend"]))
    metrics["end_to_end_fps"] = perf["end_to_end_fps"]
    ctx.artifacts.update({"model_file": str(path), "engine": ctx.options.engine, "batch_size": batch})
    return metrics, perf["fps"]


TASK_FUNCTIONS = {"train": task_train, "finetune": task_finetune, "eval": task_eval,
                  "predict": task_predict, "export": task_export, "infer": task_infer,
                  "bench": task_bench}
