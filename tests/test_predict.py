"""``--task predict --data ROOT`` on a dataset root predicts on that dataset's validation
images, whatever its layout (COCO, YOLO, Pascal VOC): the images ``--task eval`` scores."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcore.data.synthetic import SynthSpec, write_synthetic
from detcore.errors import UserError
from detcore.predict import image_paths

from .dataset_writers import WRITERS, boxes_from_synthetic

SMALL = SynthSpec(num_train=5, num_val=3, num_classes=3, min_size=64, max_size=96)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """``({layout: root}, [val image names])``: the same data written in each layout."""
    tmp = tmp_path_factory.mktemp("layouts")
    boxes = boxes_from_synthetic(write_synthetic(tmp / "src", SMALL))
    val = [img["path"].name for img in boxes["splits"]["val"]]
    return {name: writer(boxes, tmp / name) for name, writer in WRITERS.items()}, val


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_a_dataset_root_gives_its_validation_images(roots, layout):
    written, val = roots
    paths = image_paths(written[layout], 0)
    assert sorted(p.name for p in paths) == sorted(val)
    assert all(p.is_file() for p in paths)
    assert len(image_paths(written[layout], 2)) == 2


def test_a_yolo_yaml_file_gives_its_validation_images(roots):
    written, val = roots
    assert [p.name for p in image_paths(written["yolo"] / "data.yaml", 0)] == sorted(val)


def test_an_image_and_a_plain_folder_are_read_as_given(roots, tmp_path):
    written, _ = roots
    image = next((written["voc"] / "JPEGImages").iterdir())
    assert image_paths(image, 0) == [image]
    folder = written["yolo"] / "images" / "train"
    assert image_paths(folder, 0) == sorted(folder.iterdir())
    with pytest.raises(UserError, match="no images"):
        image_paths(tmp_path, 0)


def test_a_broken_dataset_is_its_reader_s_one_line_error(roots, tmp_path):
    import shutil

    root = shutil.copytree(roots[0]["voc"], tmp_path / "voc")
    (root / "ImageSets" / "Main" / "val.txt").unlink()
    with pytest.raises(UserError, match="val.txt") as info:
        image_paths(root, 0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layout", ["yolo", "voc"])
def test_predict_task_on_a_dataset_root_draws_its_validation_images(trained, roots, run_cli,
                                                                    tmp_path, layout):
    written, val = roots
    work, _ = trained
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "predict", "--weights",
                   work / "checkpoints" / "last.pt", "--data", written[layout],
                   "--work-dir", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    predicted = result["artifacts"]["predicted"]
    assert sorted(Path(p["image"]).name for p in predicted) == sorted(val)
    assert all("output" in p for p in predicted)
    assert sorted(p.stem for p in (tmp_path / "out" / "images").glob("*.png")) == \
        sorted(Path(v).stem for v in val)
