#!/usr/bin/env python
"""Data-parallel scaling on this machine: N workers x 1 thread vs 1 worker x 1 thread.

Same model, config and per-worker batch (core sets data.workers to 0 when CPU ranks fill every
core, as they do here); runs ``detcore run --task perf`` (a fixed number of
steps, FPS only) alternately with --nproc 1 and --nproc N, ROUNDS times, and prints the median
global-throughput ratio per model. Usage::

    python dev/scaling.py --models efficientdet-d0,fcos,solov2 [--nproc 2] [--rounds 2] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def perf_fps(model: str, nproc: int, steps: int, port: int, sets: list[str]) -> float:
    with tempfile.TemporaryDirectory() as work:
        cmd = [sys.executable, "-m", "detcore.cli", "run", "--model", model, "--task", "perf",
               "--device", "cpu", "--work-dir", work, "--nproc", str(nproc), "--master-port",
               str(port), "--set", f"train.perf_steps={steps}", "--no-progress"]
        for item in sets:
            cmd += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DETCORE_LOG": "WARNING"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"{model} --nproc {nproc} failed: {proc.stderr.strip()[-500:]}")
        return json.loads((Path(work) / "result.json").read_text())["fps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="config override for every run, e.g. data.workers=0")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        single, multi = [], []
        for r in range(args.rounds):
            single.append(perf_fps(model, 1, args.steps, 29600 + r, args.sets))
            multi.append(perf_fps(model, args.nproc, args.steps, 29700 + r, args.sets))
        s, m = statistics.median(single), statistics.median(multi)
        rows.append({"model": model, "nproc": args.nproc, "fps_1": round(s, 2),
                     f"fps_{args.nproc}": round(m, 2), "ratio": round(m / s, 3),
                     "rounds": args.rounds, "steps": args.steps})
    print(f"| model | 1 worker img/s | {args.nproc} workers img/s | ratio |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['fps_1']} | {row[f'fps_{args.nproc}']} | {row['ratio']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
