"""Orchestrates ``detcore bench``: CLI start-up, per-model train/infer phases, COCO eval."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REFERENCE = {  # the reference READMEs' 1-device GPU training FPS, for the CUDA table
    "fcos": 19.2, "efficientdet-d0": 48.0, "solov2": 8.1,
}


def cli_startup(repeats: int) -> dict:
    out = {}
    for args in (["--help"], ["plugins"]):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "detcore.cli", *args], capture_output=True)
            times.append(time.perf_counter() - t0)
        out["detcore " + " ".join(args)] = round(statistics.median(times), 3)
    return out


def phase(name: str, model: str, quick: bool, device: str, weights: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "detcore.bench.phases", name, model, "--device", device,
           *(["--weights", weights] if weights else [])]
    proc = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True,
                          env={**os.environ, "DETCORE_LOG": "WARNING"})
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"model": model, "error": f"{name} phase failed: {tail}"}


def run(models: list[str], quick: bool, device: str, out_dir: Path, command: str,
        weights: dict | None = None) -> dict:
    """``weights``: model -> trained checkpoint for its deployment-formats rows."""
    from ..data.synthetic import SynthSpec, ensure_synthetic
    from .coco_eval import compare, detection_file

    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
              "device": device, "quick": quick, "command": command,
              "cli_startup_s": cli_startup(3 if quick else 10), "train": [], "infer": []}
    for model in models:
        report["train"].append(phase("train", model, quick, device))
        report["infer"].append(phase("infer", model, quick, device, (weights or {}).get(model)))
    root = ensure_synthetic(SynthSpec(num_train=1, num_val=100 if quick else 500, seed=7))
    out_dir.mkdir(parents=True, exist_ok=True)
    report["coco_eval"] = compare(root, detection_file(root, out_dir / "detections.json"))
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2))
    (out_dir / "bench.md").write_text(markdown(report))
    return report


def markdown(r: dict) -> str:
    lines = [f"# detcore bench ({r['date']}, {r['host']}, device {r['device']}"
             f"{', quick' if r['quick'] else ''})", "", "## CLI start-up (median wall s)", "",
             "| command | s |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in r["cli_startup_s"].items()]
    lines += ["", "## Training throughput: detcore vs the plugin's baseline step (images/s)", "",
              "Baseline step `upstream`: the upstream's own training machinery (the plugin's "
              "`baseline_train_step`); `bare loop (no upstream)`: core's fallback over the Detector.",
              "",
              "| model | device | config | input | batch | AMP | detcore | baseline | baseline step | ratio | peak RSS MiB |"
              + (" reference 1-GPU |" if r["device"] == "cuda" else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if r["device"] == "cuda" else "")]
    for t in r["train"]:
        if "error" in t:
            lines.append(f"| {t['model']} | {t['error']} |")
            continue
        row = (f"| {t['model']} | {t['device']} | {t['config']} | {t['input_size'][0]}x{t['input_size'][1]}"
               f" | {t['batch_size']} | {t['amp']} | {t['detcore_fps']} | {t['upstream_fps']} | "
               f"{t['baseline']} | {t['ratio']} | {t['peak_rss_mib']} |")
        if r["device"] == "cuda":
            row += f" {REFERENCE.get(t['model'], '-')} |"
        lines.append(row)
    lines += ["", "## Inference: PyTorch eager vs ONNX on onnxruntime", "",
              "| model | input | batch | eager ms | onnxruntime ms | eager img/s | ort img/s | speed-up | parity max abs diff | unmatched |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i in r["infer"]:
        if "error" in i:
            lines.append(f"| {i['model']} | {i['error']} |")
            continue
        for row in i["rows"]:
            lines.append(f"| {i['model']} | {i['input_size'][0]}x{i['input_size'][1]} | {row['batch']} | "
                         f"{row['eager_ms']} | {row['onnxruntime_ms']} | {row['eager_fps']} | "
                         f"{row['onnxruntime_fps']} | {row['speedup']} | {row['parity_max_abs_diff']:.2e} | "
                         f"{row.get('parity_unmatched', 0)} |")
    lines += ["", "## Deployment formats: accuracy on the validation images", "",
              "Weights: `bench --weights MODEL=FILE` where given, else the train phase's few steps "
              "(mAP near 0: the rows then check the plumbing, not the accuracy).", "",
              "| model | weights | format | status | size MiB | bbox mAP | ΔmAP | segm mAP | ΔmAP | ms/image |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for i in r["infer"]:
        for f in i.get("formats", []):
            cells = [f.get(k, "-") for k in ("status", "size_mib", "bbox_mAP", "bbox_delta_mAP",
                                              "segm_mAP", "segm_delta_mAP", "ms_per_image")]
            lines.append(f"| {i['model']} | {i.get('weights', 'train phase')} | {f['format']} | "
                         + " | ".join(
                "-" if c is None else str(c) for c in cells) + " |")
    c = r["coco_eval"]
    lines += ["", f"## COCO evaluation of a fixed detection file ({c['detections']} detections)", "",
              f"pycocotools {c['pycocotools_s']} s (bbox mAP {c['bbox_mAP']})"
              + (f"; faster-coco-eval {c['faster_coco_eval_s']} s, {c['speedup']}x, max metric "
                 f"difference {c['max_metric_diff']}" if "speedup" in c else f"; {c['faster_coco_eval']}"),
              ""]
    return "\n".join(lines)
