"""``detcore data check``: a dataset of any layout read exactly as training reads it
(:func:`.coco.load_coco`), every image opened, and a summary of what it holds and what is wrong,
without training and without importing torch.

Severity: an **error** is data detcore cannot use (a split that does not load, an unreadable
image, an annotation or label line it drops); a **warning** is a repair that keeps the data
(a box clipped to its image) or a YOLO image without a label file (background, by YOLO's rule).
Images without annotations are counted in the summary: they are legitimate.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import UserError
from .coco import CLIPPED, Split, load_coco, read_rgb
from .layout import detect, image_size
from .yolo import NO_LABEL_FILE

SPLITS = ("train", "val")
WARNINGS = frozenset({CLIPPED, NO_LABEL_FILE})
UNREADABLE = "unreadable images (training skips them)"
RESIZED = "images whose size differs from the width/height their annotations give"
CATEGORIES_DIFFER = "train and val list different categories (labels would not match)"


def check_dataset(root: Path, decode: bool = True, progress: bool = False) -> dict:
    """The summary and the problems, each ``{"split", "problem", "count", "severity"}``
    (``count`` None for a problem that is not counted: a split that does not load).

    ``decode``: decode every image (finds truncated files); else read headers only (faster).
    """
    root = Path(root)
    summary = {"root": str(root), "layout": detect(root), "classes": [], "splits": {}}
    problems = []
    loaded: dict[str, Split] = {}
    for split in SPLITS:
        try:
            loaded[split] = load_coco(root, split)
        except UserError as exc:
            message = " ".join(str(exc).split())
            summary["splits"][split] = {"error": message}
            problems.append({"split": split, "problem": message, "count": None, "severity": "error"})
            continue
        info, counts = _split_summary(loaded[split], decode, progress, split)
        summary["splits"][split] = info
        problems += [{"split": split, "problem": p, "count": n,
                      "severity": "warning" if p in WARNINGS else "error"}
                     for p, n in sorted(counts.items())]
    cats = {s: sorted((c["id"], c["name"]) for c in v.coco.dataset["categories"])
            for s, v in loaded.items()}
    if len(set(map(tuple, cats.values()))) > 1:
        problems.append({"split": "both", "problem": CATEGORIES_DIFFER, "count": None,
                         "severity": "error"})
    summary["classes"] = [name for _, name in next(iter(cats.values()), [])]
    summary["problems"] = problems
    summary["errors"] = sum(p["severity"] == "error" for p in problems)
    summary["warnings"] = len(problems) - summary["errors"]
    return summary


def _split_summary(split: Split, decode: bool, progress: bool, name: str) -> tuple[dict, Counter]:
    from tqdm import tqdm

    coco = split.coco
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    per_class = Counter({n: 0 for n in names.values()})
    ignored = 0
    for ann in coco.dataset["annotations"]:
        if ann.get("iscrowd", 0):
            ignored += 1
        else:
            per_class[names[ann["category_id"]]] += 1
    images = coco.dataset["images"]
    counts = Counter(split.report)
    for img in tqdm(images, disable=not progress, desc=f"check {name}", unit="img"):
        path = split.image_dir / img["file_name"]
        if decode:
            pixels, _ = read_rgb(path)
            size = None if pixels is None else (pixels.shape[1], pixels.shape[0])
        else:
            size = image_size(path)
        if size is None:
            counts[UNREADABLE] += 1
        elif img.get("width") and img.get("height") and size != (img["width"], img["height"]):
            counts[RESIZED] += 1
    without = sum(1 for img in images
                  if not any(not a.get("iscrowd", 0) for a in coco.imgToAnns.get(img["id"], [])))
    return {"source": split.where, "images": len(images), "instances": sum(per_class.values()),
            "instances_per_class": dict(per_class), "ignored_instances": ignored,
            "images_without_annotations": without}, counts


def summary_text(summary: dict) -> str:
    """The summary as people read it."""
    lines = [f"{summary['root']}: {summary['layout']} layout, {len(summary['classes'])} classes: "
             f"{', '.join(summary['classes'])}"]
    for split, info in summary["splits"].items():
        if "error" in info:
            lines.append(f"{split}: does not load")
            continue
        lines.append(f"{split} ({info['source']}): {info['images']} images, {info['instances']} "
                     f"instances, {info['ignored_instances']} ignored (iscrowd/difficult), "
                     f"{info['images_without_annotations']} images without annotations")
        lines.append("  " + ", ".join(f"{n} {c}" for n, c in info["instances_per_class"].items()))
    if summary["problems"]:
        lines.append("problems:")
        lines += [f"  {p['severity']:<8}{p['split']}: "
                  + (p["problem"] if p["count"] is None else f"{p['count']} {p['problem']}")
                  for p in summary["problems"]]
    lines.append(f"{summary['errors']} error(s), {summary['warnings']} warning(s)")
    return "\n".join(lines)
