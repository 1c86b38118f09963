#!/usr/bin/env python3
"""SOLOv2 (detcore-solov2) benchmarks on this machine's CPU. Not a test.

(a) learning: ``solov2-light --config smoke`` trained through the real CLI on the synthetic
    shapes for at most ``--minutes`` (``train.max_minutes``); reports segm mAP@0.5 (aim >= 0.4).
(b) overhead: core's training loop (``--task bench``) against a bare PyTorch loop over the
    same mmdet model, data, batch, optimizer and schedule, in interleaved blocks
    (core, bare, core, bare, ...); reports core fps / bare fps (target >= 0.95).
(c) patches: one ``--task bench`` run with the vendored patches off and one with them on;
    reports the step times.

Writes a Markdown table and a JSON file. Heavy: run it under the shared lock::

    flock /tmp/detcore-bench.lock python bench/solov2_bench.py            # ~25 min
    flock /tmp/detcore-bench.lock python bench/solov2_bench.py --quick    # < 2 min

``--quick`` checks the plumbing only (30 s of learning, 128 x 128, short blocks): its
figures are not the benchmark's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL = "solov2-light"
CONFIG = "smoke"


def log(msg: str) -> None:
    print(f"[solov2_bench] {msg}", flush=True)


# -- (a) learning -------------------------------------------------------------------
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
            "target_segm_mAP_50": 0.4, "met": m["segm_mAP_50"] >= 0.4}


# -- (b) overhead and (c) patches ----------------------------------------------------------
def core_block(sets: list[str], steps: int, warmup: int, patches: str) -> float:
    """Images/s of core's loop (``--task bench``: warm-up steps excluded from the timing)."""
    from detcore.plugins import Registry
    from detcore.runner import RunOptions, run

    work = Path(os.environ["SOLOV2_BENCH_WORK"]) / "core"
    result = run(Registry(), RunOptions(
        model=MODEL, config=CONFIG, task="bench", device="cpu", work_dir=str(work),
        sets=(*sets, f"train.bench_steps={steps}", f"train.warmup_fps_steps={warmup}",
              "train.log_interval=1000"), patches=patches, progress=False))
    return float(result["fps"])


def bare_block(sets: list[str], steps: int, warmup: int) -> float:
    """Images/s of a bare loop: same model, data, loader, batch, optimizer, schedule, clipping."""
    import torch

    from detcore.config import resolve_config
    from detcore.data.coco import CocoDetection
    from detcore.plugins import Registry
    from detcore.runner import synthetic_root
    from detcore.train.loader import train_loader
    from detcore.train.optim import build_scheduler, default_optimizer
    from detcore.train.trainer import seed_everything

    registry = Registry()
    spec = registry.get_model(MODEL)
    _, cfg = resolve_config(spec, CONFIG, list(sets))
    seed = int(cfg["train"]["seed"])
    seed_everything(seed, False)
    dcfg = cfg["data"]
    data = CocoDetection(synthetic_root(cfg), "train", dcfg["input_size"], masks=True,
                         hflip_prob=float(dcfg["hflip"]), train=True)
    model = registry.hook.build_model(spec=spec, config=cfg, num_classes=data.num_classes)
    batch_size = int(dcfg["batch_size"])
    optimizer = default_optimizer(model, cfg, 1)
    scheduler = build_scheduler(optimizer, cfg["scheduler"], steps + warmup)
    loader, sampler = train_loader(data, batch_size, int(dcfg["workers"]), 0, 1, seed)
    clip = float(cfg["train"]["clip_grad"])
    model.train()
    done, epoch, timed = 0, 0, 0.0
    while done < steps + warmup:
        data.set_epoch(epoch, seed)
        sampler.set_epoch(epoch)
        tick = time.perf_counter()
        for images, targets in loader:
            images = images.float().div_(255)
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            scheduler.step()
            done += 1
            now = time.perf_counter()
            if done > warmup:
                timed += now - tick
            tick = now
            if done >= steps + warmup:
                break
        epoch += 1
    return steps * batch_size / timed


def overhead(work: Path, sets: list[str], rounds: int, steps: int, warmup: int) -> dict:
    os.environ["SOLOV2_BENCH_WORK"] = str(work)
    core, bare = [], []
    for r in range(rounds):
        # alternate which goes first, so drift in the machine's load hits both alike
        order = ("core", "bare") if r % 2 == 0 else ("bare", "core")
        for which in order:
            if which == "core":
                core.append(core_block(sets, steps, warmup, "off"))
            else:
                bare.append(bare_block(sets, steps, warmup))
            log(f"overhead round {r + 1}/{rounds} {which}: "
                f"{(core if which == 'core' else bare)[-1]:.3f} img/s")
    ratios = [c / b for c, b in zip(core, bare)]
    return {"rounds": rounds, "block_steps": steps, "warmup_steps": warmup,
            "core_fps": [round(v, 3) for v in core], "bare_fps": [round(v, 3) for v in bare],
            "core_fps_median": round(statistics.median(core), 3),
            "bare_fps_median": round(statistics.median(bare), 3),
            "ratio_per_round": [round(v, 3) for v in ratios],
            "ratio": round(statistics.median(core) / statistics.median(bare), 3),
            "target": 0.95}


def patches(work: Path, sets: list[str], steps: int, warmup: int) -> dict:
    os.environ["SOLOV2_BENCH_WORK"] = str(work)
    off = core_block(sets, steps, warmup, "off")
    log(f"patches off: {off:.3f} img/s")
    on = core_block(sets, steps, warmup, "on")
    log(f"patches on: {on:.3f} img/s")
    from detcore.config import resolve_config
    from detcore.plugins import Registry

    batch = int(resolve_config(Registry().get_model(MODEL), CONFIG, list(sets))[1]["data"]["batch_size"])
    return {"steps": steps, "warmup_steps": warmup, "batch_size": batch,
            "unpatched_fps": round(off, 3), "patched_fps": round(on, 3),
            "unpatched_step_s": round(batch / off, 3), "patched_step_s": round(batch / on, 3),
            "patched_over_unpatched_step_time": round(off / on, 3)}  # > 1: patched slower


# -- report ---------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    lines = [f"## SOLOv2 benchmark ({report['mode']}, {report['device']}, torch threads "
             f"{report['threads']}, {report['started']})", "", "| measure | value | target |",
             "|---|---|---|"]
    if "learning" in report:
        a = report["learning"]
        lines += [f"| (a) segm mAP@0.5 after {a['steps']} steps ({a['train_minutes_limit']} min "
                  f"limit, {a['wall_s']} s wall) | {a['segm_mAP_50']:.3f} | >= 0.4 "
                  f"({'met' if a['met'] else 'not met'}) |",
                  f"| (a) segm mAP / bbox mAP@0.5 / bbox mAP | {a['segm_mAP']:.3f} / "
                  f"{a['bbox_mAP_50']:.3f} / {a['bbox_mAP']:.3f} | |"]
    if "overhead" in report:
        b = report["overhead"]
        lines += [f"| (b) core / bare loop img/s (median of {b['rounds']} interleaved blocks of "
                  f"{b['block_steps']} steps) | {b['core_fps_median']} / {b['bare_fps_median']} "
                  f"= **{b['ratio']}** | >= 0.95 |",
                  f"| (b) per-round ratios | {', '.join(map(str, b['ratio_per_round']))} | |"]
    if "patches" in report:
        c = report["patches"]
        lines += [f"| (c) step time unpatched / patched (batch {c['batch_size']}, {c['steps']} "
                  f"steps) | {c['unpatched_step_s']} s / {c['patched_step_s']} s "
                  f"(patched/unpatched time x{c['patched_over_unpatched_step_time']}) | |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="plumbing check, < 2 min")
    ap.add_argument("--only", default="learning,overhead,patches",
                    help="comma-separated parts: learning, overhead, patches")
    ap.add_argument("--minutes", type=float, default=None, help="learning: train.max_minutes (15)")
    ap.add_argument("--rounds", type=int, default=None, help="overhead: interleaved rounds (4)")
    ap.add_argument("--block-steps", type=int, default=None, help="overhead/patches: timed steps (10)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/OpenMP threads (1: on a small shared CPU, 2 threads contending "
                         "with other jobs run ~3x slower than 1)")
    ap.add_argument("--work-dir", default="work_dirs/solov2_bench")
    ap.add_argument("--json", default=None, help="JSON output (default WORK_DIR/solov2_bench.json)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra --set for every run, e.g. train.epochs=10")
    args = ap.parse_args(argv)
    os.environ.setdefault("DETCORE_CACHE", "/tmp/dc_cache_solo")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # also for the learning subprocess

    import torch

    torch.set_num_threads(args.threads)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    quick_sets = ["data.input_size=[128,128]", "data.synthetic.num_val=16"] if args.quick else []
    sets = [*quick_sets, *args.sets]
    minutes = args.minutes if args.minutes is not None else (0.5 if args.quick else 15.0)
    rounds = args.rounds or (2 if args.quick else 4)
    steps = args.block_steps or (3 if args.quick else 10)
    warmup = 1 if args.quick else 2
    report = {"mode": "quick" if args.quick else "full", "device": "cpu",
              "threads": torch.get_num_threads(), "model": MODEL, "config": CONFIG,
              "extra_sets": sets, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.perf_counter()
    if "learning" in parts:
        report["learning"] = learning(work, minutes, sets)
        log(f"learning: {report['learning']}")
    if "overhead" in parts:
        report["overhead"] = overhead(work, sets, rounds, steps, warmup)
        log(f"overhead: {report['overhead']}")
    if "patches" in parts:
        report["patches"] = patches(work, sets, steps, warmup)
        log(f"patches: {report['patches']}")
    report["duration_s"] = round(time.perf_counter() - t0, 1)
    table = markdown(report)
    path = Path(args.json) if args.json else work / "solov2_bench.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    (path.with_suffix(".md")).write_text(table)
    print(table)
    log(f"wrote {path} and {path.with_suffix('.md')} in {report['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
