#!/usr/bin/env python
"""detcore ``--task eval`` next to effdet's own evaluation of the same weights on the same images.

One weights file, one COCO-layout dataset (default: the synthetic set core writes for the
config), two evaluations:

detcore   ``detcore run --model efficientdet-d0 --task eval --weights W --data ROOT`` through
          the CLI, with the config's ``eval.score_threshold`` and with 0.001 (effdet's cut),
          and once more configured as effdet's ``validate.py`` letterboxes
          (:data:`EFFDET_LETTERBOX`: resized sides truncated, padding the ImageNet mean colour).
effdet    what effdet's ``validate.py`` does, with effdet's own code: ``create_model(...,
          bench_task='predict', checkpoint_path=W)`` (``DetBenchPredict``),
          ``create_dataset('coco', ROOT, 'val')``, ``resolve_input_config`` with validate.py's
          defaults, ``create_loader`` (``ResizePad`` letterbox + ``ImageToNumpy`` +
          ``DetectionFastCollate``), ``bench(input, img_info=target)``,
          ``create_evaluator('coco', dataset)`` -> ``CocoEvaluator.evaluate()`` (pycocotools
          bbox mAP, ``stats[0]``); once with validate.py's default letterbox fill (the
          ImageNet mean colour) and once with ``--fill-color 0`` (detcore's black canvas).

On CUDA the loader is ``create_loader(use_prefetcher=True)`` exactly as validate.py calls it.
effdet's prefetcher moves every batch with ``.cuda()`` and its eval transforms assert that it is
used, so on a CPU-only host the loader is ``create_loader(use_prefetcher=False,
transform_fn=transforms_coco_eval(..., use_prefetcher=True))`` (the same transforms and collate)
followed by the prefetcher's own arithmetic, ``x.float().sub_(255 * mean).div_(255 * std)``.

The rows in between explain the differences, one at a time, in-process (not a detcore command):
detcore's model with the same weights, core's result conversion (``to_coco_results``) and core's
pycocotools scoring, fed effdet's letterbox (``int(side * scale)``, its fill colour) and clipping
boxes to the resized image before NMS, as ``DetBenchPredict`` does with ``img_info`` (the
model, which sees only the canvas, clips to the canvas). It also matches the detection files one
to one (detcore's CLI with effdet's 0.001 cut, and the emulation, vs effdet with a black fill) and
counts the images whose resized size differs between the two letterboxes (effdet ``int()``,
core ``round()``).

    python plugins/efficientdet/upstream_eval.py --checkpoint W.pt      # any detcore/effdet weights
    python plugins/efficientdet/upstream_eval.py --quick --seeded       # ~30 s: tiny, untrained
    python plugins/efficientdet/upstream_eval.py    # trains the config first (--train-minutes cap)

The README's table: ``detcore run --model efficientdet-d0 --task train --config smoke --set
data.input_size=[128,128] --set train.epochs=12 --set train.eval_after=false``, then
``--checkpoint work_dirs/efficientdet-d0/train/checkpoints/last.pt --set data.input_size=[128,128]``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "efficientdet-d0"
EFFDET_CUT = 0.001  # effdet's CocoEvaluator drops detections scoring below this
#: effdet validate.py's letterbox as core's ``data.letterbox`` config: ``ResizePad`` truncates
#: the resized sides and pads with ``resolve_fill_color("mean")`` = round(255 * ImageNet mean);
#: effdet maps boxes back by the one ``img_scale``, as core's ``uniform``.
EFFDET_LETTERBOX = ("data.letterbox.rounding=floor", "data.letterbox.fill=[124,116,104]",
                    "data.letterbox.rescale=uniform", f"eval.score_threshold={EFFDET_CUT}")


def cli(args: list[str], work: Path, log) -> dict:
    """Run ``detcore run ...`` as a user would; return its result.json."""
    cmd = [sys.executable, "-m", "detcore.cli", "run", "--model", MODEL, "--device", "cpu",
           "--no-progress", "--work-dir", str(work), *args]
    log("$ detcore run " + " ".join(cmd[4:]))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    result = json.loads((work / "result.json").read_text())
    result["_command"] = "detcore run " + " ".join(cmd[4:])
    return result


def resolved_config(name: str, sets: list[str]) -> dict:
    from detcore.config import resolve_config
    from detcore.plugins import Registry

    return resolve_config(Registry().get_model(MODEL), name, sets)[1]


def synthetic_root(config: dict) -> Path:
    """The synthetic COCO set core writes (and caches) for ``config``'s ``data.synthetic``."""
    from detcore.data.synthetic import SynthSpec, ensure_synthetic

    return ensure_synthetic(SynthSpec(**config["data"]["synthetic"]))


def seeded_weights(config: dict, root: Path, path: Path, seed: int = 0) -> Path:
    """An untrained model whose detections have spread scores, saved as a plain state dict.

    BN statistics from one batch of the dataset's own letterboxed images and class logits x3:
    a freshly initialised EfficientDet scores every anchor at its 0.01 prior.
    """
    import torch

    from detcore.data.coco import CocoDetection
    from detcore_efficientdet.model import build

    data = CocoDetection(root, "val", config["data"]["input_size"])
    torch.manual_seed(seed)
    model = build(MODEL, config, data.num_classes)
    images = torch.stack([data[i][0] for i in range(min(8, len(data)))]).float().div(255)
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average: one batch gives its statistics
    model.train()
    with torch.no_grad():
        model.raw_outputs(images)
        model.class_net.predict.conv_pw.weight.mul_(3.0)
    torch.save(model.state_dict(), path)
    return path


def plain_weights(checkpoint: Path, path: Path) -> Path:
    """The model tensors of any checkpoint detcore loads, as the plain state dict both sides read."""
    import torch

    from detcore.checkpoint import load_checkpoint, model_state

    state = model_state(load_checkpoint(checkpoint, ("argparse.Namespace",)))
    torch.save({k.removeprefix("module."): v for k, v in state.items()}, path)
    return path


def _summary(text: str) -> dict:
    """pycocotools' printed summary -> {"mAP": ..., "mAP_50": ...} (printed to 3 decimals)."""
    values = [float(v) for v in re.findall(r"Average Precision.*?= (-?[0-9.]+)", text)]
    names = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
    return dict(zip(names, values))


def effdet_validate(weights: Path, root: Path, image_size, num_classes: int | None, fill_color,
                    results_file: Path, batch_size: int = 8, device: str = "cpu") -> dict:
    """effdet's ``validate.py`` on ``ROOT/val2017``: its model bench, loader and COCO evaluator."""
    import torch
    from effdet import create_dataset, create_evaluator, create_loader, create_model
    from effdet.data import resolve_input_config
    from effdet.data.transforms import transforms_coco_eval

    bench = create_model("tf_efficientdet_d0", bench_task="predict", num_classes=num_classes,
                         pretrained=False, checkpoint_path=str(weights), checkpoint_ema=False,
                         image_size=tuple(int(v) for v in image_size))
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = create_dataset("coco", root, "val")
    # validate.py's argument defaults: --interpolation bilinear, no --mean/--std, --fill-color
    input_config = resolve_input_config(
        {"interpolation": "bilinear", "mean": None, "std": None, "fill_color": fill_color},
        bench.config)
    kwargs = dict(input_size=input_config["input_size"], batch_size=batch_size,
                  interpolation=input_config["interpolation"], fill_color=input_config["fill_color"],
                  mean=input_config["mean"], std=input_config["std"], num_workers=0, pin_mem=False)
    if device == "cuda":
        loader = create_loader(dataset, use_prefetcher=True, **kwargs)
        normalise = None
        bench = bench.cuda()
    else:
        transform = transforms_coco_eval(
            input_config["input_size"][-2:], interpolation=input_config["interpolation"],
            use_prefetcher=True, fill_color=input_config["fill_color"],
            mean=input_config["mean"], std=input_config["std"])
        loader = create_loader(dataset, use_prefetcher=False, transform_fn=transform, **kwargs)
        mean = torch.tensor([255 * x for x in input_config["mean"]]).view(1, 3, 1, 1)
        std = torch.tensor([255 * x for x in input_config["std"]]).view(1, 3, 1, 1)
        normalise = (mean, std)
    evaluator = create_evaluator("coco", dataset, pred_yxyx=False)
    bench.eval()
    with torch.no_grad():
        for x, target in loader:
            if normalise is not None:  # what PrefetchLoader does, without .cuda()
                x = x.float().sub_(normalise[0]).div_(normalise[1])
            evaluator.add_predictions(bench(x, img_info=target), target)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        mean_ap = evaluator.evaluate(output_result_file=str(results_file))
    metrics = _summary(out.getvalue())
    metrics["mAP"] = float(mean_ap)  # the figure effdet reports (stats[0], full precision)
    metrics["detections"] = len(json.loads(results_file.read_text()))
    metrics["fill_color"] = list(input_config["fill_color"]) if isinstance(
        input_config["fill_color"], tuple) else input_config["fill_color"]
    metrics["loader"] = "create_loader(use_prefetcher=True)" if device == "cuda" else (
        "create_loader(use_prefetcher=False, transform_fn=transforms_coco_eval) + prefetcher arithmetic")
    return metrics


def detcore_model_on_effdet_letterbox(weights: Path, root: Path, config: dict, *, resize: str,
                                      fill: str, clip: str) -> tuple[dict, list[dict]]:
    """detcore's model (same weights), core's ``to_coco_results`` and ``coco_metrics``, fed a
    letterbox of the given policy, NMS clip region ``clip`` ("image": the resized image inside
    the canvas, as effdet's ``validate.py``; "canvas": as the model does), effdet's 0.001 cut."""
    import torch
    from effdet import bench as effdet_bench
    from effdet.data.transforms import IMAGENET_DEFAULT_MEAN

    from detcore.data.coco import CocoDetection
    from detcore.data.transforms import LetterboxPolicy, letterbox
    from detcore.evaluate import coco_metrics, to_coco_results
    from detcore_efficientdet.model import build

    size = [int(v) for v in config["data"]["input_size"]]
    data = CocoDetection(root, "val", size)
    model = build(MODEL, config, data.num_classes)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    colour = (0, 0, 0) if fill == "0" else tuple(int(round(255 * m)) for m in IMAGENET_DEFAULT_MEAN)
    policy = LetterboxPolicy("floor" if resize == "int" else "round", colour)
    results = []
    for image_id in data.ids:
        image = data.read_image(image_id)
        h, w = image.shape[:2]
        canvas, scale = letterbox(image, size, policy)
        x = torch.from_numpy(canvas).permute(2, 0, 1)[None].float().div(255)
        region = [w * scale, h * scale] if clip == "image" else [float(size[1]), float(size[0])]
        with torch.no_grad():
            cls_out, box_out = model.raw_outputs(x)
            pp = effdet_bench._post_process(cls_out, box_out, num_levels=model.config.num_levels,
                                            num_classes=model.num_classes,
                                            max_detection_points=model.config.max_detection_points)
            dets = effdet_bench._batch_detection(1, *pp[:2], model.anchors.boxes, *pp[2:],
                                                 torch.ones(1), torch.tensor([region]),
                                                 max_det_per_image=model.max_detections)[0]
        labels = dets[:, 5].long() - 1
        if model.output_to_label is not None:
            labels = torch.where(labels >= 0, model.output_to_label[labels.clamp(min=0)], labels)
        keep = (labels >= 0) & (dets[:, 4] >= EFFDET_CUT)
        out = {"boxes": dets[keep, :4], "scores": dets[keep, 4], "labels": labels[keep]}
        target = {"image_id": image_id, "scale": scale, "orig_size": (h, w)}
        results.extend(to_coco_results(out, target, data.label_to_cat))
    return coco_metrics(data.coco, results, ("bbox",)), results


def resize_mismatches(root: Path, size) -> list[int]:
    """Image ids whose letterboxed size differs: effdet ``int(side * s)``, detcore ``round(side * s)``."""
    from detcore.data.transforms import LetterboxPolicy, letterbox_scale

    ann = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    out = []
    for img in ann["images"]:
        h, w = int(img["height"]), int(img["width"])
        scale = letterbox_scale(h, w, size)
        if LetterboxPolicy("floor").resized_size(h, w, scale) != LetterboxPolicy().resized_size(h, w, scale):
            out.append(int(img["id"]))
    return out


def compare_detections(ours: list[dict], theirs: list[dict], box_tol: float = 0.05,
                       score_tol: float = 1e-4) -> dict:
    """Match detections one to one within each image: same category, every box coordinate
    within ``box_tol`` px and the score within ``score_tol`` (detcore writes boxes to 0.01 px
    and scores to 1e-5; effdet full floats). Per image: matched, ours, theirs."""
    by_image: dict[int, list] = defaultdict(lambda: [[], []])
    for side, dets in ((0, ours), (1, theirs)):
        for d in dets:
            by_image[int(d["image_id"])][side].append(d)
    images, max_box, max_score = {}, 0.0, 0.0
    for image_id, (a, b) in sorted(by_image.items()):
        free = sorted(b, key=lambda d: -d["score"])
        matched = 0
        for x in sorted(a, key=lambda d: -d["score"]):
            for j, y in enumerate(free):
                box = max(abs(u - v) for u, v in zip(x["bbox"], y["bbox"]))
                score = abs(x["score"] - y["score"])
                if x["category_id"] == y["category_id"] and box <= box_tol and score <= score_tol:
                    matched += 1
                    max_box, max_score = max(max_box, box), max(max_score, score)
                    del free[j]
                    break
        images[image_id] = {"matched": matched, "ours": len(a), "theirs": len(b)}
    return {"images": images, "max_box_diff": round(max_box, 4), "max_score_diff": round(max_score, 6)}


def summarise(cmp: dict, ids) -> dict:
    """Matched detections over the images ``ids``."""
    sel = [v for k, v in cmp["images"].items() if k in set(ids)]
    ours, theirs = sum(v["ours"] for v in sel), sum(v["theirs"] for v in sel)
    matched = sum(v["matched"] for v in sel)
    return {"images": len(sel), "ours": ours, "theirs": theirs, "matched": matched,
            "matched_fraction": round(matched / max(ours, theirs, 1), 4),
            "identical_images": sum(v["matched"] == v["ours"] == v["theirs"] for v in sel)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="weights to evaluate (detcore checkpoint, effdet train.py "
                                        "checkpoint or plain state dict); default: train one")
    p.add_argument("--seeded", action="store_true",
                   help="evaluate an untrained, BN-calibrated model instead of training one")
    p.add_argument("--config", default=None, help="detcore config (default smoke, quick: tiny)")
    p.add_argument("--data", help="COCO root (default: core's synthetic set for the config)")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="config overrides for every detcore run (key=value, repeatable)")
    p.add_argument("--train-minutes", type=float, default=10.0,
                   help="training cap when neither --checkpoint nor --seeded (default 10)")
    p.add_argument("--quick", action="store_true", help="the tiny config (128x128, 8 val images)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="effdet's side (cuda: its real prefetcher); detcore's side runs on cpu")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS (default 1; 0: torch's)")
    p.add_argument("--work-dir", default=None, help="default: a new temporary folder")
    p.add_argument("--json", dest="json_path", default="work_dirs/bench/efficientdet_upstream_eval.json")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    config_name = args.config or ("tiny" if args.quick else "smoke")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="effdet-upstream-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    config = resolved_config(config_name, args.sets)
    root = Path(args.data) if args.data else synthetic_root(config)
    size = config["data"]["input_size"]
    common = ["--config", config_name, "--data", str(root)] + [a for s in args.sets for a in ("--set", s)]
    log(f"data {root}, input {size}")

    if args.checkpoint:
        source = f"checkpoint {args.checkpoint}"
        weights = plain_weights(Path(args.checkpoint), work / "weights.pth")
    elif args.seeded:
        source = "seeded untrained model (BN from one val batch, class logits x3)"
        weights = seeded_weights(config, root, work / "weights.pth")
    else:
        train = cli(["--task", "train", *common, "--set", f"train.max_minutes={args.train_minutes}",
                     "--set", "train.eval_after=false"], work / "train", log)
        source = (f"`{train['_command']}` ({train['metrics'].get('steps')} steps, "
                  f"loss {train['metrics'].get('final_loss')})")
        weights = plain_weights(Path(train["artifacts"]["checkpoint"]), work / "weights.pth")
    log(f"weights: {source}")

    rows: dict[str, dict] = {}
    thr = float(config["eval"]["score_threshold"])
    black, mean = "black", "mean colour"
    for key, cut, extra in (("detcore_config", thr, []),
                            ("detcore_cut", EFFDET_CUT, ["--set", f"eval.score_threshold={EFFDET_CUT}"])):
        res = cli(["--task", "eval", *common, "--weights", str(weights), *extra], work / key, log)
        preds = json.loads(Path(res["artifacts"]["predictions"]).read_text())
        rows[key] = {"evaluation": f"detcore `--task eval`, eval.score_threshold={cut:g}",
                     "letterbox": f"round(), {black}", "nms_clip": "canvas", "cut": cut,
                     "mAP": res["metrics"]["bbox_mAP"], "mAP_50": res["metrics"]["bbox_mAP_50"],
                     "detections": len(preds), "command": res["_command"],
                     "predictions": res["artifacts"]["predictions"]}
    res = cli(["--task", "eval", *common, "--weights", str(weights),
               *(a for s in EFFDET_LETTERBOX for a in ("--set", s))], work / "detcore_effdet_letterbox", log)
    preds = json.loads(Path(res["artifacts"]["predictions"]).read_text())
    rows["detcore_effdet_letterbox"] = {
        "evaluation": "detcore `--task eval` with effdet's letterbox (`EFFDET_LETTERBOX`)",
        "letterbox": f"int(), {mean}", "nms_clip": "canvas", "cut": EFFDET_CUT,
        "mAP": res["metrics"]["bbox_mAP"], "mAP_50": res["metrics"]["bbox_mAP_50"],
        "detections": len(preds), "command": res["_command"],
        "predictions": res["artifacts"]["predictions"]}
    for key, resize, fill in (("emulated_round_black_image", "round", "0"),
                              ("emulated_int_black_image", "int", "0"),
                              ("emulated_int_mean_image", "int", "mean")):
        log(f"detcore's model on effdet's letterbox/clip: {key}")
        metrics, preds = detcore_model_on_effdet_letterbox(weights, root, config, resize=resize,
                                                           fill=fill, clip="image")
        path = work / f"{key}.json"
        path.write_text(json.dumps(preds))
        rows[key] = {"evaluation": "detcore's model, core's scoring, in-process (explains)",
                     "letterbox": f"{resize}(), {black if fill == '0' else mean}",
                     "nms_clip": "image", "cut": EFFDET_CUT, "mAP": metrics["bbox_mAP"],
                     "mAP_50": metrics["bbox_mAP_50"], "detections": len(preds),
                     "predictions": str(path)}
    from detcore.data.coco import CocoDetection

    num_classes = CocoDetection(root, "val", size).num_classes
    coco_head = config["model"].get("coco_90_classes")
    effdet_classes = None if (coco_head and num_classes == 80) else num_classes
    for key, fill, label in (("effdet_black", "0", "effdet validate.py `--fill-color 0`"),
                             ("effdet_default", None, "effdet validate.py (defaults)")):
        log(f"effdet: {label}")
        results = work / f"{key}.json"
        m = effdet_validate(weights, root, size, effdet_classes, fill, results, device=args.device)
        rows[key] = {**m, "evaluation": label,
                     "letterbox": f"int(), {black if fill == '0' else mean}", "nms_clip": "image",
                     "cut": EFFDET_CUT, "predictions": str(results)}

    def load(key):
        return json.loads(Path(rows[key]["predictions"]).read_text())

    mismatched = resize_mismatches(root, size)
    all_ids = [int(i["id"]) for i in json.loads(
        (root / "annotations" / "instances_val2017.json").read_text())["images"]]
    n_images = len(all_ids)
    cli_cmp = compare_detections(load("detcore_cut"), load("effdet_black"))
    emu_cmp = compare_detections(load("emulated_int_black_image"), load("effdet_black"))
    policy_cmp = compare_detections(load("detcore_effdet_letterbox"), load("effdet_default"))
    comparison = {
        "images": n_images, "resize_size_differs": len(mismatched),
        # detcore's CLI (effdet's cut) vs effdet --fill-color 0
        "same_resize": summarise(cli_cmp, [i for i in all_ids if i not in set(mismatched)]),
        "resize_differs": summarise(cli_cmp, mismatched),
        "max_box_diff_px": cli_cmp["max_box_diff"], "max_score_diff": cli_cmp["max_score_diff"],
        "delta_mAP": round(rows["detcore_cut"]["mAP"] - rows["effdet_black"]["mAP"], 4),
        # detcore's model on effdet's letterbox and clip vs effdet
        "emulated_vs_effdet": {**summarise(emu_cmp, all_ids),
                               "max_box_diff_px": emu_cmp["max_box_diff"],
                               "max_score_diff": emu_cmp["max_score_diff"],
                               "delta_mAP_black": round(rows["emulated_int_black_image"]["mAP"]
                                                        - rows["effdet_black"]["mAP"], 4),
                               "delta_mAP_mean": round(rows["emulated_int_mean_image"]["mAP"]
                                                       - rows["effdet_default"]["mAP"], 4)},
        # detcore's CLI configured with effdet's letterbox vs effdet's defaults
        "effdet_letterbox_vs_effdet": {**summarise(policy_cmp, all_ids),
                                       "max_box_diff_px": policy_cmp["max_box_diff"],
                                       "max_score_diff": policy_cmp["max_score_diff"],
                                       "delta_mAP": round(rows["detcore_effdet_letterbox"]["mAP"]
                                                          - rows["effdet_default"]["mAP"], 4)},
    }
    out = {"model": MODEL, "config": config_name, "input_size": size, "data": str(root),
           "weights": str(weights), "source": source, "sets": args.sets, "rows": rows,
           "comparison": comparison, "date": time.strftime("%Y-%m-%d"),
           "wall_s": round(time.perf_counter() - t0, 1)}

    print(f"\n{MODEL}, config {config_name} ({size[0]}x{size[1]}), {n_images} val images of {root}")
    print(f"weights: {source}\n")
    print("| evaluation | letterbox | NMS clip | score cut | bbox mAP | mAP@0.5 | detections |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r['evaluation']} | {r['letterbox']} | {r['nms_clip']} | {r['cut']:g} | "
              f"{r['mAP']:.4f} | {r.get('mAP_50', float('nan')):.3f} | {r['detections']} |")
    same, differ, emu = comparison["same_resize"], comparison["resize_differs"], comparison["emulated_vs_effdet"]
    print(f"\nDetections matched one to one (same category, box within 0.05 px, score within 1e-4).\n"
          f"detcore `--task eval` (cut {EFFDET_CUT:g}) vs effdet `--fill-color 0`: ΔmAP "
          f"{comparison['delta_mAP']:+.4f}; {same['matched']}/{max(same['ours'], same['theirs'])} on the "
          f"{same['images']} images both letterboxes resize alike, {differ['matched']}/"
          f"{max(differ['ours'], differ['theirs'])} on the {differ['images']} resized 1 px differently.\n"
          f"detcore's model on effdet's letterbox and clip vs effdet: ΔmAP {emu['delta_mAP_black']:+.4f} "
          f"(black), {emu['delta_mAP_mean']:+.4f} (mean colour); {emu['matched']}/"
          f"{max(emu['ours'], emu['theirs'])} detections matched on {emu['images']} images, boxes within "
          f"{emu['max_box_diff_px']} px, scores within {emu['max_score_diff']:.1e}.")
    pol = comparison["effdet_letterbox_vs_effdet"]
    print(f"detcore `--task eval` with effdet's letterbox ({' '.join('--set ' + s for s in EFFDET_LETTERBOX)}) "
          f"vs effdet validate.py: ΔmAP {pol['delta_mAP']:+.4f}; {pol['matched']}/"
          f"{max(pol['ours'], pol['theirs'])} detections matched (the rest: NMS clip region).")
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nwrote {path} ({out['wall_s']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
