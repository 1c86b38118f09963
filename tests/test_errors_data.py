"""Catalogue, data: every bad dataset gives one line and exit 2, or a counted warning."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from detcore.data.synthetic import SynthSpec, write_synthetic

from .conftest import assert_user_error

SPEC = SynthSpec(num_train=8, num_val=4, min_size=96, max_size=128)
TRAIN = ("--set", "train.max_steps=2", "--set", "train.eval_after=false", "--set",
         "data.batch_size=2")


@pytest.fixture
def coco(tmp_path):
    return write_synthetic(tmp_path / "coco", SPEC)


def ann(root):
    return root / "annotations" / "instances_train2017.json"


def edit(root, fn):
    data = json.loads(ann(root).read_text())
    fn(data)
    ann(root).write_text(json.dumps(data))


def train(run_cli, root, tmp_path):
    return run_cli("run", "--model", "tiny-fcos", "--task", "train", "--data", root,
                   "--work-dir", tmp_path / "work", *TRAIN)


def test_missing_dataset_root(run_cli, tmp_path):
    assert_user_error(train(run_cli, tmp_path / "nowhere", tmp_path), 2, "does not exist", "--data")


def test_missing_annotations_folder(run_cli, coco, tmp_path):
    shutil.rmtree(coco / "annotations")
    assert_user_error(train(run_cli, coco, tmp_path), 2, "no annotations/ folder")


def test_malformed_json(run_cli, coco, tmp_path):
    ann(coco).write_text("{'images': []}")
    assert_user_error(train(run_cli, coco, tmp_path), 2, "is not valid JSON")


def test_truncated_json(run_cli, coco, tmp_path):
    ann(coco).write_text(ann(coco).read_text()[:500])
    assert_user_error(train(run_cli, coco, tmp_path), 2, "is not valid JSON")


def test_annotation_names_missing_image(run_cli, coco, tmp_path):
    edit(coco, lambda d: d["images"][0].update(file_name="gone.jpg"))
    assert_user_error(train(run_cli, coco, tmp_path), 2, "missing from", "gone.jpg")


def test_empty_dataset(run_cli, coco, tmp_path):
    edit(coco, lambda d: d.update(images=[], annotations=[]))
    assert_user_error(train(run_cli, coco, tmp_path), 2, "has no images")


def test_corrupt_jpeg_is_skipped_with_warning(run_cli, coco, tmp_path):
    sorted((coco / "train2017").iterdir())[0].write_bytes(b"\xff\xd8\xff\xe0garbage")
    proc = train(run_cli, coco, tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "skipping unreadable image" in proc.stderr


@pytest.mark.parametrize("mode", ["L", "CMYK", "I;16"])
def test_grayscale_cmyk_and_16bit_images_train(run_cli, coco, tmp_path, mode):
    def convert(d):
        for img in d["images"][:3]:
            path = coco / "train2017" / img["file_name"]
            rgb = Image.open(path).convert("RGB")
            if mode == "I;16":
                out, name = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257), path.stem + ".png"
            else:
                out, name = rgb.convert(mode), path.name
            out.save(coco / "train2017" / name)
            img["file_name"] = name
    edit(coco, convert)
    proc = train(run_cli, coco, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bad_boxes_are_dropped_or_clipped_with_counts(run_cli, coco, tmp_path):
    def damage(d):
        a = d["annotations"]
        a[0]["bbox"], a[1]["bbox"], a[2]["bbox"] = [5, 5, 0, 9], [5, 5, -3, 9], [-20, -20, 60, 60]
        a[3]["bbox"] = [9000, 9000, 5, 5]
    edit(coco, damage)
    proc = train(run_cli, coco, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 boxes with zero or negative size dropped" in proc.stderr
    assert "1 boxes clipped to their image" in proc.stderr
    assert "1 boxes outside their image dropped" in proc.stderr


def test_image_without_annotations_and_sparse_category_ids(run_cli, coco, tmp_path):
    def change(d):
        first = d["images"][0]["id"]
        d["annotations"] = [a for a in d["annotations"] if a["image_id"] != first]
        for c in d["categories"]:
            c["id"] += 40
        for a in d["annotations"]:
            a["category_id"] += 40
    edit(coco, change)
    proc = train(run_cli, coco, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture
def layouts(coco, tmp_path):
    """The same images and boxes as a YOLO and a Pascal VOC dataset (the tests' own writers)."""
    from .dataset_writers import boxes_from_synthetic, write_voc, write_yolo

    boxes = boxes_from_synthetic(coco)
    return {"yolo": write_yolo(boxes, tmp_path / "yolo"), "voc": write_voc(boxes, tmp_path / "voc")}


def test_unknown_dataset_layout(run_cli, tmp_path):
    (tmp_path / "photos" / "holiday").mkdir(parents=True)
    assert_user_error(train(run_cli, tmp_path / "photos", tmp_path), 2,
                      "not a dataset layout", "COCO (", "YOLO (", "Pascal VOC (")


def test_yolo_yaml_without_train_entry(run_cli, layouts, tmp_path):
    spec = layouts["yolo"] / "data.yaml"
    spec.write_text(spec.read_text().replace("train: images/train\n", ""))
    assert_user_error(train(run_cli, layouts["yolo"], tmp_path), 2, "no 'train' entry",
                      "data.yaml")


def test_yolo_bad_label_lines_are_dropped_with_counts(run_cli, layouts, tmp_path):
    labels = sorted((layouts["yolo"] / "labels" / "train").iterdir())
    labels[0].write_text(labels[0].read_text() + "9 0.5 0.5 0.1 0.1\n0 0.5 0.5\n")
    labels[1].unlink()
    proc = train(run_cli, layouts["yolo"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1 label lines with a class id outside names dropped" in proc.stderr
    assert "1 label lines that do not parse dropped" in proc.stderr
    assert "1 images without a label file (kept as background)" in proc.stderr


def test_voc_missing_split_list(run_cli, layouts, tmp_path):
    (layouts["voc"] / "ImageSets" / "Main" / "train.txt").unlink()
    assert_user_error(train(run_cli, layouts["voc"], tmp_path), 2, "missing", "train.txt")


def test_data_check_exits_2_on_errors_0_on_warnings(run_cli, layouts):
    root = layouts["voc"]
    assert run_cli("data", "check", root).returncode == 0
    xml = sorted((root / "Annotations").iterdir())[0]
    xml.write_text(re.sub(r"<xmin>\d+</xmin>", "<xmin>-3</xmin>", xml.read_text(), count=1))
    warned = run_cli("data", "check", root)
    assert warned.returncode == 0 and "warning" in warned.stdout, warned.stdout
    sorted((root / "Annotations").iterdir())[1].write_text("<annotation>")
    failed = run_cli("data", "check", root)
    assert_user_error(failed, 2, "1 error(s)")
    assert "error   train: 1 annotation files that do not parse dropped" in failed.stdout
