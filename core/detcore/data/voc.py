"""Pascal VOC datasets, converted in memory to the COCO form core reads::

    ROOT/ImageSets/Main/train.txt, val.txt   one image id a line
    ROOT/Annotations/<id>.xml                size, and one <object> per box
    ROOT/JPEGImages/<id>.jpg

Point ``--data`` at the folder holding these (``VOCdevkit/VOC2007``, not ``VOCdevkit``).

- Boxes: VOC's corners are 1-based, inclusive pixel indices; the box is
  ``(xmin - 1, ymin - 1, xmax, ymax)`` in COCO's 0-based continuous pixels, as Detectron2 reads
  VOC (so ``xmin=1, xmax=W`` covers the whole image).
- ``<difficult>1</difficult>`` objects become ``iscrowd: 1``, as mmdetection's VOC-to-COCO
  converter writes them: not trained on, and ignored by COCO evaluation (a detection on one is
  neither a true nor a false positive), which is what VOC's own metric does with them.
- Classes: the 20 VOC names in VOC's order when every name in the train and val XMLs is one of
  them (the numbering mmdetection and Detectron2 use), else the sorted names found; category ids
  start at 1. Masks, where a segm model needs them, are the boxes (no polygons in VOC XML).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from ..errors import UserError
from .layout import Raw, image_size

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
SPLITS = ("train", "val")

NO_XML = "image ids without an Annotations/<id>.xml dropped"
BAD_XML = "annotation files that do not parse dropped"
BAD_OBJECT = "objects without a name or a numeric bndbox dropped"


def read_voc(root: Path, split: str) -> Raw:
    """The ``split`` (``train`` or ``val``) of the VOC dataset at ``root`` in COCO form."""
    root = Path(root)
    # both splits' XMLs name the classes, so train and val number them alike
    ids = {s: split_ids(root, s) for s in SPLITS if s == split or split_file(root, s).is_file()}
    problems: Counter = Counter()
    parsed = {i: _parse(root, i, problems if s == split else Counter())
              for s in ids for i in ids[s]}
    names = class_names(o["name"] for p in parsed.values() if p for o in p["objects"])
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for image_id in ids[split]:
        record = parsed[image_id]
        if record is None:
            continue
        images.append({"id": len(images) + 1, "file_name": record["file_name"],
                       "width": record["width"], "height": record["height"]})
        for obj in record["objects"]:
            x0, y0, x1, y1 = obj["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"],
                                "category_id": cat_ids[obj["name"]], "iscrowd": obj["difficult"],
                                "bbox": [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1]})
    dataset = {"info": {"description": f"Pascal VOC dataset {root}, converted by detcore"},
               "images": images, "annotations": annotations,
               "categories": [{"id": cat_ids[n], "name": n} for n in names]}
    return Raw(dataset, root / "JPEGImages", str(split_file(root, split)), problems)


def split_file(root: Path, split: str) -> Path:
    return root / "ImageSets" / "Main" / f"{split}.txt"


def split_ids(root: Path, split: str) -> list[str]:
    path = split_file(root, split)
    if not path.is_file():
        raise UserError(f"missing {path} for the {split} split: a Pascal VOC dataset lists its "
                        f"image ids in ImageSets/Main/train.txt and val.txt")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file of image ids") from None
    return list(dict.fromkeys(line.split()[0] for line in lines if line.strip()))


def class_names(found) -> list[str]:
    names = set(found)
    return list(VOC_CLASSES) if names and names <= set(VOC_CLASSES) else sorted(names)


def _parse(root: Path, image_id: str, problems: Counter) -> dict | None:
    """One XML: file name, size and objects; None (counted) when it is missing or broken."""
    path = root / "Annotations" / f"{image_id}.xml"
    if not path.is_file():
        problems[NO_XML] += 1
        return None
    try:
        tree = ET.parse(path).getroot()
    except (ET.ParseError, OSError, UnicodeDecodeError):
        problems[BAD_XML] += 1
        return None
    file_name = f"{image_id}.jpg"
    given = (tree.findtext("filename") or "").strip()
    if not (root / "JPEGImages" / file_name).is_file() and given \
            and (root / "JPEGImages" / given).is_file():
        file_name = given
    width, height = _int(tree.findtext("size/width")), _int(tree.findtext("size/height"))
    if not (width and height):
        width, height = image_size(root / "JPEGImages" / file_name) or (0, 0)
    objects = []
    for obj in tree.findall("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            box = [float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            box = None
        if not name or box is None:
            problems[BAD_OBJECT] += 1
            continue
        objects.append({"name": name, "box": box, "difficult": int(_int(obj.findtext("difficult")) == 1)})
    return {"file_name": file_name, "width": width, "height": height, "objects": objects}


def _int(text: str | None) -> int:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return 0
