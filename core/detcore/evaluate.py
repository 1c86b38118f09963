"""COCO evaluation with pycocotools: bbox for every model, segm for ``segm`` models."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from . import distributed as dist
from .errors import MissingDependency, UserError

METRIC_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


@torch.inference_mode()
def predict_dataset(model, loader, device, amp: str = "off", progress: bool = False) -> list[dict]:
    """Run ``model`` over ``loader``; return COCO result dicts in original-image coordinates."""
    from tqdm import tqdm

    from .train.amp import autocast

    model.eval()
    results: list[dict] = []
    for batch in tqdm(loader, disable=not progress, desc="eval", leave=False):
        if batch is None:
            continue
        images, targets = batch
        images = images.to(device).float().div_(255)
        with autocast(device, amp):
            outputs = model(images)
        for out, target in zip(outputs, targets):
            results.extend(to_coco_results(out, target, loader.dataset.dataset.label_to_cat))
    return results


def to_coco_results(out: dict, target: dict, label_to_cat: list[int]) -> list[dict]:
    """One image's predictions (canvas pixels) -> COCO json entries (original pixels)."""
    scale, (h, w) = target["scale"], target["orig_size"]
    scores = out["scores"].float().cpu()
    keep = scores > 0
    boxes = (out["boxes"].float().cpu()[keep] / scale)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h)
    labels = out["labels"].cpu()[keep].tolist()
    scores = scores[keep].tolist()
    rles = _encode_masks(out["masks"][keep], scale, h, w) if "masks" in out else None
    entries = []
    for i, (box, label, score) in enumerate(zip(boxes.tolist(), labels, scores)):
        if not 0 <= label < len(label_to_cat):
            continue
        entry = {"image_id": target["image_id"], "category_id": label_to_cat[int(label)],
                 "bbox": [round(box[0], 2), round(box[1], 2), round(box[2] - box[0], 2),
                          round(box[3] - box[1], 2)], "score": round(float(score), 5)}
        if rles is not None:
            entry["segmentation"] = rles[i]
        entries.append(entry)
    return entries


def _encode_masks(masks, scale: float, h: int, w: int) -> list[dict]:
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    masks = masks[:, :nh, :nw].float()[None]
    masks = torch.nn.functional.interpolate(masks.cpu(), size=(h, w), mode="bilinear",
                                            align_corners=False)[0] > 0.5
    arr = np.asfortranarray(masks.numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(arr)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


BACKENDS = ("pycocotools", "faster_coco_eval")


def _evaluator(backend: str, coco_gt):
    """pycocotools (default) or faster-coco-eval: same metrics (tested), several times faster."""
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        return coco_gt, COCOeval
    if backend != "faster_coco_eval":
        raise UserError(f"eval.backend {backend!r}: use {' or '.join(BACKENDS)}")
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise MissingDependency("eval.backend=faster_coco_eval needs pip install "
                                "'detcore[fast-eval]'") from None
    gt = COCO()
    gt.dataset = coco_gt.dataset
    gt.createIndex()
    return gt, COCOeval_faster


def coco_metrics(coco_gt, results: list[dict], iou_types: tuple[str, ...],
                 backend: str = "pycocotools") -> dict:
    """The COCO summary numbers, named as mmdet names them (``bbox_mAP``, ``bbox_mAP_50``...)."""
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, COCOeval = _evaluator(backend, coco_gt)
    for iou_type in iou_types:
        # shallow copies: loadRes adds and replaces keys in the dicts it is given
        usable = [dict(r) for r in results if iou_type == "bbox" or "segmentation" in r]
        if not usable:
            metrics.update({f"{iou_type}_{n}": 0.0 for n in METRIC_NAMES})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(usable)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        for name, value in zip(METRIC_NAMES, ev.stats[:6]):
            metrics[f"{iou_type}_{name}"] = round(max(0.0, float(value)), 4)
    return metrics


def evaluate_model(ctx, model, dataset) -> dict:
    """Core's default ``evaluate``: sharded over ranks, merged on every rank, scored once."""
    from .train.loader import eval_loader

    loader = eval_loader(dataset, int(ctx.config["eval"]["batch_size"]),
                         int(ctx.config["data"]["workers"]), ctx.rank, ctx.world_size)
    results = predict_dataset(model, loader, ctx.device, str(ctx.config["train"]["amp"]),
                              ctx.progress)
    results = [r for part in dist.all_gather_objects(results) for r in part]
    results.sort(key=lambda r: (r["image_id"], -r["score"]))
    iou_types = ("bbox", "segm") if ctx.spec.task_type == "segm" else ("bbox",)
    metrics = coco_metrics(dataset.coco, results, iou_types, str(ctx.config["eval"]["backend"]))
    if ctx.is_main:
        path = Path(ctx.work_dir) / "predictions.json"
        path.write_text(json.dumps(results))
        ctx.artifacts["predictions"] = str(path)
    return metrics
