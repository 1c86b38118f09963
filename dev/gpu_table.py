#!/usr/bin/env python
"""The GPU table of docs/benchmarks.md: one command on a CUDA machine with detcore installed.

    python dev/gpu_table.py --out work_dirs/gpu [--models efficientdet-d0,fcos,solov2]

1. ``detcore bench --device cuda``: the ``coco`` configs at the reference input sizes with fp16
   AMP on synthetic data of those sizes; training images/s of detcore next to the upstream's own
   step and the reference READMEs' 1-GPU figures, peak device memory.
2. Per model, the training batch doubled from the config's until the device runs out of memory
   (or ``--max-batch``): peak device memory and images/s at each size (``Trainer.step``, the
   bench's step, fed a batch of the same synthetic images repeated); then eager inference
   latency by batch on the GPU, and onnxruntime's CUDA provider where this onnxruntime has one.
3. End to end through the CLI with ``--device cuda`` (train a few fp16 steps, eval, export onnx,
   infer), for every installed model, the example plugin included; ``--nproc 2`` when two
   GPUs are visible.

Models whose plugin is not installed get a row saying so. Writes OUT/gpu.json and OUT/gpu.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REFERENCE_MODELS = ("efficientdet-d0", "fcos", "solov2")
E2E_STEPS = 6


def detcore(args: list[str], log: Path) -> tuple[int, float]:
    """``detcore ARGS`` as a user runs it; its output appended to ``log``."""
    t0 = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"\n$ detcore {' '.join(args)}\n")
        fh.flush()
        rc = subprocess.run([sys.executable, "-m", "detcore.cli", *args], stdout=fh,
                            stderr=subprocess.STDOUT).returncode
    return rc, round(time.perf_counter() - t0, 1)


def environment() -> dict:
    import torch

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True)
    except FileNotFoundError:
        smi = subprocess.CompletedProcess([], 1, "", "no nvidia-smi")
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "gpu": smi.stdout.strip() or smi.stderr.strip(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version()}


def memory_and_batches(model_name: str, max_batch: int, device: str, sets: tuple) -> dict:
    """Training batch doubled until out of memory; then eager (and ORT CUDA) inference by batch."""
    import torch

    from detcore.bench.phases import context
    from detcore.data.coco import collate
    from detcore.runner import synthetic_root
    from detcore.train.trainer import Trainer

    ctx = context(model_name, device, ("train.log_interval=1000000", *sets))
    cuda = device == "cuda"
    start = int(ctx.config["data"]["batch_size"])
    ctx.config["data"]["synthetic"]["num_train"] = start  # distinct images, repeated per batch
    ctx.data_root = synthetic_root(ctx.config)
    data = ctx.dataset("train", train=True)
    trainer = Trainer(ctx, ctx.build_model(data.num_classes), data)
    samples = [data[i] for i in range(len(data))]
    rows, batch = [], start
    while batch <= max_batch:
        images = collate([samples[i % len(samples)] for i in range(batch)])
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            for _ in range(2):  # the second step has the optimizer's state allocated
                trainer.step(images)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(3):
                trainer.step(images)
            _sync(device)
            peak = torch.cuda.max_memory_allocated() if cuda else 0
            rows.append({"batch": batch, "peak_mib": round(peak / 2**20),
                         "images_per_s": round(3 * batch / (time.perf_counter() - t0), 1)})
        except torch.OutOfMemoryError:
            rows.append({"batch": batch, "oom": True})
            break
        batch *= 2
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return {"model": model_name, "config": ctx.config_name, "amp": ctx.config["train"]["amp"],
            "input_size": ctx.config["data"]["input_size"], "train": rows,
            "largest_batch": max((r["batch"] for r in rows if not r.get("oom")), default=None),
            "infer": inference_by_batch(ctx, data)}


def inference_by_batch(ctx, data) -> list[dict]:
    import onnxruntime as ort
    import torch

    from detcore.export import export_onnx

    model = ctx.build_model(data.num_classes).to(ctx.device).eval()
    cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    h, w = ctx.config["data"]["input_size"]
    rows = []
    for batch in (1, 8, 32):
        images = (torch.stack([data[i % len(data)][0] for i in range(batch)]).float() / 255)
        gpu_images = images.to(ctx.device)
        row = {"batch": batch}
        for name, amp in (("eager_fp32_ms", False), ("eager_fp16_ms", True)):
            with torch.autocast(ctx.device.type, dtype=torch.float16, enabled=amp):
                row[name] = _latency_ms(lambda: model.export_forward(gpu_images), ctx.device.type)
        if cuda_ep:
            path = ctx.work_dir / f"gpu_b{batch}.onnx"
            export_onnx(model.cpu(), path, (h, w), batch, 17, False, sample=images)
            model.to(ctx.device)
            sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
            row["ort_cuda_ms"] = _latency_ms(lambda: sess.run(None, {"input": images.numpy()}))
        else:
            row["ort_cuda_ms"] = "n/a: this onnxruntime has no CUDAExecutionProvider"
        rows.append(row)
    return rows


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _latency_ms(fn, device: str = "cpu", repeats: int = 10) -> float:
    import torch

    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 2)


def end_to_end(model_name: str, out: Path, nproc: int, device: str, sets: tuple) -> dict:
    """train (fp16, a few steps) -> eval -> export onnx -> infer, each a CLI run on cuda."""
    work, log = out / "e2e" / model_name, out / f"e2e-{model_name}.log"
    common = ["--model", model_name, "--device", device, "--no-progress",
              *[a for s in sets for a in ("--set", s)]]
    train_sets = ["--set", f"train.max_steps={E2E_STEPS}", "--set", "train.epochs=1"]
    train_sets += ["--set", "train.amp=fp16"] if device == "cuda" else []
    weights = str(work / "train" / "checkpoints" / "last.pt")
    steps = [("train", ["--task", "train", *train_sets]),
             ("eval", ["--task", "eval", "--weights", weights]),
             ("export", ["--task", "export", "--weights", weights]),
             ("infer", ["--task", "infer", "--weights", None])]
    if nproc > 1:
        steps.append((f"train --nproc {nproc}", ["--task", "train", "--nproc", str(nproc),
                                                 *train_sets]))
    row = {"model": model_name}
    for name, args in steps:
        if name == "infer":  # the file the export run wrote, as its result.json names it
            result = work / "export" / "result.json"
            if not result.is_file():
                row[name] = "not run: no export"
                continue
            args[-1] = json.loads(result.read_text())["artifacts"]["onnx"]
        task_dir = work / name.replace(" ", "").replace("--", "-")
        rc, seconds = detcore(["run", *common, *args, "--work-dir", str(task_dir)], log)
        row[name] = f"ok ({seconds} s)" if rc == 0 else f"FAILED (exit {rc}, see {log.name})"
        if rc != 0 and name == "train":
            break
    return row


def markdown(r: dict) -> str:
    e = r["environment"]
    lines = [f"GPU: {e['gpu']}; torch {e['torch']} (CUDA {e['cuda']}), Python {e['python']}; "
             f"{e['host']}; {e['date']}.", "", f"Command: `{r['command']}`", "",
             "### Training throughput (`detcore bench --device cuda`)", "",
             r.get("bench_md", "").strip() or "(no bench output)", "",
             "### Peak device memory and images/s by training batch (fp16 AMP, `Trainer.step`)", "",
             "| model | input | batch | peak MiB | images/s |", "|---|---|---|---|---|"]
    for m in r["memory"]:
        if "error" in m:
            lines.append(f"| {m['model']} | {m['error']} | | | |")
            continue
        size = "x".join(map(str, m["input_size"]))
        for row in m["train"]:
            lines.append(f"| {m['model']} | {size} | {row['batch']} | "
                         + ("out of memory | - |" if row.get("oom")
                            else f"{row['peak_mib']} | {row['images_per_s']} |"))
    lines += ["", "### Inference by batch on the GPU (untrained weights; ms per batch)", "",
              "| model | batch | eager fp32 ms | eager fp16 ms | onnxruntime CUDA ms |",
              "|---|---|---|---|---|"]
    for m in r["memory"]:
        for row in m.get("infer", []):
            lines.append(f"| {m['model']} | {row['batch']} | {row['eager_fp32_ms']} | "
                         f"{row['eager_fp16_ms']} | {row['ort_cuda_ms']} |")
    lines += ["", f"### End to end through the CLI on cuda ({E2E_STEPS} fp16 steps, then eval, "
              "export, infer)", "", "| model | " + " | ".join(r["e2e_columns"]) + " |",
              "|---|" + "---|" * len(r["e2e_columns"])]
    for row in r["e2e"]:
        lines.append(f"| {row['model']} | " + " | ".join(row.get(c, "-") for c in r["e2e_columns"])
                     + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work_dirs/gpu"))
    parser.add_argument("--models", default=",".join(REFERENCE_MODELS))
    parser.add_argument("--e2e-models", default=",".join(REFERENCE_MODELS + ("retinanet",)))
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: bench,memory,e2e")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: a dry run of the script's plumbing (with --set for small sizes)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="config overrides for parts 2 and 3 (the dry run's small sizes)")
    args = parser.parse_args()
    import torch

    from detcore.plugins import get_registry

    sets = tuple(args.sets)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_table: no CUDA device visible to torch; run it on a machine with a GPU",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    installed = set(get_registry().models)
    wanted = args.models.split(",")
    models = [m for m in wanted if m in installed]
    missing = {m: "plugin not installed here" for m in wanted if m not in installed}
    report = {"environment": environment(), "command": "python dev/gpu_table.py " +
              " ".join(sys.argv[1:]), "memory": [], "e2e": []}
    print(json.dumps(report["environment"]), flush=True)
    nproc = torch.cuda.device_count() if args.device == "cuda" else 1
    report["e2e_columns"] = ["train", "eval", "export", "infer"] + (
        [f"train --nproc {nproc}"] if nproc > 1 else [])

    def save():  # after every part: a run stopped part-way keeps what it measured
        (args.out / "gpu.json").write_text(json.dumps(report, indent=2))
        (args.out / "gpu.md").write_text(markdown(report))

    if "bench" not in skip and models:
        rc, seconds = detcore(["bench", "--device", args.device, "--models", ",".join(models),
                               "--out", str(args.out / "bench")], args.out / "bench.log")
        bench_md = args.out / "bench" / "bench.md"
        report["bench_md"] = bench_md.read_text() if bench_md.is_file() else f"bench exit {rc}"
        report["bench_s"] = seconds
        print(f"bench: exit {rc} in {seconds} s", flush=True)
        save()
    if "memory" not in skip:
        for m in models:
            try:
                report["memory"].append(memory_and_batches(m, args.max_batch, args.device, sets))
            except Exception as exc:  # a row that says what broke, the other models still run
                report["memory"].append({"model": m, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(f"memory: {m} done", flush=True)
            save()
        report["memory"] += [{"model": m, "error": why} for m, why in missing.items()]
    if "e2e" not in skip:
        for m in args.e2e_models.split(","):
            if m not in installed:
                report["e2e"].append({"model": m, "train": "plugin not installed here"})
                continue
            report["e2e"].append(end_to_end(m, args.out, min(nproc, 2), args.device, sets))
            print(f"e2e: {report['e2e'][-1]}", flush=True)
            save()
    save()
    print((args.out / "gpu.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
