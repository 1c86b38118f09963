"""The tests' own writers of the three dataset layouts, all from one set of images and boxes.

:func:`boxes_from_synthetic` takes core's synthetic dataset and keeps what every layout can say:
integer pixel boxes (VOC stores integers) and categories numbered in sorted-name order (VOC's
order for names outside its 20). :func:`write_coco`, :func:`write_yolo` and :func:`write_voc`
then write the same data as a COCO root, a YOLO dataset (``data.yaml``, normalised ``.txt``
labels) and a Pascal VOC dataset (XML written with ``xml.etree``), so a test can check that each
reads back as the same ground truth and trains to the same model.
"""
from __future__ import annotations

import json
import math
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

SPLITS = {"train": "train2017", "val": "val2017"}


def boxes_from_synthetic(root: Path) -> dict:
    """``{"categories": [names], "splits": {split: [image]}}`` where each image is
    ``{"path", "width", "height", "objects": [(name, x0, y0, x1, y1, difficult)]}``."""
    out = {"splits": {}}
    for split, folder in SPLITS.items():
        data = json.loads((root / "annotations" / f"instances_{folder}.json").read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        out["categories"] = sorted(names.values())
        images = []
        for img in sorted(data["images"], key=lambda i: i["id"]):
            objects = []
            for a in (a for a in data["annotations"] if a["image_id"] == img["id"]):
                x, y, w, h = a["bbox"]
                objects.append((names[a["category_id"]], math.floor(x), math.floor(y),
                                min(img["width"], math.ceil(x + w)),
                                min(img["height"], math.ceil(y + h)), 0))
            images.append({"path": root / folder / img["file_name"], "width": img["width"],
                           "height": img["height"], "objects": objects})
        out["splits"][split] = images
    return out


def write_coco(data: dict, target: Path) -> Path:
    """A COCO root: ``annotations/instances_*.json`` with boxes (area w*h), images copied."""
    cat_ids = {n: i + 1 for i, n in enumerate(data["categories"])}
    image_id = ann_id = 0
    (target / "annotations").mkdir(parents=True)
    for split, folder in SPLITS.items():
        (target / folder).mkdir()
        images, annotations = [], []
        for img in data["splits"][split]:
            image_id += 1
            shutil.copy(img["path"], target / folder / img["path"].name)
            images.append({"id": image_id, "file_name": img["path"].name,
                           "width": img["width"], "height": img["height"]})
            for name, x0, y0, x1, y1, difficult in img["objects"]:
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id,
                                    "category_id": cat_ids[name], "iscrowd": difficult,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                                    "area": (x1 - x0) * (y1 - y0)})
        (target / "annotations" / f"instances_{folder}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations,
             "categories": [{"id": i, "name": n} for n, i in cat_ids.items()]}))
    return target


def write_yolo(data: dict, target: Path, names_as_dict: bool = False) -> Path:
    """A YOLO dataset: ``data.yaml``, ``images/<split>/``, ``labels/<split>/*.txt``."""
    classes = {n: i for i, n in enumerate(data["categories"])}
    for split, images in data["splits"].items():
        (target / "images" / split).mkdir(parents=True)
        (target / "labels" / split).mkdir(parents=True)
        for img in images:
            shutil.copy(img["path"], target / "images" / split / img["path"].name)
            W, H = img["width"], img["height"]
            lines = [f"{classes[name]} {(x0 + x1) / 2 / W!r} {(y0 + y1) / 2 / H!r} "
                     f"{(x1 - x0) / W!r} {(y1 - y0) / H!r}"
                     for name, x0, y0, x1, y1, _ in img["objects"]]
            (target / "labels" / split / f"{img['path'].stem}.txt").write_text(
                "".join(f"{line}\n" for line in lines))
    names = dict(enumerate(data["categories"])) if names_as_dict else list(data["categories"])
    (target / "data.yaml").write_text(yaml.safe_dump(
        {"path": ".", "train": "images/train", "val": "images/val", "names": names}))
    return target


def write_voc(data: dict, target: Path) -> Path:
    """A Pascal VOC dataset: ``Annotations/*.xml``, ``ImageSets/Main/*.txt``, ``JPEGImages/``."""
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (target / sub).mkdir(parents=True)
    for split, images in data["splits"].items():
        ids = []
        for img in images:
            stem = img["path"].stem
            ids.append(stem)
            shutil.copy(img["path"], target / "JPEGImages" / img["path"].name)
            ET.ElementTree(voc_xml(img["path"].name, img["width"], img["height"],
                                   img["objects"])).write(target / "Annotations" / f"{stem}.xml")
        (target / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return target


def voc_xml(file_name: str, width: int, height: int, objects) -> ET.Element:
    """One VOC annotation; corners written 1-based and inclusive, as VOC stores them."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for name, x0, y0, x1, y1, difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(difficult)
        box = ET.SubElement(obj, "bndbox")
        for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, key).text = str(value)
    return root


WRITERS = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}
