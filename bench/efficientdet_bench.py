#!/usr/bin/env python
"""EfficientDet-D0 through detcore: learning, training overhead and export parity (CPU).

(a) learning   ``detcore run --task train --config smoke`` on the synthetic shapes, capped
               by ``train.max_minutes``; reports bbox mAP@0.5 (aim: >= 0.5).
(b) overhead   detcore's training throughput (core's Trainer step and loader, the plugin's
               Detector, the per-epoch checkpoint) divided by a bare loop running effdet's own
               ``DetBenchTrain`` step (the plugin's ``baseline_train_step`` hook) on the same
               weights, data, batch and optimizer; one process, the two interleaved step by
               step (A B B A ...) so background load hits both alike (aim: >= 0.95).
(c) parity     the model from (a) exported by ``detcore run --task export`` (with
               ``eval.score_threshold=0`` so all 100 slots count); max abs difference of matched
               detections, PyTorch vs onnxruntime, on validation images (and core's figure).

Prints a markdown table and writes JSON. ``--quick`` runs everything small in < 2 minutes
(its mAP is not meaningful: it checks the plumbing).

    python bench/efficientdet_bench.py --quick
    python bench/efficientdet_bench.py                      # full: ~20 minutes on 2 cores
    python bench/efficientdet_bench.py --only overhead --rounds 5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "efficientdet-d0"


# -- helpers ---------------------------------------------------------------
def cli(args: list[str], work: Path, log) -> dict:
    """Run ``detcore run ...`` as a user would; return its result.json."""
    cmd = [sys.executable, "-m", "detcore.cli", "run", "--model", MODEL, "--device", "cpu",
           "--no-progress", "--work-dir", str(work), *args]
    log(f"$ detcore run --model {MODEL} --device cpu --no-progress --work-dir {work} {' '.join(args)}")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    result = json.loads((work / "result.json").read_text())
    result["_wall_s"] = round(time.perf_counter() - t0, 1)
    result["_command"] = "detcore run " + " ".join(cmd[4:])
    return result


def config_args(quick: bool) -> list[str]:
    if quick:  # 128x128, 16 training images, batch 4
        return ["--config", "tiny", "--set", "data.synthetic.num_train=32"]
    return ["--config", "smoke"]


# -- (a) learning ----------------------------------------------------------
def bench_learning(args, work: Path, log) -> dict:
    extra = ["--set", f"train.max_minutes={args.max_minutes}"]
    if args.quick:
        extra += ["--set", "train.epochs=3"]
    result = cli(["--task", "train", *config_args(args.quick), *extra], work / "learn", log)
    m = result["metrics"]
    return {"bbox_mAP_50": m.get("bbox_mAP_50"), "bbox_mAP": m.get("bbox_mAP"),
            "steps": m.get("steps"), "final_loss": m.get("final_loss"), "fps": result.get("fps"),
            "wall_s": result["_wall_s"], "checkpoint": result["artifacts"]["checkpoint"],
            "command": result["_command"]}


# -- (b) overhead ----------------------------------------------------------
def bench_overhead(args, work: Path, log) -> dict:
    """detcore's step vs effdet's own step, interleaved one step at a time.

    detcore side: core's ``Trainer`` over the plugin's Detector, fed by the Trainer's own
    loader (core's sampler, dataset, collate) and stepped with ``Trainer._step`` (device
    placement, autocast, loss sum, finiteness check, backward, optimizer and scheduler
    step, loss read-back), plus the checkpoint core writes at each epoch end. Bare side:
    effdet's ``DetBenchTrain`` step (the plugin's ``baseline_train_step`` hook) on a copy
    of the same weights with the same optimizer, fed by a plain ``DataLoader`` over the
    same dataset and batch. Steps alternate A B B A ..., each timed from fetching its
    batch to the end of its update, so background load hits both sides alike.
    """
    import copy

    import torch
    from torch.utils.data import DataLoader

    from detcore.data.coco import collate
    from detcore.plugins import Registry
    from detcore.runner import RunOptions, prepare
    from detcore.tasks import build, dataset
    from detcore.train.optim import default_optimizer
    from detcore.train.trainer import Trainer, seed_everything

    cfg_args = config_args(args.quick)
    config_name = cfg_args[1]
    sets = ["train.log_interval=1000000", "train.eval_after=false",
            *[a for a in cfg_args[2:] if a != "--set"]]
    opts = RunOptions(model=MODEL, task="train", config=config_name, device="cpu",
                      work_dir=str(work / "overhead"), sets=tuple(sets), progress=False)
    ctx = prepare(Registry(), opts)
    cfg = ctx.config
    seed_everything(0, False)
    train_set = dataset(ctx, "train", train=True)
    batch, workers = int(cfg["data"]["batch_size"]), int(cfg["data"]["workers"])

    torch.manual_seed(0)
    model = build(ctx, train_set.num_classes)
    bare_model = copy.deepcopy(model)
    trainer = Trainer(ctx, model, train_set)
    bare_opt = (ctx.hook.build_optimizer(spec=ctx.spec, config=cfg, model=bare_model)
                or default_optimizer(bare_model, cfg, 1))
    bare_step = ctx.hook.baseline_train_step(spec=ctx.spec, config=cfg, model=bare_model,
                                             optimizer=bare_opt)
    bare_loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=workers,
                             collate_fn=collate, drop_last=True)
    steps_per_epoch = min(len(trainer.loader), len(bare_loader))
    epochs = args.rounds
    log(f"overhead: {config_name}, batch {batch}, {epochs} epoch(s) of {steps_per_epoch} steps, "
        f"steps interleaved, {torch.get_num_threads()} thread(s), {workers} loader workers")

    def detcore_steps(epoch: int):
        train_set.set_epoch(epoch, int(cfg["train"]["seed"]))
        trainer.sampler.set_epoch(epoch)
        trainer.ddp.train()
        for b in trainer.loader:
            yield lambda b=b: trainer._step(b)

    def bare_steps():
        for images, targets in bare_loader:
            yield lambda i=images, t=targets: float(bare_step(i.float().div_(255), t))

    def timed(gen):
        """Time fetching the next batch plus running its step."""
        t0 = time.perf_counter()
        run = next(gen)
        run()
        return time.perf_counter() - t0

    # warm-up: two steps each (first-call allocations, worker start-up)
    warm_d, warm_b = detcore_steps(10_000), bare_steps()  # an epoch number no run reaches
    for _ in range(2):
        timed(warm_d), timed(warm_b)
    del warm_d, warm_b

    det_s, bare_s, ckpt_s, pairs = [], [], [], []
    for epoch in range(epochs):
        gen_d, gen_b = detcore_steps(epoch), bare_steps()
        for i in range(steps_per_epoch):
            if i % 2 == 0:
                d = timed(gen_d)
                b = timed(gen_b)
            else:
                b = timed(gen_b)
                d = timed(gen_d)
            det_s.append(d)
            bare_s.append(b)
            pairs.append(b / d)
        del gen_d, gen_b
        t0 = time.perf_counter()
        trainer.save()  # core's end-of-epoch checkpoint
        ckpt_s.append(time.perf_counter() - t0)
        log(f"  epoch {epoch + 1}: detcore {sum(det_s[-steps_per_epoch:]):.1f}s + checkpoint "
            f"{ckpt_s[-1]:.2f}s, bare {sum(bare_s[-steps_per_epoch:]):.1f}s")
    det_total, bare_total = sum(det_s) + sum(ckpt_s), sum(bare_s)
    images = len(det_s) * batch
    return {"ratio": round(bare_total / det_total, 4),
            "ratio_steps_only": round(sum(bare_s) / sum(det_s), 4),
            "ratio_median_of_pairs": round(statistics.median(pairs), 4),
            "detcore_img_s": round(images / det_total, 3), "bare_img_s": round(images / bare_total, 3),
            "detcore_step_median_s": round(statistics.median(det_s), 4),
            "bare_step_median_s": round(statistics.median(bare_s), 4),
            "checkpoint_s_per_epoch": round(statistics.mean(ckpt_s), 3),
            "epochs": epochs, "steps": len(det_s), "batch_size": batch,
            "threads": torch.get_num_threads(), "loader_workers": workers, "config": config_name}


# -- (c) parity ------------------------------------------------------------
def bench_parity(args, work: Path, checkpoint: str, log) -> dict:
    import torch

    from detcore.checkpoint import load_checkpoint, load_model_weights
    from detcore.config import resolve_config
    from detcore.data.coco import CocoDetection
    from detcore.infer import OnnxRuntimeEngine
    from detcore.data.synthetic import SynthSpec, ensure_synthetic
    from detcore.plugins import Registry
    from detcore_efficientdet.parity import matched_parity

    # every one of the 100 detection slots is compared, not only those above eval.score_threshold
    cfg_args = config_args(args.quick) + ["--set", "eval.score_threshold=0.0"]
    result = cli(["--task", "export", *cfg_args, "--weights", checkpoint], work / "export", log)
    onnx_path = result["artifacts"]["onnx"]

    registry = Registry()
    spec = registry.get_model(MODEL)
    _, cfg = resolve_config(spec, cfg_args[1], [a for a in cfg_args[2:] if a != "--set"])
    state = load_checkpoint(Path(checkpoint))
    model = registry.hook.build_model(spec=spec, config=cfg, num_classes=state["num_classes"])
    load_model_weights(model, state, checkpoint, finetune=False)
    model.eval()
    val = CocoDetection(ensure_synthetic(SynthSpec(**cfg["data"]["synthetic"])), "val",
                        cfg["data"]["input_size"])
    engine = OnnxRuntimeEngine(onnx_path)
    refs, gots = [], []
    for i in range(min(args.parity_images, len(val))):
        x = val[i][0][None].float() / 255
        with torch.no_grad():
            refs.append(model.export_forward(x).numpy())
        gots.append(engine(x.numpy())["detections"])
    import numpy as np

    ref, got = np.concatenate(refs), np.concatenate(gots)
    par = matched_parity(ref, got, max_match_dist=1.0)
    confident = matched_parity(ref, got, min_score=0.3, max_match_dist=1.0)
    return {"matched_max_abs_diff": par["max_abs_diff"], "matched": par["matched"],
            "unmatched": par["unmatched_ref"] + par["unmatched_got"],
            "matched_max_abs_diff_score_gt_0.3": confident["max_abs_diff"],
            "matched_score_gt_0.3": confident["matched"],
            "unmatched_score_gt_0.3": confident["unmatched_ref"] + confident["unmatched_got"],
            "slotwise_max_abs_diff": par["slotwise_max_abs_diff"],
            "core_parity_max_abs_diff": result["metrics"].get("parity_max_abs_diff_detections"),
            "images": len(refs), "onnx": onnx_path, "command": result["_command"]}


# -- main ------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small everything, < 2 minutes")
    p.add_argument("--only", choices=["learning", "overhead", "parity"], action="append",
                   help="run only these parts (repeatable); parity needs learning's checkpoint "
                        "or --checkpoint")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training cap for (a) (default 10, quick 0.4)")
    p.add_argument("--rounds", type=int, default=None,
                   help="overhead: epochs of interleaved steps (default 3)")
    p.add_argument("--parity-images", type=int, default=None, help="default 16, quick 4")
    p.add_argument("--checkpoint", help="a trained checkpoint for (c) instead of (a)'s")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, here and in the CLI runs (default 1: on a small "
                        "shared CPU, OpenMP threads waiting on busy cores slow every step down "
                        "by an order of magnitude; 0: torch's default)")
    p.add_argument("--work-dir", default=None, help="default: a new temporary folder")
    p.add_argument("--json", dest="json_path", default="work_dirs/bench/efficientdet_bench.json")
    args = p.parse_args(argv)
    q = args.quick
    args.max_minutes = args.max_minutes if args.max_minutes is not None else (0.4 if q else 10.0)
    args.rounds = args.rounds or 3
    args.parity_images = args.parity_images or (4 if q else 16)
    parts = args.only or ["learning", "overhead", "parity"]
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the CLI subprocesses too
        import torch

        torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effdet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    out: dict = {"model": MODEL, "mode": "quick" if q else "full", "work_dir": str(work),
                 "argv": sys.argv[1:]}
    checkpoint = args.checkpoint
    if "learning" in parts:
        out["learning"] = bench_learning(args, work, log)
        checkpoint = checkpoint or out["learning"]["checkpoint"]
        log(f"learning: {out['learning']}")
    if "overhead" in parts:
        out["overhead"] = bench_overhead(args, work, log)
        log(f"overhead: {out['overhead']}")
    if "parity" in parts:
        if not checkpoint:
            raise SystemExit("parity needs a checkpoint: run learning too or pass --checkpoint")
        out["parity"] = bench_parity(args, work, checkpoint, log)
        log(f"parity: {out['parity']}")
    out["wall_s"] = round(time.perf_counter() - t_start, 1)

    rows = []
    if "learning" in out:
        lr = out["learning"]
        rows.append(("(a) learning: bbox mAP@0.5", f"{lr['bbox_mAP_50']}",
                     ">= 0.5", f"{lr['steps']} steps, {lr['wall_s']}s, mAP {lr['bbox_mAP']}"))
    if "overhead" in out:
        ov = out["overhead"]
        rows.append(("(b) overhead: detcore / bare throughput", f"{ov['ratio']}", ">= 0.95",
                     f"{ov['detcore_img_s']} vs {ov['bare_img_s']} img/s over {ov['steps']} interleaved "
                     f"steps x {ov['batch_size']} (incl. {ov['checkpoint_s_per_epoch']}s checkpoint an "
                     f"epoch); steps only {ov['ratio_steps_only']}, median of pairs "
                     f"{ov['ratio_median_of_pairs']}"))
    if "parity" in out:
        pa = out["parity"]
        rows.append(("(c) export parity: matched max abs diff", f"{pa['matched_max_abs_diff']:.3g}",
                     "small", f"{pa['matched']} matched, {pa['unmatched']} unmatched; score>0.3: "
                              f"{pa['matched_max_abs_diff_score_gt_0.3']:.3g}; core (matched) "
                              f"{pa['core_parity_max_abs_diff']:.3g}"))
    print("\n| measure | value | target | detail |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nwrote {path} ({out['wall_s']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
