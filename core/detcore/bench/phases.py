"""``detcore bench``'s phases, each run in its own process so peak memory is per phase.

``python -m detcore.bench.phases train|infer MODEL [--quick] [--device D]`` prints one JSON line.
"""
from __future__ import annotations

import json
import resource
import statistics
import time

import torch

BATCHES_FULL, BATCHES_QUICK = (1, 4, 8, 16), (1, 4)
TRAINED = "bench_trained.pt"


#: ``--quick``: every model at a CI size (the figures say which input and batch they are for).
QUICK_SETS = ("data.input_size=[128,128]", "data.batch_size=2", "eval.batch_size=2")


def context(model_name: str, device_name: str, sets=(), quick: bool = False):
    from ..context import RunOptions
    from ..plugins import get_registry
    from ..runner import prepare

    config = "coco" if device_name == "cuda" else None
    sets = tuple(sets) + (("train.amp=fp16",) if device_name == "cuda" else ())
    sets += QUICK_SETS if quick else ()
    opts = RunOptions(model=model_name, task="perf", device=device_name, config=config,
                      sets=sets, progress=False, work_dir=f"work_dirs/bench/{model_name}")
    return prepare(get_registry(), opts)


def train_phase(model_name: str, quick: bool, device_name: str) -> dict:
    """detcore's training step vs the upstream's own step, through :func:`engine.interleave`.

    detcore side: core's ``Trainer`` (its sampler, loader and ``step``: device placement,
    autocast, loss sum, finiteness check, backward, optimizer, scheduler, loss read-back).
    Upstream side: the plugin's ``baseline_train_step`` hook (e.g. effdet's ``DetBenchTrain``,
    mmengine's ``train_step``) on a copy of the same weights with the same optimizer, fed by a
    plain loader over the same data and batch; core's fallback (a bare loop over the Detector)
    is labelled as such. One epoch holds every step: no loader restarts inside the timing.
    """
    import copy

    from ..runner import synthetic_root
    from ..train.loader import train_loader
    from ..train.optim import default_optimizer
    from ..train.trainer import Trainer, to_device
    from .engine import interleave

    steps, warmup = (12, 2) if quick else (40, 3)
    ctx = context(model_name, device_name, ("train.log_interval=1000000",), quick)
    batch = int(ctx.config["data"]["batch_size"])
    ctx.config["data"]["synthetic"]["num_train"] = (steps + warmup) * batch
    ctx.data_root = synthetic_root(ctx.config)
    data = ctx.dataset("train", train=True)
    model = ctx.build_model(data.num_classes).to(ctx.device)
    upstream_model = copy.deepcopy(model)
    trainer = Trainer(ctx, model, data)
    optimizer = (ctx.hooks.build_optimizer(spec=ctx.spec, config=ctx.config, model=upstream_model,
                                           world_size=1)
                 or default_optimizer(upstream_model, ctx.config, 1))
    upstream_step = ctx.hooks.baseline_train_step(spec=ctx.spec, config=ctx.config,
                                                  model=upstream_model, optimizer=optimizer)
    loader, sampler = train_loader(data, batch, int(ctx.config["data"]["workers"]), 0, 1, 1)

    def upstream_steps():
        sampler.set_epoch(0)
        upstream_model.train()
        for b in loader:
            yield lambda b=b: upstream_step(*to_device(b, ctx.device))

    detcore_steps = (lambda b=b: trainer.step(b) for b in trainer.batches(0))
    d_s, u_s = interleave(detcore_steps, upstream_steps(), steps, warmup, ctx.device)
    torch.save(model.state_dict(), ctx.work_dir / TRAINED)  # for the infer phase's accuracy
    d, u = steps * batch / d_s, steps * batch / u_s
    baseline = ("upstream" if getattr(upstream_step, "upstream", True)
                else "bare loop (no upstream)")
    return {"model": model_name, "device": str(ctx.device), "config": ctx.config_name,
            "input_size": ctx.config["data"]["input_size"], "batch_size": batch,
            "amp": ctx.config["train"]["amp"], "threads": torch.get_num_threads(),
            "detcore_fps": round(d, 3), "upstream_fps": round(u, 3), "ratio": round(d / u, 3),
            "baseline": baseline, "steps": steps, **_memory(ctx.device)}


def infer_phase(model_name: str, quick: bool, device_name: str, weights: str | None = None) -> dict:
    """PyTorch eager vs the exported ONNX on onnxruntime: per batch size, speed and parity;
    then, as a deployment table, each format's COCO mAP on the validation images, with
    ``weights`` (a trained checkpoint, loaded as ``--task eval`` loads it) where given."""
    import onnxruntime as ort

    from ..export import export_onnx
    from ..tasks import trained_model

    # COCO evaluation's threshold (the coco configs' 0.001): every slot is filled, so the
    # parity figure compares real detections even for an untrained model
    ctx = context(model_name, device_name, ("eval.score_threshold=0.001",), quick=quick)
    data = ctx.dataset("val")
    if weights:
        from pathlib import Path

        ctx.weights = Path(weights)
        model = trained_model(ctx, data.num_classes)[0].cpu().eval()
    else:
        model = ctx.build_model(data.num_classes).eval()
        if (ctx.work_dir / TRAINED).is_file():  # the train phase's weights
            model.load_state_dict(torch.load(ctx.work_dir / TRAINED, weights_only=True))
    h, w = ctx.config["data"]["input_size"]
    repeats = 3 if quick else 10
    rows = []
    for batch in BATCHES_QUICK if quick else BATCHES_FULL:
        images = torch.stack([data[i % len(data)][0] for i in range(batch)]).float() / 255
        path = ctx.work_dir / f"bench_b{batch}.onnx"
        info = export_onnx(model, path, (h, w), batch, 17, False, sample=images)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        eager = _latency(lambda: model.export_forward(images), repeats)
        onnx_s = _latency(lambda: sess.run(None, {"input": images.numpy()}), repeats)
        rows.append({"batch": batch, "eager_ms": round(eager * 1e3, 2),
                     "onnxruntime_ms": round(onnx_s * 1e3, 2),
                     "eager_fps": round(batch / eager, 2), "onnxruntime_fps": round(batch / onnx_s, 2),
                     "speedup": round(eager / onnx_s, 3),
                     "parity_max_abs_diff": max(info["parity_max_abs_diff"].values()),
                     "parity_unmatched": info.get("parity_unmatched", 0)})
        path.unlink()
    return {"model": model_name, "device": "cpu (onnxruntime CPUExecutionProvider)",
            "config": ctx.config_name, "input_size": [h, w], "rows": rows,
            "weights": weights or "train phase",
            "formats": formats(ctx, model, data), **_memory(ctx.device)}


class _Eager:
    """``export_forward`` in PyTorch behind the offline-inference engine interface."""

    def __init__(self, model, input_size):
        self.model, self.batch, self.input_size = model, 1, tuple(input_size)

    @torch.inference_mode()
    def __call__(self, images):
        outs = self.model.export_forward(torch.from_numpy(images))
        return {n: o.numpy() for n, o in zip(self.model.export_output_names, outs)}


def formats(ctx, model, data) -> list[dict]:
    """Each deployment format's accuracy on the same images, through the same decoding and
    COCO scoring as ``--task infer``: status, file size, mAP, its difference from eager, ms/image."""
    from ..evaluate import coco_metrics
    from ..export import SCORE_FLOOR, agrees, export_onnx
    from ..infer import OnnxRuntimeEngine, run_offline

    iou_types = ("bbox", "segm") if ctx.spec.task_type == "segm" else ("bbox",)
    path = ctx.work_dir / "bench_formats.onnx"
    first = data[0][0][None].float() / 255
    info = export_onnx(model, path, data.input_size, 1, 17, False, sample=first)
    verified = agrees(info, float(model.export_tolerance))
    rows = []
    for fmt, engine, status in (
            ("pytorch eager", _Eager(model, data.input_size), "reference"),
            ("onnx (onnxruntime)", OnnxRuntimeEngine(path),
             "verified" if verified else f"unverified (>= {SCORE_FLOOR} lost or beyond tolerance)")):
        results, perf = run_offline(engine, data, 1, False)
        metrics = coco_metrics(data.coco, results, iou_types)
        rows.append({"format": fmt, "status": status, **{f"{t}_mAP": metrics[f"{t}_mAP"]
                                                           for t in iou_types},
                     "ms_per_image": round(1e3 / perf["fps"], 2) if perf["fps"] else None,
                     "size_mib": round(path.stat().st_size / 2**20, 2) if fmt != "pytorch eager" else None})
    for row in rows:
        for t in iou_types:
            row[f"{t}_delta_mAP"] = round(row[f"{t}_mAP"] - rows[0][f"{t}_mAP"], 4)
    path.unlink()
    rows.append({"format": "om (ais_bench)", "status": "not run: needs CANN's atc and ais_bench"})
    return rows


def _latency(fn, repeats: int) -> float:
    with torch.inference_mode():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _memory(device) -> dict:
    out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_device_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="one detcore bench phase (run by detcore bench)")
    parser.add_argument("phase", choices=PHASES)
    parser.add_argument("model")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", help="infer: a trained checkpoint for the formats rows")
    args = parser.parse_args()
    extra = {"weights": args.weights} if args.phase == "infer" else {}
    result = PHASES[args.phase](args.model, args.quick, args.device, **extra)
    print("BENCH " + json.dumps(result), flush=True)


PHASES = {"train": train_phase, "infer": infer_phase}

if __name__ == "__main__":
    main()
