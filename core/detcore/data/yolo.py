"""YOLO datasets (Ultralytics' layout), converted in memory to the COCO form core reads::

    ROOT/data.yaml             train: images/train   val: images/val   names: [cat, dog]
                               (path: optional, the folder the others are relative to;
                               default and base for a relative one: the .yaml's folder)
    ROOT/images/<split>/*.jpg
    ROOT/labels/<split>/*.txt  one object a line: ``class cx cy w h`` normalised to 0..1,
                               or ``class x1 y1 x2 y2 ...`` (a polygon: YOLO segmentation labels)

``names`` is a list or a ``{0: name, 1: ...}`` mapping. Each label file is where its image is
with the last ``images`` folder of the path replaced by ``labels`` (Ultralytics' rule). Category
ids are the YOLO class + 1 (COCO's start at 1) and the names are kept. An image without a label
file is background, as in Ultralytics (counted); a line that does not parse, or names a class
outside ``names``, is dropped (counted). Sizes come from the image headers.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

from ..errors import UserError
from .layout import IMAGE_SUFFIXES, Raw, image_size, yolo_yaml

NO_LABEL_FILE = "images without a label file (kept as background)"
BAD_LINE = "label lines that do not parse dropped"
BAD_CLASS = "label lines with a class id outside names dropped"
BAD_LABEL_FILE = "label files that cannot be read ignored"
UNREADABLE = "unreadable images dropped"


def read_yolo(root: Path, split: str) -> Raw:
    """The ``split`` (``train`` or ``val``) of the YOLO dataset at ``root`` in COCO form."""
    yaml_path = yolo_yaml(root)
    if yaml_path is None:
        raise UserError(f"{root} has no data.yaml")
    cfg = _read_yaml(yaml_path)
    names = _names(cfg, yaml_path)
    base = _base(cfg, yaml_path)
    images = sorted({p for folder in _split_folders(cfg, split, base, yaml_path)
                     for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()})
    problems: Counter = Counter()
    records, annotations = [], []
    for path in images:
        size = image_size(path)
        if size is None:
            problems[UNREADABLE] += 1
            continue
        width, height = size
        records.append({"id": len(records) + 1, "file_name": os.path.relpath(path, base),
                        "width": width, "height": height})
        for ann in _labels(label_path(path), width, height, len(names), problems):
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": records[-1]["id"]})
    dataset = {"info": {"description": f"YOLO dataset {yaml_path}, converted by detcore"},
               "images": records, "annotations": annotations,
               "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    return Raw(dataset, base, f"{yaml_path} ({split})", problems)


def label_path(image: Path) -> Path:
    """``.../images/x/a.jpg`` -> ``.../labels/x/a.txt`` (the last ``images`` part is replaced);
    next to the image when the path has no ``images`` folder."""
    parts = list(image.with_suffix(".txt").parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts)


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not valid YAML ({first})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a mapping with train, val and names")
    return cfg


def _names(cfg: dict, path: Path) -> list[str]:
    names = cfg.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise UserError(f"{path}: names keys must be the class ids 0..{len(names) - 1}, "
                            f"got {sorted(names, key=str)[:5]}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list):
        raise UserError(f"{path}: 'names' must be a list of class names or a {{id: name}} mapping")
    if not names:
        raise UserError(f"{path}: 'names' is empty; a detector needs at least one class")
    if "nc" in cfg and cfg["nc"] != len(names):
        raise UserError(f"{path}: nc is {cfg['nc']} but names lists {len(names)} classes")
    return [str(n) for n in names]


def _base(cfg: dict, yaml_path: Path) -> Path:
    given = cfg.get("path")
    return yaml_path.parent / given if given else yaml_path.parent


def _split_folders(cfg: dict, split: str, base: Path, yaml_path: Path) -> list[Path]:
    entry = cfg.get(split)
    if not entry:
        raise UserError(f"{yaml_path}: no {split!r} entry; data.yaml needs train: and val: "
                        f"image folders")
    folders = []
    for item in entry if isinstance(entry, list) else [entry]:
        folder = base / str(item)
        if not folder.exists() and str(item).startswith("../"):
            folder = base / str(item)[3:]  # Roboflow's exports name their own folders ../train
        if folder.is_file():
            raise UserError(f"{yaml_path}: {split} is the file list {folder}; detcore reads image "
                            f"folders: point {split}: at the folder holding the images")
        if not folder.is_dir():
            raise UserError(f"{yaml_path}: {split} image folder {folder} does not exist")
        folders.append(folder)
    return folders


def _labels(path: Path, width: int, height: int, num_classes: int, problems: Counter):
    """COCO annotations (without ids) from one label file; bad lines counted, not raised."""
    if not path.is_file():
        problems[NO_LABEL_FILE] += 1
        return
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        problems[BAD_LABEL_FILE] += 1
        return
    for line in lines:
        if not line.strip():
            continue
        try:
            cls, *coords = (float(v) for v in line.split())
        except ValueError:
            problems[BAD_LINE] += 1
            continue
        if not (len(coords) == 4 or (len(coords) >= 6 and len(coords) % 2 == 0)) \
                or not all(math.isfinite(v) for v in coords):
            problems[BAD_LINE] += 1
            continue
        if not (cls.is_integer() and 0 <= cls < num_classes):
            problems[BAD_CLASS] += 1
            continue
        yield {"category_id": int(cls) + 1, "iscrowd": 0, **_geometry(coords, width, height)}


def _geometry(coords: list[float], width: int, height: int) -> dict:
    """Normalised box or polygon -> pixel ``bbox`` (and ``segmentation`` with its mask area)."""
    if len(coords) == 4:
        cx, cy, w, h = coords
        return {"bbox": [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]}
    from pycocotools import mask as mask_utils

    polygon = [v * (width if i % 2 == 0 else height) for i, v in enumerate(coords)]
    xs, ys = polygon[0::2], polygon[1::2]
    area = float(mask_utils.area(mask_utils.frPyObjects([polygon], height, width))[0])
    return {"bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
            "segmentation": [polygon], "area": area}
