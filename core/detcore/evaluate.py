"""COCO evaluation with pycocotools: bbox for every model, segm for ``segm`` models."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from . import distributed as dist
from .config_schema import EVAL_BACKENDS as BACKENDS  # the choices of eval.backend
from .data.transforms import DEFAULT, LetterboxPolicy
from .errors import MissingDependency, UserError

METRIC_NAMES = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")
#: The last evaluation's precision arrays (:func:`save_curves`), in the work dir.
CURVES = "eval_curves.npz"


@torch.inference_mode()
def predict_dataset(model, loader, device, amp: str = "off", progress: bool = False) -> list[dict]:
    """Run ``model`` over ``loader``; return COCO result dicts in original-image coordinates."""
    from tqdm import tqdm

    from .train.amp import autocast

    model.eval()
    results: list[dict] = []
    dataset = loader.dataset.dataset
    for batch in tqdm(loader, disable=not progress, desc="eval", leave=False):
        if batch is None:
            continue
        images, targets = batch
        images = images.to(device).float().div_(255)
        with autocast(device, amp):
            outputs = model(images)
        for out, target in zip(outputs, targets):
            results.extend(to_coco_results(out, target, dataset.label_to_cat, dataset.letterbox))
    return results


def to_coco_results(out: dict, target: dict, label_to_cat: list[int],
                    letterbox: LetterboxPolicy = DEFAULT) -> list[dict]:
    """One image's predictions (canvas pixels) -> COCO json entries (original pixels), mapped
    back as ``letterbox`` placed the image on the canvas."""
    scale, (h, w) = target["scale"], target["orig_size"]
    scores = out["scores"].float().cpu()
    keep = scores > 0
    boxes = letterbox.to_original(out["boxes"].float().cpu()[keep], (h, w), scale)
    labels = out["labels"].cpu()[keep].tolist()
    scores = scores[keep].tolist()
    rles = (_encode_masks(out["masks"][keep], letterbox.resized_size(h, w, scale), h, w)
            if "masks" in out else None)
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


def _encode_masks(masks, resized_size: tuple[int, int], h: int, w: int) -> list[dict]:
    from pycocotools import mask as mask_utils

    from .predict import masks_to_original

    if len(masks) == 0:
        return []
    masks = masks_to_original(masks, resized_size, (h, w))
    arr = np.asfortranarray(masks.numpy().astype(np.uint8).transpose(1, 2, 0))
    rles = mask_utils.encode(arr)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


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
                 backend: str = "pycocotools", curves: dict | None = None) -> dict:
    """The COCO summary numbers, named as mmdet names them (``bbox_mAP``, ``bbox_mAP_50``...).

    ``curves``, when given, receives each IoU type's :func:`pr_arrays` from the same evaluation
    (the precision-recall plots are drawn from the numbers these metrics summarise)."""
    metrics: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, COCOeval = _evaluator(backend, coco_gt)
    for iou_type in iou_types:
        # shallow copies: loadRes adds and replaces keys in the dicts it is given. segm results
        # go without their box, as mmdet writes them: given a "bbox", loadRes takes the box's
        # area for the small/medium/large ranges instead of the mask's.
        usable = [dict(r) for r in results if iou_type == "bbox" or "segmentation" in r]
        if iou_type == "segm":
            for r in usable:
                r.pop("bbox", None)
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
        if curves is not None:
            curves[iou_type] = pr_arrays(ev)
    return metrics


def pr_arrays(ev) -> dict[str, np.ndarray]:
    """What precision-recall curves need from an accumulated COCOeval (pycocotools or
    faster-coco-eval, same layout): ``precision`` [T, R, K] (IoU thresholds x the 101 recall
    points x categories, -1 for a category without ground truth) for area "all" at the summary's
    detection cap, with ``iou_thrs``, ``rec_thrs``, ``cat_ids`` and the unrounded summary
    ``stats``: ``stats[0]`` is the mean of ``precision`` over its entries > -1, ``stats[1]`` the
    same at IoU 0.5."""
    p = ev.params
    area = list(p.areaRngLbl).index("all")
    cap = list(p.maxDets).index(p.maxDets[2])  # summarize()'s AP uses maxDets[2] (100)
    return {"precision": np.asarray(ev.eval["precision"], np.float64)[:, :, :, area, cap],
            "iou_thrs": np.asarray(p.iouThrs, np.float64),
            "rec_thrs": np.asarray(p.recThrs, np.float64),
            "cat_ids": np.asarray(p.catIds, np.int64),
            "stats": np.asarray(ev.stats, np.float64)}


def save_curves(path: Path, curves: dict[str, dict]) -> Path:
    """``{iou_type: pr_arrays}`` as one ``.npz`` (keys ``bbox_precision``, ``bbox_stats``...)."""
    np.savez_compressed(path, **{f"{t}_{k}": v for t, arrays in curves.items()
                                 for k, v in arrays.items()})
    return Path(path)


def load_curves(path: Path) -> dict[str, dict]:
    """What :func:`save_curves` wrote ({} when the file is absent)."""
    if not Path(path).is_file():
        return {}
    out: dict[str, dict] = {}
    with np.load(path) as data:
        for key in data.files:
            iou_type, name = key.split("_", 1)
            out.setdefault(iou_type, {})[name] = data[key]
    return out


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
    curves: dict = {}
    metrics = coco_metrics(dataset.coco, results, iou_types, str(ctx.config["eval"]["backend"]),
                           curves)
    if ctx.is_main:
        path = Path(ctx.work_dir) / "predictions.json"
        path.write_text(json.dumps(results))
        ctx.artifacts["predictions"] = str(path)
        (Path(ctx.work_dir) / CURVES).unlink(missing_ok=True)  # an earlier evaluation's
        if curves:
            ctx.artifacts["eval_curves"] = str(save_curves(Path(ctx.work_dir) / CURVES, curves))
    return metrics
