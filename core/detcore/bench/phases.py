"""Benchmark phases, each run in its own process so peak memory is per phase.

``python -m detcore.bench.phases train|infer MODEL [--quick] [--device D]`` prints one JSON line.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import torch

BATCHES_FULL, BATCHES_QUICK = (1, 4, 8, 16), (1, 4)


#: ``--quick``: every model at a CI size (the figures say which input and batch they are for).
QUICK_SETS = ("data.input_size=[128,128]", "data.batch_size=2", "eval.batch_size=2")


def context(model_name: str, device_name: str, sets=(), quick: bool = False):
    from ..plugins import get_registry
    from ..runner import RunOptions, prepare

    config = "coco" if device_name == "cuda" else None
    sets = tuple(sets) + (("train.amp=fp16",) if device_name == "cuda" else ())
    sets += QUICK_SETS if quick else ()
    opts = RunOptions(model=model_name, task="bench", device=device_name, config=config,
                      sets=sets, progress=False, work_dir=f"work_dirs/bench/{model_name}")
    return prepare(get_registry(), opts)


def train_phase(model_name: str, quick: bool, device_name: str) -> dict:
    """detcore's loop vs the upstream's own step on the same model, data, batch and optimizer.

    Blocks of ``steps`` steps alternate A B B A ... (so drift in the machine's speed hits both
    sides alike) after one warm-up block each; each side's figure is its images over its time.
    """
    from ..runner import synthetic_root
    from ..tasks import build, dataset
    from ..train.optim import default_optimizer
    from ..train.trainer import Trainer

    steps, rounds = (6, 2) if quick else (10, 4)
    ctx = context(model_name, device_name, ("train.log_interval=1000", "train.warmup_fps_steps=2"),
                  quick)
    batch = int(ctx.config["data"]["batch_size"])
    # one epoch holds a whole block: a new epoch (loader workers restarting) never falls in one
    ctx.config["data"]["synthetic"]["num_train"] = (steps + 2) * batch
    ctx.data_root = synthetic_root(ctx.config)
    data = dataset(ctx, "train", train=True)
    model = build(ctx, data.num_classes).to(ctx.device)
    ctx.config["train"]["eval_after"] = False

    def detcore_block(n: int = steps) -> tuple[int, float]:
        ctx.config["train"]["max_steps"] = n + 2  # + core's 2 warm-up steps, not timed
        trainer = Trainer(ctx, model, data)
        trainer.ckpt_path = trainer.work_dir / "bench-checkpoint.pt"
        fps = trainer.fit()["fps"]
        return n * batch, n * batch / fps

    def upstream_block(n: int = steps) -> tuple[int, float]:
        optimizer = (ctx.hook.build_optimizer(spec=ctx.spec, config=ctx.config, model=model)
                     or default_optimizer(model, ctx.config, 1))
        step = ctx.hook.baseline_train_step(spec=ctx.spec, config=ctx.config, model=model,
                                            optimizer=optimizer)
        return _time_baseline(step, model, data, batch, n, ctx)

    detcore_block(1), upstream_block(1)  # warm-up: first-call allocations, page cache
    totals = {"detcore": [0, 0.0], "upstream": [0, 0.0]}
    for r in range(rounds):
        order = (("detcore", detcore_block), ("upstream", upstream_block))
        for name, block in (order if r % 2 == 0 else order[::-1]):
            images, seconds = block()
            totals[name][0] += images
            totals[name][1] += seconds
    d, u = (totals[k][0] / totals[k][1] for k in ("detcore", "upstream"))
    return {"model": model_name, "device": str(ctx.device), "config": ctx.config_name,
            "input_size": ctx.config["data"]["input_size"], "batch_size": batch,
            "amp": ctx.config["train"]["amp"], "threads": torch.get_num_threads(),
            "detcore_fps": round(d, 3), "upstream_fps": round(u, 3), "ratio": round(d / u, 3),
            "rounds": rounds, "steps_per_round": steps, **_memory(ctx.device)}


def _time_baseline(step, model, data, batch, steps, ctx) -> tuple[int, float]:
    """``steps`` timed steps after 2 untimed ones (core's trainer excludes the same)."""
    from ..train.loader import train_loader

    loader, sampler = train_loader(data, batch, int(ctx.config["data"]["workers"]), 0, 1, 0)
    sampler.set_epoch(0)
    model.train()
    timed, seconds, tick = 0, 0.0, time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        images = images.to(ctx.device).float().div_(255)
        targets = [{k: v.to(ctx.device) if torch.is_tensor(v) else v for k, v in t.items()}
                   for t in targets]
        step(images, targets)
        now = time.perf_counter()
        if i >= 2:
            timed, seconds = timed + 1, seconds + now - tick
        tick = now
        if i + 1 >= steps + 2:
            break
    return timed * batch, seconds


def infer_phase(model_name: str, quick: bool, device_name: str) -> dict:
    """PyTorch eager vs the exported ONNX on onnxruntime, per batch size, with parity."""
    import numpy as np
    import onnxruntime as ort

    from ..export import export_onnx
    from ..tasks import build, dataset

    # COCO evaluation's threshold (the coco configs' 0.001): every slot is filled, so the
    # parity figure compares real detections even for an untrained model
    ctx = context(model_name, device_name, ("eval.score_threshold=0.001",), quick=quick)
    data = dataset(ctx, "val")
    model = build(ctx, data.num_classes).eval()
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
            "config": ctx.config_name, "input_size": [h, w], "rows": rows, **_memory(ctx.device)}


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


if __name__ == "__main__":
    phase, model_name = sys.argv[1], sys.argv[2]
    quick = "--quick" in sys.argv
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
    fn = {"train": train_phase, "infer": infer_phase}[phase]
    print("BENCH " + json.dumps(fn(model_name, quick, device)), flush=True)
