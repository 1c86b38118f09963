#!/usr/bin/env python3
"""SOLOv2 (detcore-solov2) through detcore's CLI: the model-specific learning run (CPU). Not a test.

``solov2-light --config smoke`` trained through the real CLI on core's synthetic shapes for
at most ``--minutes`` (``train.max_minutes``); reports segm mAP@0.5 (aim >= 0.4).

Training throughput against mmengine's own ``train_step`` is not measured here: ``detcore
bench --models solov2-light`` times core's ``Trainer.step`` against this plugin's
``baseline_train_step`` hook.

Writes a Markdown table and a JSON file. Heavy: run it under the shared lock::

    flock /tmp/detcore-bench.lock python plugins/solov2/learning.py            # ~15 min
    flock /tmp/detcore-bench.lock python plugins/solov2/learning.py --quick    # < 2 min

``--quick`` checks the plumbing only (30 s of learning at 128 x 128): its figures are not
the benchmark's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODEL = "solov2-light"
CONFIG = "smoke"
TARGET = 0.4


def log(msg: str) -> None:
    print(f"[solov2_learning] {msg}", flush=True)


def learning(work: Path, minutes: float, sets: list[str]) -> dict:
    out = work / "learning"
    cmd = [sys.executable, "-m", "detcore.cli", "run", "--model", MODEL, "--config", CONFIG,
           "--task", "train", "--device", "cpu", "--work-dir", str(out), "--no-progress",
           "--set", f"train.max_minutes={minutes}", *[a for s in sets for a in ("--set", s)]]
    log("learning: " + " ".join(cmd[1:]))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"learning run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    m = result["metrics"]
    return {"command": " ".join(["detcore", *cmd[3:]]), "steps": m["steps"],
            "train_minutes_limit": minutes, "wall_s": round(wall, 1), "fps": result["fps"],
            "final_loss": m.get("final_loss"), "segm_mAP_50": m["segm_mAP_50"],
            "segm_mAP": m["segm_mAP"], "bbox_mAP_50": m["bbox_mAP_50"], "bbox_mAP": m["bbox_mAP"],
            "target_segm_mAP_50": TARGET, "met": m["segm_mAP_50"] >= TARGET}


def markdown(report: dict) -> str:
    a = report["learning"]
    return "\n".join([
        f"## SOLOv2 learning ({report['mode']}, {report['device']}, OMP_NUM_THREADS "
        f"{report['threads']}, {report['started']})", "", "| measure | value | target |",
        "|---|---|---|",
        f"| segm mAP@0.5 after {a['steps']} steps ({a['train_minutes_limit']} min limit, "
        f"{a['wall_s']} s wall) | {a['segm_mAP_50']:.3f} | >= {TARGET} "
        f"({'met' if a['met'] else 'not met'}) |",
        f"| segm mAP / bbox mAP@0.5 / bbox mAP | {a['segm_mAP']:.3f} / "
        f"{a['bbox_mAP_50']:.3f} / {a['bbox_mAP']:.3f} | |"]) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="plumbing check, < 2 min")
    ap.add_argument("--minutes", type=float, default=None, help="train.max_minutes (15)")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS of the training run (1: on a small shared CPU, 2 "
                         "threads contending with other jobs run ~3x slower than 1)")
    ap.add_argument("--work-dir", default="work_dirs/solov2_learning")
    ap.add_argument("--json", default=None, help="JSON output (default WORK_DIR/solov2_learning.json)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra --set for the run, e.g. train.epochs=10")
    args = ap.parse_args(argv)
    os.environ.setdefault("DETCORE_CACHE", "/tmp/dc_cache_solo")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the training run

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    quick_sets = ["data.input_size=[128,128]", "data.synthetic.num_val=16"] if args.quick else []
    sets = [*quick_sets, *args.sets]
    minutes = args.minutes if args.minutes is not None else (0.5 if args.quick else 15.0)
    report = {"mode": "quick" if args.quick else "full", "device": "cpu", "threads": args.threads,
              "model": MODEL, "config": CONFIG, "extra_sets": sets,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.perf_counter()
    report["learning"] = learning(work, minutes, sets)
    log(f"learning: {report['learning']}")
    report["duration_s"] = round(time.perf_counter() - t0, 1)
    table = markdown(report)
    path = Path(args.json) if args.json else work / "solov2_learning.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    path.with_suffix(".md").write_text(table)
    print(table)
    log(f"wrote {path} and {path.with_suffix('.md')} in {report['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
