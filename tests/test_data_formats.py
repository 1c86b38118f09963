"""YOLO and Pascal VOC through ``--data``: detected, converted to the same COCO ground truth as
the same data written as COCO, scored and trained alike; and ``detcore data check``."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml

from detcore.data.check import CATEGORIES_DIFFER, RESIZED, UNREADABLE, check_dataset
from detcore.data.coco import CLIPPED, CocoDetection, load_coco
from detcore.data.layout import detect
from detcore.data.synthetic import SynthSpec, write_synthetic
from detcore.data.voc import BAD_OBJECT, BAD_XML, NO_XML, VOC_CLASSES
from detcore.data.yolo import BAD_CLASS, BAD_LINE, NO_LABEL_FILE
from detcore.errors import UserError

from .conftest import cli_env
from .dataset_writers import WRITERS, boxes_from_synthetic, voc_xml, write_voc, write_yolo

SMALL = SynthSpec(num_train=6, num_val=4, num_classes=3, min_size=64, max_size=96)
FORMATS = ("coco", "yolo", "voc")


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    return boxes_from_synthetic(write_synthetic(tmp_path_factory.mktemp("src") / "s", SMALL))


@pytest.fixture
def written(boxes, tmp_path):
    """``{layout: root}``: the same images and boxes written in each layout."""
    return {name: writer(boxes, tmp_path / name) for name, writer in WRITERS.items()}


def ground_truth(root, split):
    """Per image in id order: (file stem, size, sorted (category name, bbox, iscrowd))."""
    coco = load_coco(root, split).coco
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    out = []
    for image_id in sorted(coco.imgs):
        img = coco.imgs[image_id]
        anns = sorted((names[a["category_id"]], tuple(a["bbox"]), a["iscrowd"])
                      for a in coco.imgToAnns[image_id])
        out.append((img["file_name"].rsplit("/", 1)[-1].split(".")[0], img["width"],
                    img["height"], anns))
    return out, [names[c] for c in sorted(names)]


@pytest.mark.parametrize("layout", FORMATS)
def test_layout_is_detected(written, layout):
    assert detect(written[layout]) == layout
    assert load_coco(written[layout], "val").layout == layout


def test_unknown_layout_names_the_three(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(UserError, match="COCO .*YOLO .*Pascal VOC") as info:
        detect(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layout", ["yolo", "voc"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_converted_ground_truth_equals_coco(written, layout, split):
    want, want_names = ground_truth(written["coco"], split)
    got, got_names = ground_truth(written[layout], split)
    assert got_names == want_names == ["circle", "square", "triangle"]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    for (*_, got_anns), (*_, want_anns) in zip(got, want):
        assert [(n, c) for n, _, c in got_anns] == [(n, c) for n, _, c in want_anns]
        np.testing.assert_allclose([b for _, b, _ in got_anns], [b for _, b, _ in want_anns],
                                   atol=1e-9)


@pytest.mark.parametrize("layout", ["yolo", "voc"])
def test_same_detections_score_the_same(written, layout):
    """One set of detections (jittered ground truth, random scores, some misses and false
    positives) gives the same COCO metrics against the converted and the COCO ground truth."""
    from detcore.evaluate import coco_metrics

    rng = np.random.default_rng(0)
    ref, other = load_coco(written["coco"], "val").coco, load_coco(written[layout], "val").coco
    to_other = dict(zip(sorted(ref.imgs), sorted(other.imgs)))
    detections = []
    for ann in ref.dataset["annotations"]:
        if rng.random() < 0.2:
            continue
        box = np.asarray(ann["bbox"], float) + rng.normal(0, 2, 4)
        detections.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                           "bbox": box.round(2).tolist(), "score": float(rng.random())})
        detections.append({"image_id": ann["image_id"], "category_id": 1 + ann["category_id"] % 3,
                           "bbox": [1, 1, 20, 20], "score": float(rng.random() / 2)})
    moved = [{**d, "image_id": to_other[d["image_id"]]} for d in detections]
    want = coco_metrics(ref, detections, ("bbox",))
    assert 0.2 < want["bbox_mAP"] < 1
    assert coco_metrics(other, moved, ("bbox",)) == want


def test_yolo_yaml_file_with_path_and_names_mapping(boxes, tmp_path):
    write_yolo(boxes, tmp_path / "ds", names_as_dict=True)
    spec = tmp_path / "shapes.yaml"
    spec.write_text(yaml.safe_dump({"path": "ds", "train": "images/train", "val": ["images/val"],
                                    "nc": 3, "names": dict(enumerate(boxes["categories"]))}))
    assert detect(spec) == "yolo"
    got, names = ground_truth(spec, "val")
    assert names == boxes["categories"] and got == ground_truth(tmp_path / "ds", "val")[0]


@pytest.mark.parametrize("text, message", [
    ("train: [images/train\n", "is not valid YAML"),
    ("- a list\n", "expected a mapping"),
    ("train: images/train\nval: images/val\nnames: []\n", "'names' is empty"),
    ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "class ids 0..1"),
    ("train: images/train\nval: images/val\nnc: 4\nnames: [a, b, c]\n", "nc is 4"),
    ("train: images/train\nnames: [a, b, c]\n", "no 'val' entry"),
    ("train: images/nowhere\nval: images/val\nnames: [a, b, c]\n", "does not exist"),
    ("train: train.txt\nval: images/val\nnames: [a, b, c]\n", "file list"),
])
def test_yolo_yaml_errors_are_one_line(boxes, tmp_path, text, message):
    root = write_yolo(boxes, tmp_path / "y")
    (root / "train.txt").write_text("images/train/a.jpg\n")
    (root / "data.yaml").write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_coco(root, "train" if "val:" in text else "val")
    assert "\n" not in str(info.value)


def test_yolo_polygon_labels_become_segmentation_and_masks(boxes, tmp_path):
    root = write_yolo(boxes, tmp_path / "y")
    label = sorted((root / "labels" / "train").iterdir())[0]
    img = boxes["splits"]["train"][0]
    W, H = img["width"], img["height"]
    triangle = [(10, 10), (40, 10), (10, 30)]
    label.write_text("2 " + " ".join(f"{x / W!r} {y / H!r}" for x, y in triangle) + "\n")
    coco = load_coco(root, "train").coco
    (ann,) = coco.imgToAnns[1]
    assert ann["category_id"] == 3
    np.testing.assert_allclose(ann["bbox"], [10, 10, 30, 20], atol=1e-9)
    np.testing.assert_allclose(ann["segmentation"][0], np.ravel(triangle), atol=1e-9)
    assert 250 < ann["area"] < 350  # the mask's pixel count, about half of 30 x 20
    _, target = CocoDetection(root, "train", (96, 96), masks=True)[0]
    assert target["masks"].shape[0] == 1 and 0 < int(target["masks"][0].sum()) < 30 * 20


def test_yolo_label_problems_are_counted(boxes, tmp_path):
    root = write_yolo(boxes, tmp_path / "y")
    labels = sorted((root / "labels" / "train").iterdir())
    first = labels[0].read_text().splitlines()[0]
    labels[0].write_text(f"{first}\n7 0.5 0.5 0.1 0.1\n1 0.5 oops 0.1 0.1\n0 0.5 0.5 0.1\n"
                         f"0 0.99 0.5 0.2 0.2\n")
    labels[1].unlink()
    report = load_coco(root, "train").report
    assert report == {BAD_CLASS: 1, BAD_LINE: 2, NO_LABEL_FILE: 1, CLIPPED: 1}


def test_yolo_rounding_past_the_edge_is_clipped_without_a_warning(boxes, tmp_path):
    root = write_yolo(boxes, tmp_path / "y")
    label = sorted((root / "labels" / "val").iterdir())[0]
    label.write_text("0 0.9000003 0.5 0.2000002 0.2\n")  # ends at 1.0000004
    loaded = load_coco(root, "val")
    assert loaded.report == {}
    x, _, w, _ = loaded.coco.imgToAnns[1][0]["bbox"]
    assert x + w == loaded.coco.imgs[1]["width"]


def test_voc_difficult_is_ignored_in_training_and_evaluation(boxes, tmp_path):
    from detcore.evaluate import coco_metrics

    root = write_voc(boxes, tmp_path / "v")
    img = boxes["splits"]["val"][0]
    hard = (*img["objects"][0][:5], 1)
    objects = [hard, *img["objects"][1:]]
    ET.ElementTree(voc_xml(img["path"].name, img["width"], img["height"], objects)).write(
        root / "Annotations" / f"{img['path'].stem}.xml")
    data = CocoDetection(root, "val", (96, 96))
    assert sorted(a["iscrowd"] for a in data.coco.imgToAnns[1]) == [0] * (len(objects) - 1) + [1]
    assert len(data[0][1]["boxes"]) == len(objects) - 1
    easy = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 0.9} for a in data.coco.dataset["annotations"] if not a["iscrowd"]]
    on_hard = [{"image_id": 1, "category_id": data.coco.imgToAnns[1][0]["category_id"],
                "bbox": list(data.coco.imgToAnns[1][0]["bbox"]), "score": 0.99}]
    assert coco_metrics(data.coco, easy, ("bbox",))["bbox_mAP"] == 1.0  # not missed
    assert coco_metrics(data.coco, easy + on_hard, ("bbox",))["bbox_mAP"] == 1.0  # not a FP


def test_voc_names_take_voc_order_when_all_are_voc(boxes, tmp_path):
    rename = dict(zip(boxes["categories"], ["person", "car", "dog"]))
    renamed = {"categories": sorted(rename.values()), "splits": {
        s: [{**img, "objects": [(rename[o[0]], *o[1:]) for o in img["objects"]]} for img in imgs]
        for s, imgs in boxes["splits"].items()}}
    data = CocoDetection(write_voc(renamed, tmp_path / "v"), "train", (64, 64))
    assert data.class_names == list(VOC_CLASSES)
    assert data.coco.cats[VOC_CLASSES.index("dog") + 1]["name"] == "dog"


def test_voc_xml_problems_are_counted_and_size_read_from_the_image(boxes, tmp_path):
    root = write_voc(boxes, tmp_path / "v")
    stems = [img["path"].stem for img in boxes["splits"]["train"]]
    (root / "Annotations" / f"{stems[0]}.xml").unlink()
    (root / "Annotations" / f"{stems[1]}.xml").write_text("<annotation><object>")
    tree = ET.parse(root / "Annotations" / f"{stems[2]}.xml")
    tree.getroot().find("object").remove(tree.getroot().find("object/bndbox"))
    tree.getroot().remove(tree.getroot().find("size"))
    tree.write(root / "Annotations" / f"{stems[2]}.xml")
    loaded = load_coco(root, "train")
    assert loaded.report == {NO_XML: 1, BAD_XML: 1, BAD_OBJECT: 1}
    third = loaded.coco.imgs[1]
    assert (third["width"], third["height"]) == (boxes["splits"]["train"][2]["width"],
                                                 boxes["splits"]["train"][2]["height"])


def test_check_summaries_agree_across_layouts(written):
    summaries = {k: check_dataset(root) for k, root in written.items()}
    for name, summary in summaries.items():
        assert summary["layout"] == name and summary["errors"] == summary["warnings"] == 0
        for split in ("train", "val"):
            info = summary["splits"][split]
            ref = summaries["coco"]["splits"][split]
            assert {k: info[k] for k in ("images", "instances", "instances_per_class")} == \
                {k: ref[k] for k in ("images", "instances", "instances_per_class")}


def _order(counts):
    """Indices of four distinct images, the first with at least two objects."""
    first = next(i for i, n in enumerate(counts) if n >= 2)
    return [first, *[i for i in range(len(counts)) if i != first][:3]]


def _truncate(path):
    """Keep the header (the size still reads), lose the pixels."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def plant_coco(root):
    ann = root / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    images = sorted(data["images"], key=lambda i: i["id"])
    per_image = [[a for a in data["annotations"] if a["image_id"] == img["id"]] for img in images]
    a, b, c, d = _order([len(anns) for anns in per_image])
    per_image[a][0]["bbox"] = [5, 5, 0, 5]                    # degenerate
    per_image[a][1]["bbox"][0] = -3                           # partly outside: clipped
    per_image[b][0]["category_id"] = 99                       # unknown category
    images[c]["width"] += 7                                   # not the file's size
    ann.write_text(json.dumps(data))
    _truncate(root / "train2017" / images[d]["file_name"])
    return {"boxes with zero or negative size dropped": ("error", 1), CLIPPED: ("warning", 1),
            "annotations with an unknown category dropped": ("error", 1), RESIZED: ("error", 1),
            UNREADABLE: ("error", 1)}


def plant_yolo(root):
    labels = sorted((root / "labels" / "train").iterdir())
    a, b, c, d = _order([len(p.read_text().splitlines()) for p in labels])
    labels[a].write_text("0 0.5 0.5 0.0 0.2\n0 0.02 0.5 0.1 0.1\n5 0.5 0.5 0.2 0.2\nx y\n")
    labels[b].unlink()
    labels[c].write_text("")                                  # background: not a problem
    _truncate(sorted((root / "images" / "train").iterdir())[d])
    (root / "images" / "train" / "notes.png").write_bytes(b"not a png")
    return {"boxes with zero or negative size dropped": ("error", 1), CLIPPED: ("warning", 1),
            BAD_CLASS: ("error", 1), BAD_LINE: ("error", 1), NO_LABEL_FILE: ("warning", 1),
            "unreadable images dropped": ("error", 1), UNREADABLE: ("error", 1)}


def plant_voc(root):
    xmls = [root / "Annotations" / f"{stem}.xml"
            for stem in (root / "ImageSets" / "Main" / "train.txt").read_text().split()]
    a, b, c, d = _order([len(ET.parse(x).getroot().findall("object")) for x in xmls])
    tree = ET.parse(xmls[a])
    first, second = tree.getroot().findall("object")[:2]
    first.find("bndbox/xmax").text = str(int(first.find("bndbox/xmin").text) - 1)  # 0 px wide
    second.find("bndbox/xmin").text = "-4"
    tree.write(xmls[a])
    xmls[b].unlink()
    xmls[c].write_text("<annotation>")
    _truncate(root / "JPEGImages" / f"{xmls[d].stem}.jpg")
    return {"boxes with zero or negative size dropped": ("error", 1), CLIPPED: ("warning", 1),
            NO_XML: ("error", 1), BAD_XML: ("error", 1), UNREADABLE: ("error", 1)}


@pytest.mark.parametrize("layout, plant", [("coco", plant_coco), ("yolo", plant_yolo),
                                           ("voc", plant_voc)])
def test_check_reports_each_planted_problem(written, layout, plant):
    planted = plant(written[layout])
    summary = check_dataset(written[layout])
    found = {p["problem"]: (p["severity"], p["count"]) for p in summary["problems"]
             if p["split"] == "train"}
    assert found == planted
    assert summary["errors"] == sum(s == "error" for s, _ in planted.values())
    assert not [p for p in summary["problems"] if p["split"] != "train"]


def test_check_images_without_annotations_are_counted_not_problems(written):
    labels = sorted((written["yolo"] / "labels" / "val").iterdir())
    labels[0].write_text("")
    summary = check_dataset(written["yolo"])
    assert summary["splits"]["val"]["images_without_annotations"] == 1
    assert summary["problems"] == []


def test_check_reports_a_split_that_does_not_load_and_summarises_the_other(written):
    (written["voc"] / "ImageSets" / "Main" / "val.txt").unlink()
    summary = check_dataset(written["voc"])
    assert "error" in summary["splits"]["val"] and summary["splits"]["train"]["images"] == 6
    (problem,) = summary["problems"]
    assert problem["severity"] == "error" and "val.txt" in problem["problem"]


def test_check_finds_coco_splits_with_different_categories(written):
    ann = written["coco"] / "annotations" / "instances_val2017.json"
    data = json.loads(ann.read_text())
    data["categories"][0]["name"] = "disc"
    ann.write_text(json.dumps(data))
    problems = check_dataset(written["coco"])["problems"]
    assert [p["problem"] for p in problems] == [CATEGORIES_DIFFER]


def test_check_without_decoding_reads_headers(written):
    _truncate(sorted((written["coco"] / "val2017").iterdir())[0])
    assert check_dataset(written["coco"], decode=False)["problems"] == []
    (problem,) = check_dataset(written["coco"])["problems"]
    assert problem["problem"] == UNREADABLE


def test_data_check_command_never_imports_torch(written, cache_dir):
    code = ("import sys\nfrom detcore.cli import main\n"
            f"try:\n    main(['data', 'check', {str(written['voc'])!r}, '--json'])\n"
            "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(cache_dir), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["layout"] == "voc"


@pytest.mark.slow
def test_yolo_and_voc_train_and_evaluate_like_coco(tmp_path, run_cli):
    """The same images and boxes in three layouts: the same training (loss, predictions) and the
    same mAP through ``--data``, with a tiny detector that reaches a non-zero mAP; and ``--task
    eval`` of one checkpoint scores the same on each layout."""
    source = write_synthetic(tmp_path / "src", SynthSpec(num_train=16, num_val=8,
                                                         min_size=96, max_size=128))
    boxes = boxes_from_synthetic(source)
    results = {}
    for name, writer in WRITERS.items():
        root = writer(boxes, tmp_path / name)
        work = tmp_path / f"work-{name}"
        proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--data", root,
                       "--work-dir", work, "--no-progress")
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics = json.loads((work / "result.json").read_text())["metrics"]
        predictions = json.loads((work / "predictions.json").read_text())
        order = {i: n for n, i in enumerate(sorted({p["image_id"] for p in predictions}))}
        results[name] = (metrics, [{**p, "image_id": order[p["image_id"]]} for p in predictions])
    coco_metrics, coco_predictions = results["coco"]
    assert coco_metrics["bbox_mAP"] > 0 and coco_metrics["bbox_mAP_50"] > 0
    for name in ("yolo", "voc"):
        metrics, predictions = results[name]
        assert {k: v for k, v in metrics.items() if k.startswith(("bbox_", "final_loss"))} == \
            {k: v for k, v in coco_metrics.items() if k.startswith(("bbox_", "final_loss"))}
        assert predictions == coco_predictions
    evaluated = {}
    for name in WRITERS:
        work = tmp_path / f"eval-{name}"
        proc = run_cli("run", "--model", "tiny-fcos", "--task", "eval", "--data", tmp_path / name,
                       "--weights", tmp_path / "work-coco" / "checkpoints" / "last.pt",
                       "--work-dir", work, "--no-progress")
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics = json.loads((work / "result.json").read_text())["metrics"]
        evaluated[name] = {k: v for k, v in metrics.items() if k.startswith("bbox_")}
    assert evaluated["coco"]["bbox_mAP"] > 0
    assert evaluated["yolo"] == evaluated["voc"] == evaluated["coco"]
