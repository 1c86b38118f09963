"""COCO evaluation time on a fixed detection file: pycocotools vs faster-coco-eval."""
from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np


def detection_file(root: Path, out: Path, per_image: int = 100, seed: int = 0) -> Path:
    """Jittered copies of the ground truth plus false positives: a realistic, fixed result file."""
    rng = np.random.default_rng(seed)
    gt = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    cats = [c["id"] for c in gt["categories"]]
    by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    dets = []
    for img in gt["images"]:
        anns = by_image.get(img["id"], [])
        for i in range(per_image):
            if anns and i < 3 * len(anns):
                a = anns[i % len(anns)]
                x, y, w, h = a["bbox"]
                j = rng.normal(0, 0.08 * max(w, h), 4)
                box, cat, score = [x + j[0], y + j[1], max(1, w + j[2]), max(1, h + j[3])], \
                    a["category_id"], float(rng.uniform(0.3, 1.0))
            else:
                w, h = rng.uniform(5, img["width"] / 2), rng.uniform(5, img["height"] / 2)
                box = [rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h), w, h]
                cat, score = int(rng.choice(cats)), float(rng.uniform(0, 0.5))
            dets.append({"image_id": img["id"], "category_id": cat, "score": round(score, 4),
                         "bbox": [round(float(v), 2) for v in box]})
    out.write_text(json.dumps(dets))
    return out


def compare(root: Path, dets_path: Path) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ann = str(root / "annotations" / "instances_val2017.json")
    results = {}
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        gt = COCO(ann)
        ev = COCOeval(gt, gt.loadRes(str(dets_path)), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
        results["pycocotools"] = (time.perf_counter() - t0, list(ev.stats))
        try:
            from faster_coco_eval import COCO as FCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError:
            fast = None
        else:
            t0 = time.perf_counter()
            fgt = FCOCO(ann)
            fev = COCOeval_faster(fgt, fgt.loadRes(str(dets_path)), "bbox")
            fev.evaluate(), fev.accumulate(), fev.summarize()
            fast = (time.perf_counter() - t0, list(fev.stats))
    out = {"pycocotools_s": round(results["pycocotools"][0], 3),
           "bbox_mAP": round(results["pycocotools"][1][0], 4),
           "detections": len(json.loads(dets_path.read_text()))}
    if fast is None:
        out["faster_coco_eval"] = "not installed (pip install faster-coco-eval)"
    else:
        diff = max(abs(a - b) for a, b in zip(results["pycocotools"][1], fast[1]))
        out.update(faster_coco_eval_s=round(fast[0], 3),
                   speedup=round(results["pycocotools"][0] / fast[0], 2),
                   max_metric_diff=round(diff, 6))
    return out
