"""Synthetic data and the COCO loader, including the bad inputs users actually have."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from detcore.data.coco import CocoDetection, collate, load_coco
from detcore.data.synthetic import SynthSpec, write_synthetic
from detcore.errors import UserError

SMALL = SynthSpec(num_train=6, num_val=3, num_classes=3, min_size=64, max_size=96)


@pytest.fixture
def coco(tmp_path):
    return write_synthetic(tmp_path / "coco", SMALL)


def ann_path(root, split="train"):
    return root / "annotations" / f"instances_{split}2017.json"


def edit(root, fn, split="train"):
    data = json.loads(ann_path(root, split).read_text())
    fn(data)
    ann_path(root, split).write_text(json.dumps(data))


def test_synthetic_is_deterministic(tmp_path):
    a, b = write_synthetic(tmp_path / "a", SMALL), write_synthetic(tmp_path / "b", SMALL)
    assert ann_path(a).read_bytes() == ann_path(b).read_bytes()
    first = sorted((a / "train2017").iterdir())[0].name
    assert (a / "train2017" / first).read_bytes() == (b / "train2017" / first).read_bytes()


def test_synthetic_boxes_and_masks_agree(coco):
    ds = CocoDetection(coco, "train", (96, 96), masks=True, train=True)
    image, target = ds[0]
    assert image.shape == (3, 96, 96) and str(image.dtype) == "torch.uint8"
    for box, mask in zip(target["boxes"], target["masks"]):
        ys, xs = np.nonzero(mask.numpy())
        assert abs(xs.min() - box[0]) <= 2 and abs(ys.max() + 1 - box[3]) <= 2


def test_letterbox_scale_maps_back(coco):
    ds = CocoDetection(coco, "val", (128, 64))
    _, target = ds[0]
    h, w = target["orig_size"]
    assert target["scale"] == pytest.approx(min(128 / h, 64 / w))


def test_collate_drops_unreadable(coco):
    ds = CocoDetection(coco, "val", (64, 64))
    images, targets = collate([ds[0], None, ds[1]])
    assert images.shape[0] == 2 and len(targets) == 2


@pytest.mark.parametrize("break_it, message", [
    (lambda r: shutil.rmtree(r / "annotations"), "no annotations/ folder"),
    (lambda r: ann_path(r).unlink(), "missing annotation file"),
    (lambda r: ann_path(r).write_text('{"images": [1, 2'), "is not valid JSON"),
    (lambda r: ann_path(r).write_text("[]"), "top level must be an object"),
    (lambda r: shutil.rmtree(r / "train2017"), "image folder"),
    (lambda r: next((r / "train2017").iterdir()).unlink(), "missing from"),
    (lambda r: edit(r, lambda d: d.update(categories=[])), "'categories' is empty"),
    (lambda r: edit(r, lambda d: d.update(images=[], annotations=[])), "has no images"),
])
def test_bad_layouts_are_one_line_errors(coco, break_it, message):
    break_it(coco)
    with pytest.raises(UserError, match=message) as info:
        load_coco(coco, "train")
    assert "\n" not in str(info.value)


def test_missing_root(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_coco(tmp_path / "nope", "train")


def test_degenerate_and_outside_boxes_are_counted(coco, caplog):
    def damage(d):
        anns = d["annotations"]
        anns[0]["bbox"] = [10, 10, 0, 5]       # zero width
        anns[1]["bbox"] = [10, 10, -4, 5]      # negative
        anns[2]["bbox"] = [-10, -10, 30, 30]   # partly outside: clipped
        anns[3]["bbox"] = [5000, 5000, 10, 10]  # wholly outside
    edit(coco, damage)
    report = load_coco(coco, "train").report
    assert report["boxes with zero or negative size dropped"] == 2
    assert report["boxes clipped to their image"] == 1
    assert report["boxes outside their image dropped"] == 1
    assert len([r for r in caplog.records if r.name == "detcore.data"]) == 3


def test_image_without_annotations_kept_for_eval_skipped_for_train(coco):
    def orphan(d):
        first = d["images"][0]["id"]
        d["annotations"] = [a for a in d["annotations"] if a["image_id"] != first]
    edit(coco, orphan)
    assert len(CocoDetection(coco, "train", (64, 64))) == SMALL.num_train
    assert len(CocoDetection(coco, "train", (64, 64), train=True)) == SMALL.num_train - 1


def test_non_contiguous_category_ids(coco):
    def renumber(d):
        for c in d["categories"]:
            c["id"] *= 10
        for a in d["annotations"]:
            a["category_id"] *= 10
    edit(coco, renumber)
    ds = CocoDetection(coco, "train", (64, 64))
    assert ds.label_to_cat == [10, 20, 30] and ds.num_classes == 3
    assert set(ds[0][1]["labels"].tolist()) <= {0, 1, 2}


def test_empty_training_set(coco):
    edit(coco, lambda d: d.update(annotations=[]))
    with pytest.raises(UserError, match="no image has a usable annotation"):
        CocoDetection(coco, "train", (64, 64), train=True)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "I;16", "RGBA"])
def test_image_modes_become_rgb(coco, mode):
    path = sorted((coco / "train2017").iterdir())[0]
    rgb = Image.open(path).convert("RGB")
    if mode == "I;16":
        arr = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(arr)  # uint16 -> mode I;16
        path = path.with_suffix(".png")
    else:
        img = rgb.convert(mode)
        if mode in ("P", "RGBA"):
            path = path.with_suffix(".png")
    img.save(path)
    edit(coco, lambda d: d["images"][0].update(file_name=path.name))
    ds = CocoDetection(coco, "train", (64, 64))
    image, _ = ds[0]
    assert image.shape == (3, 64, 64)
    if mode == "I;16":
        assert image.max() > 100  # scaled from 16 bits, not clipped to white or black


def test_corrupt_image_is_skipped_with_warning(coco, caplog):
    path = sorted((coco / "train2017").iterdir())[0]
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    ds = CocoDetection(coco, "train", (64, 64))
    assert ds[0] is None
    assert "skipping unreadable image" in caplog.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                    | st.floats(allow_nan=True),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
                    max_leaves=12),
       st.sampled_from(["images", "annotations", "categories"]))
def test_loader_fuzz_never_tracebacks(tmp_path_factory, junk, key):
    root = write_synthetic(tmp_path_factory.mktemp("fz") / "c", SynthSpec(num_train=2, num_val=1,
                                                                          min_size=32, max_size=40))
    data = json.loads(ann_path(root).read_text())
    if isinstance(junk, list):
        data[key] = data[key][:1] + junk
    else:
        data[key] = junk
    ann_path(root).write_text(json.dumps(data))
    try:
        ds = CocoDetection(root, "train", (32, 32))
        for i in range(len(ds)):
            ds[i]
    except UserError as exc:
        assert "\n" not in str(exc)
