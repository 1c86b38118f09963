#!/usr/bin/env python
"""FCOS (mmdet 3.3.0) through detcore: learning, training overhead, offline inference (CPU).

(a) learning   ``detcore run --model fcos --task train`` (smoke: R18, 256x256, batch 8, AdamW 1e-3)
               on the synthetic shapes, capped by ``train.max_minutes`` (10); reports bbox
               mAP@0.5 (aim: >= 0.5). ``--learn-epochs auto`` sizes the cosine schedule to the
               time cap from the step time measured in (b).
(b) overhead   detcore's training throughput (core's ``Trainer.fit`` driving the plugin's
               ``FCOSDetector``, checkpoint at each block end as at each epoch end) divided by
               a bare loop over the same mmdet ``FCOS`` (mmdet's ``DetDataPreprocessor``,
               ``model.loss``, ``parse_losses``, backward, clip, step, ``torch.save`` at block
               end), same data loader, batch, optimizer and start weights, in one process,
               alternating blocks (one epoch each by default) so background load hits both
               alike (aim: >= 0.95).
(c) inference  the model from (a) exported with a dynamic batch (core's ``export_onnx``), then
               ``detcore run --task infer --engine onnxruntime --batch-size B`` for B in 1, 4, 8,
               16 (COCO mAP and engine images/s), next to PyTorch eager (``model(images)``, the
               path ``--task eval`` runs) over the same validation images.

Prints markdown tables and writes JSON (``--out``). ``--quick`` runs everything small in
< 2 minutes (its mAP is not meaningful: it checks the plumbing). Run heavy modes under
``flock /tmp/detcore-bench.lock`` on a shared machine.

Threads: training in (a) and (b) uses ``--threads`` intra-op threads (default 1: on a small CPU
shared with other jobs, OpenMP with 2 threads measured 1.5-3x slower per step than 1 thread);
(c) uses ``--infer-threads`` for PyTorch (default: all cores, as onnxruntime's default).

    python bench/fcos_bench.py --quick
    python bench/fcos_bench.py                        # full: ~20 minutes on 2 cores
    python bench/fcos_bench.py --only overhead --rounds 4
    python bench/fcos_bench.py --only infer --weights work_dirs/fcos/train/checkpoints/last.pt
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "fcos"
PARTS = ("overhead", "learning", "infer")
QUICK_SETS = ["data.input_size=[128,128]", "data.batch_size=4", "data.workers=0",
              "model.width=64", "model.stacked_convs=1", "eval.batch_size=4",
              "data.synthetic.num_train=16", "data.synthetic.num_val=8",
              "data.synthetic.min_size=96", "data.synthetic.max_size=160"]


def set_args(sets: list[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


def cli(args: list[str], work: Path, log, threads: int) -> dict:
    """Run ``detcore run ...`` as a user would; return its result.json (plus wall time, command)."""
    cmd = [sys.executable, "-m", "detcore.cli", "run", "--model", MODEL, "--device", "cpu",
           "--no-progress", "--work-dir", str(work), *map(str, args)]
    shown = f"OMP_NUM_THREADS={threads} detcore " + " ".join(cmd[3:])
    log(f"$ {shown}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shown}\n{proc.stderr[-4000:]}")
    result = json.loads((work / "result.json").read_text())
    result["_wall_s"] = round(time.perf_counter() - t0, 1)
    result["_command"] = shown
    return result


# -- (b) overhead ----------------------------------------------------------
def bench_overhead(args, work: Path, log) -> dict:
    import torch

    from detcore.adapters.mmdet import build_model as build_mmdet
    from detcore.data.coco import collate  # noqa: F401  (the loaders below use core's)
    from detcore.plugins import Registry
    from detcore.runner import RunOptions, prepare
    from detcore.tasks import build, dataset
    from detcore.train.loader import train_loader
    from detcore.train.optim import build_scheduler
    from detcore.train.trainer import Trainer, seed_everything
    from detcore_fcos.model import mmdet_model_config
    from detcore_fcos.optim import build_optimizer

    torch.set_num_threads(args.threads)
    sets = [*(QUICK_SETS if args.quick else []), *args.set, "train.epochs=100000",
            "train.eval_after=false", "train.log_interval=10", "train.checkpoint_every=100000"]
    opts = RunOptions(model=MODEL, task="train", device="cpu", work_dir=str(work / "overhead"),
                      sets=tuple(sets), progress=False, patches="off")
    ctx = prepare(Registry(), opts)
    cfg = ctx.config
    seed_everything(0, False)
    train_set = dataset(ctx, "train", train=True)
    batch, workers = int(cfg["data"]["batch_size"]), int(cfg["data"]["workers"])
    block = args.block_steps or len(train_set) // batch  # default: one epoch a block

    # detcore: the plugin's Detector driven by core's Trainer (fit() saves a checkpoint at its end)
    torch.manual_seed(0)
    model = build(ctx, train_set.num_classes)
    trainer = Trainer(ctx, model, train_set)

    # bare: the same mmdet FCOS, its own DetDataPreprocessor (no LSJ batch pad), model.loss,
    # parse_losses; the same loader settings, optimizer, schedule, clipping and start weights
    mmdet_cfg, dp_cfg = mmdet_model_config(cfg, train_set.num_classes)
    bare = build_mmdet(mmdet_cfg)
    bare.load_state_dict(model.model.state_dict())
    bare.train()
    dp_cfg = dict(dp_cfg)
    dp_cfg.pop("batch_augments", None)
    dp_cfg["bgr_to_rgb"] = False  # core's images are RGB already
    from mmdet.registry import MODELS

    preprocessor = MODELS.build(dp_cfg)
    bare_opt = build_optimizer(cfg, bare, 1)
    bare_sched = build_scheduler(bare_opt, cfg["scheduler"], 10**9)
    bare_loader, bare_sampler = train_loader(train_set, batch, workers, 0, 1, int(cfg["train"]["seed"]))
    clip = float(cfg["train"]["clip_grad"])
    bare_ckpt = work / "overhead" / "bare_last.pt"
    state = {"epoch": 0}

    def bare_samples(images, targets):
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        h, w = images.shape[-2:]
        out = []
        for t in targets:  # what mmdet's PackDetInputs gives for a letterboxed image
            sample = DetDataSample(metainfo={"img_shape": (h, w), "ori_shape": t["orig_size"],
                                             "scale_factor": (t["scale"], t["scale"]),
                                             "img_id": t["image_id"]})
            sample.gt_instances = InstanceData(bboxes=t["boxes"], labels=t["labels"])
            out.append(sample)
        return out

    def run_bare(steps: int) -> float:
        t0 = time.perf_counter()
        bare_sampler.set_epoch(state["epoch"])
        state["epoch"] += 1
        done = 0
        for images, targets in bare_loader:
            data = preprocessor({"inputs": list(images), "data_samples": bare_samples(images, targets)},
                                training=True)
            losses = bare(**data, mode="loss")
            loss, _ = bare.parse_losses(losses)
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(bare.parameters(), clip)
            bare_opt.step()
            bare_sched.step()
            done += 1
            if done >= steps:
                break
        torch.save({"model": bare.state_dict(), "optimizer": bare_opt.state_dict()}, bare_ckpt)
        return time.perf_counter() - t0

    def run_detcore(steps: int) -> float:
        t0 = time.perf_counter()
        trainer.total_steps = trainer.global_step + steps
        trainer.fit()
        return time.perf_counter() - t0

    log(f"overhead: {args.rounds} rounds of {block} steps x batch {batch} each side "
        f"(+1 warm-up round), input {cfg['data']['input_size']}, workers {workers}")
    run_detcore(min(2, block))  # warm-up: allocator, threads, first checkpoint
    run_bare(min(2, block))
    if trainer.step_in_epoch:
        trainer._end_epoch()  # measured blocks start at an epoch start, as the bare loop's do
    pairs = []
    for r in range(args.rounds):
        order = (("detcore", run_detcore), ("bare", run_bare))
        if r % 2:
            order = order[::-1]  # alternate who goes first
        times = {name: fn(block) for name, fn in order}
        pairs.append(times)
        ratio = times["bare"] / times["detcore"]
        log(f"  round {r + 1}: detcore {block * batch / times['detcore']:.2f} img/s, bare "
            f"{block * batch / times['bare']:.2f} img/s, ratio {ratio:.3f}")
    det_s = sum(p["detcore"] for p in pairs)
    bare_s = sum(p["bare"] for p in pairs)
    images = args.rounds * block * batch
    return {"detcore_img_per_s": round(images / det_s, 3), "bare_img_per_s": round(images / bare_s, 3),
            "ratio": round(bare_s / det_s, 4),
            "ratio_median_of_rounds": round(statistics.median(p["bare"] / p["detcore"] for p in pairs), 4),
            "rounds": args.rounds, "steps_per_block": block, "batch_size": batch,
            "torch_threads": args.threads,
            "input_size": cfg["data"]["input_size"], "workers": workers,
            "s_per_step_detcore": round(det_s / (args.rounds * block), 3),
            "per_round": [{k: round(v, 3) for k, v in p.items()} for p in pairs]}


# -- (a) learning ----------------------------------------------------------
def bench_learning(args, work: Path, log, s_per_step: float | None) -> dict:
    sets = [f"train.max_minutes={args.max_minutes}"]
    if args.quick:
        sets += QUICK_SETS + ["train.max_steps=6"]
    elif args.learn_epochs == "auto" and s_per_step:
        # size the cosine schedule to ~90% of the time cap at the measured step time, so the
        # learning rate has decayed when the cap is reached (bounded to 4..40 epochs)
        from detcore.config import resolve_config
        from detcore.plugins import Registry

        cfg = resolve_config(Registry().get_model(MODEL), None, list(args.set))[1]
        steps_per_epoch = int(cfg["data"]["synthetic"]["num_train"]) // int(cfg["data"]["batch_size"])
        epochs = int(0.9 * 60 * args.max_minutes / (s_per_step * steps_per_epoch))
        sets.append(f"train.epochs={max(4, min(40, epochs))}")
    elif args.learn_epochs != "auto":
        sets.append(f"train.epochs={int(args.learn_epochs)}")
    sets += args.set
    result = cli(["--task", "train", *set_args(sets)], work / "learn", log, args.threads)
    m = result["metrics"]
    return {"bbox_mAP_50": m.get("bbox_mAP_50"), "bbox_mAP": m.get("bbox_mAP"),
            "bbox_mAP_75": m.get("bbox_mAP_75"), "steps": m.get("steps"),
            "final_loss": m.get("final_loss"), "train_fps": result.get("fps"),
            "wall_s": result["_wall_s"], "checkpoint": result["artifacts"]["checkpoint"],
            "command": result["_command"]}


# -- (c) offline inference --------------------------------------------------
def bench_infer(args, work: Path, log, weights: str | None) -> dict:
    import numpy as np
    import torch

    from detcore.checkpoint import load_checkpoint, load_model_weights
    from detcore.export import export_onnx
    from detcore.plugins import Registry
    from detcore.runner import RunOptions, prepare
    from detcore.tasks import build, dataset

    torch.set_num_threads(args.infer_threads)
    sets = [*(QUICK_SETS if args.quick else []), *args.set]
    ctx = prepare(Registry(), RunOptions(model=MODEL, task="export", device="cpu",
                                         work_dir=str(work / "export"), sets=tuple(sets),
                                         progress=False, patches="off"))
    val = dataset(ctx, "val")
    model = build(ctx, val.num_classes)
    if weights:
        load_model_weights(model, load_checkpoint(Path(weights)), weights, finetune=False)
    else:
        log("infer: no trained weights, timing a freshly initialised model")
    model.eval()
    h, w = ctx.config["data"]["input_size"]
    onnx_path = work / "export" / "fcos_dynamic.onnx"
    sample = torch.stack([val[i][0] for i in range(2)]).float() / 255
    info = export_onnx(model, onnx_path, (h, w), 2, int(ctx.config["export"]["opset"]), True,
                       sample=sample)
    log(f"exported {onnx_path} (parity {info['parity_max_abs_diff']})")

    n = min(len(val), args.infer_images)
    images = torch.stack([val[i][0] for i in range(n)]).float() / 255
    rows = []
    for bs in args.batch_sizes:
        result = cli(["--task", "infer", "--weights", onnx_path, "--batch-size", bs, *set_args(sets)],
                     work / f"infer_bs{bs}", log, args.infer_threads)
        with torch.inference_mode():
            model(images[:bs])  # warm-up
            t0 = time.perf_counter()
            done = 0
            for lo in range(0, n, bs):
                chunk = images[lo:lo + bs]
                model(chunk)
                done += len(chunk)
            eager_fps = done / (time.perf_counter() - t0)
        rows.append({"batch_size": bs, "bbox_mAP": result["metrics"]["bbox_mAP"],
                     "bbox_mAP_50": result["metrics"]["bbox_mAP_50"],
                     "onnxruntime_fps": result["fps"],
                     "onnxruntime_end_to_end_fps": result["metrics"]["end_to_end_fps"],
                     "pytorch_eager_fps": round(eager_fps, 3), "command": result["_command"]})
        log(f"  batch {bs}: onnxruntime {result['fps']} img/s, eager {eager_fps:.2f} img/s, "
            f"mAP {result['metrics']['bbox_mAP']}")
    return {"input_size": [h, w], "val_images": len(val), "eager_images": n,
            "torch_threads": args.infer_threads,
            "weights": weights, "onnx": str(onnx_path), "parity": info["parity_max_abs_diff"],
            "rows": rows}


# -- report ----------------------------------------------------------------
def markdown(report: dict) -> str:
    lines = []
    if "overhead" in report:
        o = report["overhead"]
        lines += [f"Training throughput, {o['input_size']} batch {o['batch_size']}, {o['rounds']} "
                  f"alternating rounds of {o['steps_per_block']} steps, {o['torch_threads']} thread(s):",
                  "", "| training throughput (CPU) | images/s |", "|---|---|",
                  f"| detcore (Trainer + FCOSDetector) | {o['detcore_img_per_s']} |",
                  f"| bare loop (mmdet FCOS) | {o['bare_img_per_s']} |",
                  f"| **ratio detcore / bare** | **{o['ratio']}** (median of rounds "
                  f"{o['ratio_median_of_rounds']}; target >= 0.95) |", ""]
    if "learning" in report:
        a = report["learning"]
        lines += ["| learning (synthetic shapes, smoke) | value |", "|---|---|",
                  f"| bbox mAP@0.5 | **{a['bbox_mAP_50']}** (aim >= 0.5) |",
                  f"| bbox mAP@[.5:.95] | {a['bbox_mAP']} |",
                  f"| steps / wall time | {a['steps']} / {a['wall_s']} s |", ""]
    if "infer" in report:
        c = report["infer"]
        h, w = c["input_size"]
        lines += [f"Offline inference, {h}x{w}, synthetic val ({c['val_images']} images), CPU "
                  f"(PyTorch {c['torch_threads']} threads, onnxruntime default):", "",
                  "| device | Batch Size | dataset | mAP | mAP@0.5 | onnxruntime img/s | "
                  "PyTorch eager img/s |", "|---|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| CPU | {r['batch_size']} | synthetic | {r['bbox_mAP']} | "
                         f"{r['bbox_mAP_50']} | {r['onnxruntime_fps']} | {r['pytorch_eager_fps']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="everything small, < 2 minutes")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    parser.add_argument("--out", type=Path, default=Path("work_dirs/bench/fcos_bench.json"))
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--max-minutes", type=float, default=10.0, help="(a) training time cap")
    parser.add_argument("--learn-epochs", default="auto", help="(a) epochs, or auto (from (b))")
    parser.add_argument("--rounds", type=int, default=3, help="(b) measured block pairs")
    parser.add_argument("--block-steps", type=int, default=0, help="(b) steps a block (0: an epoch)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--infer-images", type=int, default=32, help="(c) images timed in eager")
    parser.add_argument("--weights", help="(c) checkpoint to export (default: the one from (a))")
    parser.add_argument("--set", action="append", default=[], help="extra --set for every part")
    parser.add_argument("--threads", type=int, default=1, help="(a), (b) intra-op threads")
    parser.add_argument("--infer-threads", type=int, default=os.cpu_count() or 1,
                        help="(c) PyTorch intra-op threads")
    args = parser.parse_args(argv)
    parts = args.only or list(PARTS)
    if args.quick:
        args.max_minutes = min(args.max_minutes, 0.5)
        args.rounds, args.block_steps = 2, 2
        args.batch_sizes = [1, 4]
        args.infer_images = 8
    os.environ.setdefault("DETCORE_LOG", "WARNING")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fcos-bench-"))
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    report: dict = {"model": MODEL, "quick": args.quick, "work_dir": str(work),
                    "threads": args.threads, "infer_threads": args.infer_threads,
                    "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])])}
    s_per_step = None
    if "overhead" in parts:
        report["overhead"] = bench_overhead(args, work, log)
        s_per_step = report["overhead"]["s_per_step_detcore"]
    weights = args.weights
    if "learning" in parts:
        report["learning"] = bench_learning(args, work, log, s_per_step)
        weights = weights or report["learning"]["checkpoint"]
    if "infer" in parts:
        report["infer"] = bench_infer(args, work, log, weights)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(markdown(report))
    print(f"JSON: {args.out}  (total {report['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
