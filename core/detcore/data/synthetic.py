"""A deterministic synthetic dataset in COCO layout: shapes with boxes and polygon masks.

It is the default when ``--data`` is omitted, so every workflow runs offline.
Shapes do not overlap, so each polygon is the object's exact visible mask, and
the class is the shape (colours are random), which a detector learns in minutes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SHAPES = ("square", "circle", "triangle", "diamond", "hexagon", "star")


@dataclass(frozen=True)
class SynthSpec:
    num_train: int = 256
    num_val: int = 64
    num_classes: int = 3
    min_size: int = 192
    max_size: int = 320
    max_objects: int = 4
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def default_root() -> Path:
    return Path(os.environ.get("DETCORE_CACHE", Path.home() / ".cache" / "detcore")) / "synthetic"


def ensure_synthetic(spec: SynthSpec = SynthSpec(), root: Path | None = None) -> Path:
    """Return the dataset for ``spec``, writing it once (atomically) if it is not there yet."""
    target = (root or default_root()) / f"synth-{spec.key()}"
    if (target / "annotations" / "instances_val2017.json").exists():
        return target
    write_synthetic(target, spec)
    return target


def write_synthetic(target: Path, spec: SynthSpec = SynthSpec()) -> Path:
    """Write the dataset to ``target`` through a temporary sibling and a rename."""
    if not 1 <= spec.num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be 1..{len(SHAPES)}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".synth-", dir=target.parent))
    try:
        rng = np.random.default_rng(spec.seed)
        categories = [{"id": i + 1, "name": SHAPES[i], "supercategory": "shape"}
                      for i in range(spec.num_classes)]
        image_id = ann_id = 0
        for split, count in (("train2017", spec.num_train), ("val2017", spec.num_val)):
            (tmp / split).mkdir()
            images, annotations = [], []
            for _ in range(count):
                image_id += 1
                width, height = (int(v) for v in rng.integers(spec.min_size, spec.max_size + 1, 2))
                image, objects = _draw_image(rng, width, height, spec)
                name = f"{image_id:012d}.jpg"
                image.save(tmp / split / name, quality=95)
                images.append({"id": image_id, "file_name": name, "width": width, "height": height})
                for label, polygon in objects:
                    ann_id += 1
                    annotations.append(_annotation(ann_id, image_id, label + 1, polygon))
            (tmp / "annotations").mkdir(exist_ok=True)
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(
                {"info": {"description": "detcore synthetic shapes", "spec": asdict(spec)},
                 "images": images, "annotations": annotations, "categories": categories}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _annotation(ann_id: int, image_id: int, category_id: int, polygon: np.ndarray) -> dict:
    xs, ys = polygon[:, 0], polygon[:, 1]
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": 0,
            "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
            "area": round(float(area), 2),
            "segmentation": [[round(float(v), 2) for v in polygon.reshape(-1)]]}


def _draw_image(rng, width: int, height: int, spec: SynthSpec):
    from PIL import Image, ImageDraw

    base = rng.integers(0, 256, 3)
    noise = rng.normal(0, 12, (height, width, 3))
    ramp = np.linspace(-20, 20, width)[None, :, None]
    pixels = np.clip(base + noise + ramp, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    boxes, objects = [], []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        for _attempt in range(20):
            size = float(rng.uniform(0.15, 0.4) * min(width, height))
            cx = float(rng.uniform(size / 2, width - size / 2))
            cy = float(rng.uniform(size / 2, height - size / 2))
            box = (cx - size / 2 - 2, cy - size / 2 - 2, cx + size / 2 + 2, cy + size / 2 + 2)
            if all(not _overlaps(box, other) for other in boxes):
                break
        else:
            continue
        label = int(rng.integers(0, spec.num_classes))
        polygon = _polygon(SHAPES[label], cx, cy, size / 2, float(rng.uniform(0, math.pi)))
        colour = tuple(int(c) for c in (base + rng.integers(80, 176, 3)) % 256)
        draw.polygon([tuple(p) for p in polygon], fill=colour)
        boxes.append(box)
        objects.append((label, polygon))
    return image, objects


def _overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    def ring(n, radius, start):
        t = start + np.arange(n) * 2 * math.pi / n
        return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1)

    if shape == "square":
        return ring(4, r, math.pi / 4)
    if shape == "circle":
        return ring(32, r, 0.0)
    if shape == "triangle":
        return ring(3, r, angle)
    if shape == "diamond":
        pts = ring(4, 1.0, 0.0)
        return np.stack([cx + (pts[:, 0] - cx) * r * 0.6, cy + (pts[:, 1] - cy) * r], axis=1)
    if shape == "hexagon":
        return ring(6, r, angle)
    outer, inner = ring(5, r, angle), ring(5, r * 0.45, angle + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)  # star
