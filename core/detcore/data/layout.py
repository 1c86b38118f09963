"""Which layout a ``--data`` folder holds (COCO, YOLO or Pascal VOC), told apart by the files
each format requires, so users pass the dataset they have and never name its format.

Torch-free and pycocotools-free: the converters and ``detcore data check`` build on it.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

from ..errors import UserError

#: Image files the YOLO converter lists and ``--task predict`` reads from a folder.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}

#: The three layouts, as the one-line error for anything else names them.
ACCEPTED = ("COCO (annotations/instances_{train,val}2017.json, train2017/, val2017/), "
            "YOLO (data.yaml with train/val/names, images/ and labels/ folders; or the .yaml "
            "itself), Pascal VOC (Annotations/*.xml, ImageSets/Main/{train,val}.txt, JPEGImages/)")

YOLO_YAMLS = ("data.yaml", "data.yml")


class Raw(NamedTuple):
    """One split as a reader returns it, before core's common checks (coco.load_coco).

    ``dataset``: a COCO-form dict (images, annotations, categories); ``image_dir``: the folder
    each image's ``file_name`` is relative to; ``where``: how messages name the split's source;
    ``problems``: what the converter dropped or noticed, counted (merged into the load report).
    """

    dataset: dict
    image_dir: Path
    where: str
    problems: Counter


def detect(root: Path) -> str:
    """``"coco"``, ``"yolo"`` or ``"voc"`` for the dataset at ``root``; a one-line error otherwise.

    VOC is tested before COCO because on a case-insensitive file system VOC's ``Annotations/``
    is also ``annotations/``; ``ImageSets/`` and ``JPEGImages/`` are VOC's alone. A folder with
    only part of a COCO layout counts as COCO, so the COCO reader names what is missing.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"dataset root {root} does not exist: pass --data DIR with a COCO, YOLO "
                        f"or Pascal VOC dataset, or omit --data for the synthetic set")
    if root.is_file():
        if root.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        raise UserError(f"--data {root} is a file; pass a dataset folder ({ACCEPTED})")
    if yolo_yaml(root) is not None:
        return "yolo"
    if (root / "ImageSets").is_dir() or (root / "JPEGImages").is_dir():
        return "voc"
    if any((root / d).is_dir() for d in ("annotations", "train2017", "val2017")):
        return "coco"
    raise UserError(f"{root} is not a dataset layout detcore reads; use one of: {ACCEPTED}")


def yolo_yaml(root: Path) -> Path | None:
    """The YOLO dataset file: ``root`` itself when it is a .yaml, else ``root/data.yaml``."""
    root = Path(root)
    if root.is_file():
        return root
    return next((root / n for n in YOLO_YAMLS if (root / n).is_file()), None)


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the file's header (no decoding), or None when unreadable.

    Sizes are the stored ones, without EXIF rotation, as the loader reads the pixels.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None
