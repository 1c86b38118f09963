"""Datasets in COCO form, read with pycocotools and checked up front so bad data fails in one line.

``--data`` may hold any layout :mod:`.layout` detects: COCO as in the reference READMEs::

    ROOT/annotations/instances_{train,val}2017.json
    ROOT/train2017/*.jpg   ROOT/val2017/*.jpg

or YOLO (:mod:`.yolo`) or Pascal VOC (:mod:`.voc`), converted in memory to the same COCO dict.
Every layout then goes through the same checks and repairs here (:func:`load_coco`).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import UserError
from .layout import Raw, detect
from .transforms import DEFAULT, LetterboxPolicy, hflip, letterbox, letterbox_masks, to_rgb_array
from .voc import read_voc
from .yolo import read_yolo

log = logging.getLogger("detcore.data")
SPLITS = {"train": "train2017", "val": "val2017"}
CLIPPED = "boxes clipped to their image"
#: A box past its image edge by at most this is rounding (YOLO's 6-decimal normalised labels
#: end at 1.0000005): clipped without a count.
NOISE_PX = 0.01


class Split(NamedTuple):
    """One split in COCO form: the indexed ``COCO``, the folder its ``file_name``s are relative
    to, the counted repairs (``report``), how messages name its source, and the layout read."""

    coco: Any
    image_dir: Path
    report: Counter
    where: str
    layout: str


def annotation_file(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{SPLITS[split]}.json"


def load_coco(root: Path, split: str) -> Split:
    """The ``split`` of the dataset at ``root``, whatever its layout: read, checked, repaired
    with counted warnings, and indexed by pycocotools for training and evaluation alike."""
    from pycocotools.coco import COCO

    layout = detect(root)
    raw = {"coco": read_coco_json, "yolo": read_yolo, "voc": read_voc}[layout](Path(root), split)
    dataset = raw.dataset
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise UserError(f"{raw.where}: missing or invalid {key!r} list")
    if not dataset["categories"]:
        raise UserError(f"{raw.where}: 'categories' is empty; a detector needs at least one class")
    if not dataset["images"]:
        raise UserError(f"{raw.where}: the dataset has no images")
    report = _clean(dataset, raw.image_dir, raw.where, raw.problems)
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return Split(coco, raw.image_dir, report, raw.where, layout)


def read_coco_json(root: Path, split: str) -> Raw:
    """A COCO layout's annotation file for ``split``, with its JSON and folders checked."""
    ann = annotation_file(root, split)
    if not ann.parent.is_dir():
        raise UserError(f"{root} has no annotations/ folder: expected {ann}")
    if not ann.is_file():
        raise UserError(f"missing annotation file {ann} for the {split} split")
    try:
        dataset = json.loads(ann.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{ann} is not valid JSON ({exc}); re-export or re-download it") from None
    if not isinstance(dataset, dict):
        raise UserError(f"{ann}: top level must be an object with images/annotations/categories")
    image_dir = root / SPLITS[split]
    if not image_dir.is_dir():
        raise UserError(f"image folder {image_dir} does not exist")
    return Raw(dataset, image_dir, str(ann), Counter())


def _clean(dataset: dict, image_dir: Path, where: str, problems: Counter) -> Counter:
    """Check references and geometry; fix what is safe (clip, drop) and count it, adding to
    what the layout's reader already counted (``problems``)."""
    report: Counter = Counter(problems)
    try:
        images = {img["id"]: img for img in dataset["images"]}
        cat_ids = {cat["id"] for cat in dataset["categories"]}
    except (KeyError, TypeError) as exc:
        raise UserError(f"{where}: an image or category entry lacks {exc}") from None
    missing = [img["file_name"] for img in images.values()
               if not (image_dir / str(img.get("file_name", ""))).is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) listed in {where} are missing from "
                        f"{image_dir}, e.g. {missing[0]}; fix the paths or remove those entries")
    kept = []
    for a in dataset["annotations"]:
        try:
            img = images.get(a["image_id"])
            x, y, w, h = (float(v) for v in a["bbox"])
            cat = a["category_id"]
        except (KeyError, TypeError, ValueError):
            report["malformed annotations dropped"] += 1
            continue
        if img is None:
            report["annotations naming an unknown image dropped"] += 1
            continue
        if cat not in cat_ids:
            report["annotations with an unknown category dropped"] += 1
            continue
        if not (w > 0 and h > 0):
            report["boxes with zero or negative size dropped"] += 1
            continue
        W, H = img.get("width"), img.get("height")
        if W and H:
            x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(W), x + w), min(float(H), y + h)
            if x1 - x0 < 1 or y1 - y0 < 1:
                report["boxes outside their image dropped"] += 1
                continue
            if (x0, y0, x1, y1) != (x, y, x + w, y + h):
                if max(x0 - x, y0 - y, x + w - x1, y + h - y1) > NOISE_PX:
                    report[CLIPPED] += 1
                a["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
        kept.append(a)
    dataset["annotations"] = kept
    for problem, count in sorted(report.items()):
        log.warning("%s: %d %s", where, count, problem)
    return report


class CocoDetection:
    """A torch-style dataset over one split: letterboxed uint8 images and targets.

    Labels are contiguous ``0..C-1`` in the order of sorted category ids;
    ``label_to_cat`` maps them back for COCO results. Images with no usable
    annotations are kept for evaluation and skipped for training.
    """

    def __init__(self, root, split: str, input_size, *, masks: bool = False,
                 hflip_prob: float = 0.0, train: bool = False, max_images: int = 0,
                 letterbox: LetterboxPolicy = DEFAULT):
        self.root, self.split = Path(root), split
        self.letterbox = letterbox
        self.coco, self.image_dir, self.report, self.where, self.layout = load_coco(self.root, split)
        self.input_size = tuple(int(v) for v in input_size)
        self.masks, self.hflip_prob, self.train = masks, hflip_prob, train
        cats = sorted(self.coco.getCatIds())
        self.label_to_cat = cats
        self.cat_to_label = {c: i for i, c in enumerate(cats)}
        self.class_names = [self.coco.cats[c]["name"] for c in cats]
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if self._annotations(i)]
            if not ids:
                raise UserError(f"{self.where}: no image has a usable annotation; nothing to "
                                f"train on")
        self.ids = ids[:max_images] if max_images else ids
        self.seed, self.epoch = 0, 0

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Augmentation draws depend on (seed, epoch, index) only: resumable and worker-safe."""
        self.epoch, self.seed = epoch, seed

    @property
    def num_classes(self) -> int:
        return len(self.label_to_cat)

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int) -> list[dict]:
        return [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]

    def read_image(self, image_id: int) -> np.ndarray | None:
        path = self.image_dir / self.coco.imgs[image_id]["file_name"]
        image, reason = read_rgb(path)
        if image is None:
            log.warning("skipping unreadable image %s: %s", path, reason)
        return image

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = self.read_image(image_id)
        if image is None:
            return None
        anns = self._annotations(image_id)
        h, w = image.shape[:2]
        canvas, scale = letterbox(image, self.input_size, self.letterbox)
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns], dtype=np.float32).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        boxes = self.letterbox.to_canvas(boxes, (h, w), scale)
        labels = np.array([self.cat_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        masks = None
        if self.masks:
            raw = np.stack([self._mask(a, h, w) for a in anns]) if anns else np.zeros((0, h, w), np.uint8)
            masks = letterbox_masks(raw, scale, self.input_size, self.letterbox)
        flip_draw = np.random.default_rng((self.seed, self.epoch, index)).random()
        if self.train and self.hflip_prob and flip_draw < self.hflip_prob:
            canvas, boxes, masks = hflip(canvas, boxes, masks)
        return make_sample(canvas, boxes, labels, masks, image_id, scale, (h, w))

    def _mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        from pycocotools import mask as mask_utils

        seg = ann.get("segmentation")
        if not seg:  # no polygon: the box is the mask
            m = np.zeros((h, w), np.uint8)
            x, y, bw, bh = (int(round(v)) for v in ann["bbox"])
            m[y:y + bh, x:x + bw] = 1
            return m
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = seg
        return mask_utils.decode(rle).astype(np.uint8)


def read_rgb(path: Path) -> tuple[np.ndarray | None, str]:
    """``(HWC uint8 RGB, "")``, or ``(None, why)`` when the file does not decode: the one
    reading of an image that training, evaluation and ``detcore data check`` share."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return to_rgb_array(im), ""
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return None, str(exc)


def make_sample(canvas, boxes, labels, masks, image_id, scale, orig_size):
    import torch

    target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
              "image_id": int(image_id), "scale": float(scale), "orig_size": tuple(orig_size)}
    if masks is not None:
        target["masks"] = torch.from_numpy(masks)
    return torch.from_numpy(canvas).permute(2, 0, 1).contiguous(), target


def collate(batch):
    """Stack images (uint8), keep targets as a list; drop unreadable samples."""
    import torch

    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]
