#!/usr/bin/env python
"""EfficientDet-D0 through detcore's CLI: the model-specific learning and export runs (CPU).

(a) learning  ``detcore run --task train --config smoke`` on core's synthetic shapes, capped
              by ``train.max_minutes``; reports bbox mAP@0.5 (aim: >= 0.5).
(b) parity    the model from (a) exported by ``detcore run --task export`` with
              ``eval.score_threshold=0`` (all 100 slots count) and a batch of validation
              images; reports core's parity metrics from its result.json (PyTorch vs
              onnxruntime over detections matched one to one, and the unmatched count).

Training throughput against effdet's own ``DetBenchTrain`` step is not measured here:
``detcore bench --models efficientdet-d0`` times core's ``Trainer.step`` against this
plugin's ``baseline_train_step`` hook. detcore's evaluation next to effdet's own evaluator
(``validate.py``'s pipeline, same weights, same images) is ``upstream_eval.py`` beside this file.

Prints a markdown table and writes JSON. ``--quick`` runs both small in about 2 minutes
(its mAP is not meaningful: it checks the plumbing).

    python plugins/efficientdet/learning.py --quick
    python plugins/efficientdet/learning.py --threads 2     # full: ~12 minutes on 2 cores
    python plugins/efficientdet/learning.py --only parity --checkpoint W.pt
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "efficientdet-d0"


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
    if quick:  # 128x128, 32 training images, batch 4
        return ["--config", "tiny", "--set", "data.synthetic.num_train=32"]
    return ["--config", "smoke"]


def learning(args, work: Path, log) -> dict:
    extra = ["--set", f"train.max_minutes={args.max_minutes}"]
    if args.quick:
        extra += ["--set", "train.epochs=3"]
    result = cli(["--task", "train", *config_args(args.quick), *extra], work / "learn", log)
    m = result["metrics"]
    return {"bbox_mAP_50": m.get("bbox_mAP_50"), "bbox_mAP": m.get("bbox_mAP"),
            "steps": m.get("steps"), "final_loss": m.get("final_loss"), "fps": result.get("fps"),
            "wall_s": result["_wall_s"], "checkpoint": result["artifacts"]["checkpoint"],
            "command": result["_command"]}


def parity(args, work: Path, checkpoint: str, log) -> dict:
    # every one of the 100 detection slots is compared, not only those above eval.score_threshold;
    # the export batch is the number of validation images core's check runs on
    result = cli(["--task", "export", *config_args(args.quick), "--set", "eval.score_threshold=0.0",
                  "--batch-size", str(args.parity_images), "--weights", checkpoint],
                 work / "export", log)
    metrics = {k: v for k, v in result["metrics"].items() if k.startswith("parity_")}
    return {**metrics, "images": args.parity_images, "onnx": result["artifacts"]["onnx"],
            "outputs": result["artifacts"].get("onnx_outputs"), "command": result["_command"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="both parts small, about 2 minutes")
    p.add_argument("--only", choices=["learning", "parity"], action="append",
                   help="run only these parts (repeatable); parity needs learning's checkpoint "
                        "or --checkpoint")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training cap for (a) (default 10, quick 0.4)")
    p.add_argument("--parity-images", type=int, default=None,
                   help="validation images for (b), the export batch (default 16, quick 4)")
    p.add_argument("--checkpoint", help="a trained checkpoint for (b) instead of (a)'s")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS for the CLI runs (default 1: on a small shared CPU, "
                        "OpenMP threads waiting on busy cores slow every step down by an order "
                        "of magnitude; 0: torch's default)")
    p.add_argument("--work-dir", default=None, help="default: a new temporary folder")
    p.add_argument("--json", dest="json_path", default="work_dirs/bench/efficientdet_learning.json")
    args = p.parse_args(argv)
    q = args.quick
    args.max_minutes = args.max_minutes if args.max_minutes is not None else (0.4 if q else 10.0)
    args.parity_images = args.parity_images or (4 if q else 16)
    parts = args.only or ["learning", "parity"]
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the CLI runs
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effdet-learning-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    out: dict = {"model": MODEL, "mode": "quick" if q else "full", "work_dir": str(work),
                 "args": {k: v for k, v in vars(args).items()}}
    checkpoint = args.checkpoint
    if "learning" in parts:
        out["learning"] = learning(args, work, log)
        checkpoint = checkpoint or out["learning"]["checkpoint"]
        log(f"learning: {out['learning']}")
    if "parity" in parts:
        if not checkpoint:
            raise SystemExit("parity needs a checkpoint: run learning too or pass --checkpoint")
        out["parity"] = parity(args, work, checkpoint, log)
        log(f"parity: {out['parity']}")
    out["wall_s"] = round(time.perf_counter() - t_start, 1)

    rows = []
    if "learning" in out:
        lr = out["learning"]
        rows.append(("(a) learning: bbox mAP@0.5", f"{lr['bbox_mAP_50']}", ">= 0.5",
                     f"{lr['steps']} steps, {lr['wall_s']}s, mAP {lr['bbox_mAP']}"))
    if "parity" in out:
        pa = out["parity"]
        diffs = ", ".join(f"{k[len('parity_max_abs_diff_'):]} {v:.3g}" for k, v in pa.items()
                          if k.startswith("parity_max_abs_diff_"))
        rows.append(("(b) export parity (core's): max abs diff of matched detections", diffs,
                     "small", f"{pa.get('parity_unmatched', 'n/a')} unmatched, "
                              f"{pa['images']} val images x 100 slots"))
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
