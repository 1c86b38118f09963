"""The Python API (``detcore.Model``), called in-process: inputs, results in original-image
pixels, errors as the CLI's UserErrors, train/eval/export through the runner, the README's
example as written."""
from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

import detcore
from detcore.errors import UserError
from detcore.result import validate_result

from .conftest import REPO


@pytest.fixture
def weights(trained):
    return trained[0] / "checkpoints" / "last.pt"


@pytest.fixture
def model(registry, weights):
    return detcore.Model("tiny-fcos", weights=weights, device="cpu", registry=registry)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A synthetic-looking image: a dark background and a few bright rectangles."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 30, np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        image[y:y + h // 3, x:x + w // 3] = rng.integers(120, 255, 3)
    return image


def test_import_detcore_stays_light_and_the_cli_never_imports_the_api(cache_dir):
    import subprocess

    code = ("import sys, detcore, detcore.cli\n"
            "assert 'torch' not in sys.modules and 'detcore.api' not in sys.modules\n"
            "assert detcore.Model.__module__ == 'detcore.api'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_predict_agrees_with_the_coco_evaluation_in_original_pixels(model, trained, tiny_data):
    """The boxes predict returns are the ones `--task eval` scored (predictions.json): the same
    letterbox and the same mapping back to each image's pixels."""
    work, _ = trained
    coco = json.loads((tiny_data / "annotations" / "instances_val2017.json").read_text())
    files = {img["id"]: img["file_name"] for img in coco["images"]}
    label_to_cat = sorted(c["id"] for c in coco["categories"])
    scored = json.loads((work / "predictions.json").read_text())
    found = model.predict(tiny_data / "val2017", threshold=0.1)
    assert [f.path for f in found] == sorted(str(tiny_data / "val2017" / n) for n in files.values())
    by_file = {f.path.rsplit("/", 1)[1]: f for f in found}
    checked = 0
    for image_id, name in files.items():
        expected = [r for r in scored if r["image_id"] == image_id and r["score"] >= 0.1 + 1e-4]
        got = by_file[name]
        for r in expected:
            x, y, w, h = r["bbox"]
            near = [i for i, b in enumerate(got.boxes)
                    if label_to_cat[got.labels[i]] == r["category_id"]
                    and np.abs(b - [x, y, x + w, y + h]).max() < 0.05
                    and abs(got.scores[i] - r["score"]) < 1e-3]
            assert near, (name, r)
            checked += 1
    assert checked > 0, "no detection above 0.1: the comparison proved nothing"


def test_every_input_kind_gives_the_same_detections(model, tmp_path):
    from PIL import Image

    image = rgb(90, 130)
    Image.fromarray(image).save(tmp_path / "b.png")
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    reference = model.predict(image, threshold=0.0)[0]
    assert len(reference) > 0
    for source in (tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(image),
                   [image], (image,)):
        [got] = model.predict(source, threshold=0.0)
        np.testing.assert_allclose(got.boxes, reference.boxes, atol=1e-4)
        np.testing.assert_array_equal(got.labels, reference.labels)
    folder = model.predict(tmp_path, threshold=0.0)
    assert [f.path for f in folder] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    mixed = model.predict([image, tmp_path / "b.png", image[:, :, 1]], threshold=0.0)
    assert [f.path for f in mixed] == [None, str(tmp_path / "b.png"), None]
    assert mixed[2].boxes.shape[1] == 4  # a grayscale HxW array is taken as RGB


def test_result_fields_are_in_the_image_own_pixels(model, tiny_data):
    image = rgb(150, 300, seed=3)  # wider than tall: the letterbox pads the bottom
    [found] = model.predict(image, threshold=0.0)
    n = len(found)
    assert n > 0
    assert found.boxes.shape == (n, 4) and found.boxes.dtype == np.float32
    assert found.scores.shape == (n,) and found.scores.dtype == np.float32
    assert found.labels.shape == (n,) and found.labels.dtype == np.int64
    assert found.masks is None and found.path is None
    assert (found.boxes[:, [0, 2]] <= 300).all() and (found.boxes[:, [1, 3]] <= 150).all()
    assert (found.boxes >= 0).all() and (found.boxes[:, 2:] >= found.boxes[:, :2]).all()
    coco = json.loads((tiny_data / "annotations" / "instances_train2017.json").read_text())
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    assert found.names == [names[label] for label in found.labels]  # as the checkpoint records
    assert len(model.predict(image, threshold=1.01)[0]) == 0


def test_predict_loads_the_model_once_and_writes_nothing(registry, weights, tmp_path,
                                                         monkeypatch):
    import detcore.tasks as tasks

    loads = []
    real = tasks.trained_model
    monkeypatch.setattr(tasks, "trained_model", lambda ctx, *a: loads.append(ctx.weights) or
                        real(ctx, *a))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DETCORE_CACHE", str(tmp_path / "cache"))
    m = detcore.Model("tiny-fcos", weights=weights, device="cpu", registry=registry)
    for _ in range(3):
        m.predict(rgb(64, 64))
    assert loads == [weights]
    assert list(tmp_path.iterdir()) == []  # no work dir, no synthetic set generated


def test_masks_map_back_to_the_original_image():
    """A segm model's canvas masks come back as bool N x H x W masks of the original image."""
    import torch

    from detcore.predict import Predictor

    class Square(torch.nn.Module):  # one detection: the canvas square [8, 24) x [8, 24)
        def forward(self, images):
            mask = torch.zeros(1, *images.shape[-2:])
            mask[0, 8:24, 8:24] = 1.0
            return [{"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([1]), "masks": mask}]

    predictor = Predictor(Square(), ["a", "b"], (32, 32), torch.device("cpu"), 0.5)
    [found] = predictor([np.zeros((64, 128, 3), np.uint8)])  # scale 0.25: canvas 16 x 32
    np.testing.assert_allclose(found.boxes, [[32, 32, 96, 64]])  # clipped to the 64-row image
    assert found.masks.shape == (1, 64, 128) and found.masks.dtype == bool
    rows, cols = np.nonzero(found.masks[0])
    assert abs(rows.min() - 32) <= 1 and rows.max() == 63 and abs(cols.min() - 32) <= 1
    assert abs(cols.max() - 95) <= 1 and found.names == ["b"]
    [empty] = predictor([np.zeros((64, 128, 3), np.uint8)], threshold=0.95)
    assert empty.masks.shape == (0, 64, 128) and len(empty) == 0


def test_errors_are_the_cli_user_errors_and_never_exit(registry, weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="unknown model 'tiny-focs'.*tiny-fcos"):
        detcore.Model("tiny-focs", registry=registry)
    untrained = detcore.Model("tiny-fcos", device="cpu", registry=registry)
    with pytest.raises(UserError, match="no weights: looked for .*--task train"):
        untrained.predict(rgb(32, 32))
    with pytest.raises(UserError, match="no weights"):
        untrained.eval()
    with pytest.raises(UserError, match="does not exist"):
        detcore.Model("tiny-fcos", weights=tmp_path / "nope.pt", registry=registry).predict(
            rgb(32, 32))
    m = detcore.Model("tiny-fcos", weights=weights, device="cpu", registry=registry)
    with pytest.raises(UserError, match="HxWx3 uint8"):
        m.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(UserError, match="HxWx3 uint8"):
        m.predict(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(UserError, match="missing.png does not exist"):
        m.predict(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="unreadable image .*broken.png"):
        m.predict(tmp_path / "broken.png")
    with pytest.raises(UserError, match="cannot predict on a dict"):
        m.predict({"image": 1})
    with pytest.raises(UserError, match="no images"):
        m.predict([])
    with pytest.raises(UserError, match="--device 'gpu'"):
        detcore.Model("tiny-fcos", weights=weights, device="gpu", registry=registry).eval()
    with pytest.raises(UserError, match="unknown config key 'epoch'.*train.epochs"):
        m.train(overrides=["train.epoch=3"])
    with pytest.raises(UserError, match="train.epochs takes a number"):
        m.train(epochs="many")
    with pytest.raises(TypeError, match="unknown option colour"):
        m.eval(colour="red")
    assert not list(tmp_path.glob("**/result.json"))  # a failed run writes none, as the CLI


def test_options_are_the_cli_options(registry, weights):
    m = detcore.Model("tiny-fcos", weights=weights, config="smoke", registry=registry,
                      overrides={"data.input_size": [64, 64]})
    opts = m.options("train", data="/d", overrides={"train.max_steps": 2, "train.amp": "bf16"},
                     amp="fp16", work_dir=REPO / "w", resume=True)
    assert (opts.model, opts.task, opts.data, opts.config, opts.weights) == (
        "tiny-fcos", "train", "/d", "smoke", str(weights))
    assert opts.sets == ("data.input_size=[64, 64]", "train.max_steps=2", 'train.amp="bf16"')
    assert (opts.amp, opts.work_dir, opts.resume, opts.device) == ("fp16", str(REPO / "w"), True,
                                                                   "auto")


def test_train_eval_export_go_through_the_runner(registry, tiny_data, tmp_path):
    """In-process, as `detcore run` would: result.json written and returned, the checkpoint
    adopted for what follows."""
    m = detcore.Model("tiny-fcos", device="cpu", registry=registry, data=tiny_data)
    result = m.train(work_dir=tmp_path / "train", overrides={"train.max_steps": 2})
    assert validate_result(result) == [] and result["task"] == "train"
    assert json.loads((tmp_path / "train" / "result.json").read_text()) == json.loads(
        json.dumps(result, default=str))
    assert result["metrics"]["steps"] == 2 and "bbox_mAP" in result["metrics"]
    assert m.weights == result["artifacts"]["checkpoint"] == str(
        tmp_path / "train" / "checkpoints" / "last.pt")
    evaluated = m.eval(work_dir=tmp_path / "eval")
    assert evaluated["artifacts"]["weights"] == m.weights and "bbox_mAP_50" in evaluated["metrics"]
    exported = m.export(work_dir=tmp_path / "export")
    assert exported["artifacts"]["onnx"] == str(tmp_path / "export" / "tiny-fcos.onnx")
    assert (tmp_path / "export" / "tiny-fcos.onnx").is_file()
    assert len(m.predict(rgb(64, 96), threshold=0.0)) == 1


def readme_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(cache_dir, tmp_path, monkeypatch, capsys):
    """The README's Python example, exactly as written, in this process (it trains two steps of
    EfficientDet-D0 at its tiny config: a few seconds, so it stays in the fast lane)."""
    pytest.importorskip("detcore_efficientdet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DETCORE_CACHE", str(cache_dir))
    namespace: dict = {}
    exec(compile(readme_example(), "README.md (Python API)", "exec"), namespace)
    result, found = namespace["result"], namespace["found"]
    assert validate_result(result) == [] and result["model"] == "efficientdet-d0"
    assert result["metrics"]["steps"] == 2
    assert (tmp_path / "work_dirs" / "api-example" / "result.json").is_file()
    assert isinstance(found, detcore.Detections) and found.boxes.shape[1:] == (4,)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("work_dirs/api-example/checkpoints/last.pt") and len(printed) >= 2
