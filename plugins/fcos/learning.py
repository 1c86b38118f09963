#!/usr/bin/env python
"""FCOS (mmdet 3.3.0) through detcore's CLI: its learning and offline-inference runs (CPU).

(a) learning  ``detcore run --model fcos --task train`` (smoke: R18, 192x192, batch 8, AdamW 1e-3)
              on core's synthetic shapes, capped by ``train.max_minutes`` (10); reports bbox
              mAP@0.5 (aim: >= 0.5).
(b) infer     the model from (a) exported by ``detcore run --task export`` with a dynamic batch,
              then ``detcore run --task infer --engine onnxruntime --batch-size B`` for B in 1,
              4, 8, 16: COCO mAP (the same at every batch size) and the engine's images/s, as
              core reports them in result.json (the reference's ``ais_bench`` per batch size).

Training throughput against mmengine's own ``train_step`` is not measured here: ``detcore bench
--models fcos`` times core's ``Trainer.step`` against this plugin's ``baseline_train_step``
hook, and also times PyTorch eager against onnxruntime per batch size.

Prints markdown tables and writes JSON (``--out``). ``--quick`` runs both small in about 2
minutes (its mAP is not meaningful: it checks the plumbing). Run it under
``flock /tmp/detcore-bench.lock`` on a shared machine.

    python plugins/fcos/learning.py --quick
    python plugins/fcos/learning.py                   # full: ~15 minutes on 2 cores
    python plugins/fcos/learning.py --only infer --weights work_dirs/fcos/train/checkpoints/last.pt
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

MODEL = "fcos"
PARTS = ("learning", "infer")
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


# -- (a) learning ----------------------------------------------------------
def bench_learning(args, work: Path, log) -> dict:
    sets = [f"train.max_minutes={args.max_minutes}"]
    if args.quick:
        sets += QUICK_SETS + ["train.max_steps=6"]
    elif args.learn_epochs:
        sets.append(f"train.epochs={int(args.learn_epochs)}")
    sets += args.set
    result = cli(["--task", "train", *set_args(sets)], work / "learn", log, args.threads)
    m = result["metrics"]
    return {"bbox_mAP_50": m.get("bbox_mAP_50"), "bbox_mAP": m.get("bbox_mAP"),
            "bbox_mAP_75": m.get("bbox_mAP_75"), "steps": m.get("steps"),
            "final_loss": m.get("final_loss"), "train_fps": result.get("fps"),
            "wall_s": result["_wall_s"], "checkpoint": result["artifacts"]["checkpoint"],
            "command": result["_command"]}


# -- (b) offline inference --------------------------------------------------
def bench_infer(args, work: Path, log, weights: str | None) -> dict:
    if not weights:
        raise SystemExit("infer needs a checkpoint: run learning too or pass --weights")
    sets = [*(QUICK_SETS if args.quick else []), *args.set]
    exported = cli(["--task", "export", "--weights", weights, "--set", "export.dynamic_batch=true",
                    *set_args(sets)], work / "export", log, args.infer_threads)
    onnx_path = exported["artifacts"]["onnx"]
    parity = {k: v for k, v in exported["metrics"].items() if k.startswith("parity_")}
    log(f"exported {onnx_path} ({parity})")
    rows = []
    for bs in args.batch_sizes:
        result = cli(["--task", "infer", "--engine", "onnxruntime", "--weights", onnx_path,
                      "--batch-size", bs, *set_args(sets)], work / f"infer_bs{bs}", log,
                     args.infer_threads)
        m = result["metrics"]
        rows.append({"batch_size": bs, "bbox_mAP": m["bbox_mAP"], "bbox_mAP_50": m["bbox_mAP_50"],
                     "onnxruntime_fps": result["fps"],
                     "onnxruntime_end_to_end_fps": m.get("end_to_end_fps"),
                     "command": result["_command"]})
        log(f"  batch {bs}: onnxruntime {result['fps']} img/s, mAP {m['bbox_mAP']}")
    return {"weights": weights, "onnx": onnx_path, "parity": parity,
            "threads": args.infer_threads, "export_command": exported["_command"], "rows": rows}


# -- report ----------------------------------------------------------------
def markdown(report: dict) -> str:
    lines = []
    if "learning" in report:
        a = report["learning"]
        lines += ["| learning (synthetic shapes, smoke) | value |", "|---|---|",
                  f"| bbox mAP@0.5 | **{a['bbox_mAP_50']}** (aim >= 0.5) |",
                  f"| bbox mAP@[.5:.95] | {a['bbox_mAP']} |",
                  f"| steps / wall time | {a['steps']} / {a['wall_s']} s |", ""]
    if "infer" in report:
        c = report["infer"]
        lines += [f"Offline inference, synthetic val, CPU (onnxruntime, "
                  f"OMP_NUM_THREADS={c['threads']}):",
                  "", "| device | Batch Size | dataset | mAP | mAP@0.5 | onnxruntime img/s |",
                  "|---|---|---|---|---|---|"]
        for r in c["rows"]:
            lines.append(f"| CPU | {r['batch_size']} | synthetic | {r['bbox_mAP']} | "
                         f"{r['bbox_mAP_50']} | {r['onnxruntime_fps']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="both parts small, about 2 minutes")
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    parser.add_argument("--out", type=Path, default=Path("work_dirs/bench/fcos_learning.json"))
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--max-minutes", type=float, default=10.0, help="(a) training time cap")
    parser.add_argument("--learn-epochs", type=int, default=0,
                        help="(a) train.epochs (0: the smoke config's 9)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--weights", help="(b) checkpoint to export (default: the one from (a))")
    parser.add_argument("--set", action="append", default=[], help="extra --set for every part")
    parser.add_argument("--threads", type=int, default=1, help="(a) OMP_NUM_THREADS")
    parser.add_argument("--infer-threads", type=int, default=os.cpu_count() or 1,
                        help="(b) OMP_NUM_THREADS for export and inference")
    args = parser.parse_args(argv)
    parts = args.only or list(PARTS)
    if args.quick:
        args.max_minutes = min(args.max_minutes, 0.5)
        args.batch_sizes = [1, 4]
    os.environ.setdefault("DETCORE_LOG", "WARNING")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="fcos-learning-"))
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    report: dict = {"model": MODEL, "quick": args.quick, "work_dir": str(work),
                    "threads": args.threads, "infer_threads": args.infer_threads,
                    "args": {k: str(v) for k, v in vars(args).items()}}
    weights = args.weights
    if "learning" in parts:
        report["learning"] = bench_learning(args, work, log)
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
