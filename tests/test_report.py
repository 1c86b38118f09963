"""Plots after train and eval, and ``detcore report``'s page, from a smoke train of the tiny
plugin (2 epochs of 6 steps, evaluated after each)."""
from __future__ import annotations

import base64
import builtins
import importlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detcore.evaluate import coco_metrics, load_curves
from detcore.report.curves import IOU_50, IOU_ALL, confusion_matrix, reported_ap
from detcore.report.plots import CONFUSION_IOU, figures, matplotlib_figure, pr_figure
from detcore.runner import RunOptions, run

from .conftest import cli_env

EXPECTED = {"loss_lr", "map", "pr_bbox", "confusion", "val_grid"}


def train(registry, data, work, *sets, task="train", **kw):
    return run(registry, RunOptions(model="tiny-fcos", task=task, data=str(data), device="cpu",
                                    work_dir=str(work), progress=False,
                                    sets=("train.deterministic=true", *sets), **kw))


@pytest.fixture(scope="module")
def smoke(registry, tiny_data, tmp_path_factory):
    """(work dir, result) of a smoke train evaluated after each of its 2 epochs."""
    work = tmp_path_factory.mktemp("smoke")
    return work, train(registry, tiny_data, work, "train.eval_every=1")


def is_png(path_or_bytes) -> bool:
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    with Image.open(io.BytesIO(raw)) as im:
        im.verify()
        return im.format == "PNG"


def plotted(ax) -> dict[str, np.ndarray]:
    return {line.get_gid(): np.asarray(line.get_ydata(), np.float64) for line in ax.get_lines()}


def test_smoke_train_leaves_plots_that_decode_as_png(smoke):
    work, result = smoke
    assert result["artifacts"]["plots"] == str(work / "plots")
    assert {p.stem for p in (work / "plots").glob("*.png")} == EXPECTED
    assert all(is_png(p) for p in (work / "plots").glob("*.png"))
    evals = [json.loads(l) for l in (work / "evals.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["step"]) for e in evals] == [(1, 6), (2, 12)]  # mAP per epoch
    assert evals[-1]["bbox_mAP"] == result["metrics"]["bbox_mAP"]
    assert json.loads((work / "config.json").read_text())["train"]["eval_every"] == 1


def test_plots_are_titled_labelled_and_state_their_thresholds(smoke, registry, tiny_data):
    from detcore.data.coco import CocoDetection

    work, result = smoke

    drawn = figures(matplotlib_figure(), result["artifacts"],
                    lambda: CocoDetection(tiny_data, "val", (96, 96)), 0.3)
    assert set(drawn) == EXPECTED
    for name in ("loss_lr", "map", "pr_bbox"):
        for ax in drawn[name].axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel(), (name, ax)
            if len(ax.get_lines()) > 1:
                assert ax.get_legend() is not None and ax.get_legend().get_texts(), name
    loss_ax = drawn["loss_lr"].axes[0]
    assert {t.get_text() for t in loss_ax.get_legend().get_texts()} >= {
        "classification", "bbox_regression", "bbox_ctrness", "loss (total)"}
    confusion = drawn["confusion"].axes[0]
    assert f"IoU >= {CONFUSION_IOU:g}" in confusion.get_title()
    assert "score >= 0.3" in confusion.get_title()
    assert confusion.get_xlabel().startswith("predicted") and confusion.get_ylabel().startswith("true")
    titles = [ax.get_title() for ax in drawn["val_grid"].axes if ax.get_title()]
    assert sum("ground truth" in t for t in titles) == sum("predictions" in t for t in titles) == 8


def test_plotted_pr_curves_have_the_reported_ap_as_area(smoke, tiny_data):
    """The area of each drawn curve, taken as COCO takes it (the mean of the 101 interpolated
    precision points), averaged over the classes: the evaluation's own AP (unrounded, 1e-6) and
    result.json's (rounded to 4 places)."""
    from detcore.data.coco import CocoDetection

    work, result = smoke
    arrays = load_curves(work / "eval_curves.npz")["bbox"]
    names = {c["id"]: c["name"] for c in CocoDetection(tiny_data, "val", (96, 96)).coco.cats.values()}
    fig = pr_figure(matplotlib_figure(), arrays, names, "bbox")
    for ax, iou, key in zip(fig.axes, (IOU_50, IOU_ALL), ("bbox_mAP_50", "bbox_mAP")):
        lines = plotted(ax)
        classes = [y for gid, y in lines.items() if gid.startswith("class:")]
        assert len(classes) == 3 and all(len(y) == 101 for y in classes)
        area = np.mean([y.mean() for y in classes])
        assert area == pytest.approx(reported_ap(arrays, iou), abs=1e-6)
        assert lines["mean"].mean() == pytest.approx(area, abs=1e-12)
        assert area == pytest.approx(result["metrics"][key], abs=5e-5)


def test_pr_area_equals_ap_on_a_known_detection_file(tiny_data):
    """The same agreement, without training: jittered ground truth plus false positives over
    the tiny validation split, at both IoU settings, with a class that has no ground truth."""
    from detcore.data.coco import CocoDetection

    data = CocoDetection(tiny_data, "val", (96, 96))
    rng = np.random.default_rng(0)
    dets = []
    for a in data.coco.dataset["annotations"]:
        for _ in range(2):
            x, y, w, h = a["bbox"]
            jitter = rng.normal(0, 0.15 * max(w, h), 4)
            dets.append({"image_id": a["image_id"], "category_id": int(rng.choice(
                [a["category_id"]] * 3 + data.label_to_cat)), "score": float(rng.uniform()),
                "bbox": [x + jitter[0], y + jitter[1], max(1, w + jitter[2]), max(1, h + jitter[3])]})
    curves = {}
    metrics = coco_metrics(data.coco, dets, ("bbox",), curves=curves)
    arrays = curves["bbox"]
    names = {c: data.coco.cats[c]["name"] for c in data.label_to_cat}
    fig = pr_figure(matplotlib_figure(), arrays, names, "bbox")
    for ax, iou, key in zip(fig.axes, (IOU_50, IOU_ALL), ("bbox_mAP_50", "bbox_mAP")):
        classes = [y for gid, y in plotted(ax).items() if gid.startswith("class:")]
        area = np.mean([y.mean() for y in classes])
        assert 0.05 < area < 0.95  # a curve worth comparing, neither empty nor perfect
        assert area == pytest.approx(reported_ap(arrays, iou), abs=1e-6)
        assert area == pytest.approx(metrics[key], abs=5e-5)


def test_confusion_matrix_counts_hits_confusions_misses_and_false_positives():
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 100, "height": 100}],
                  "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                  "annotations": [
                      {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                      {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "area": 100, "iscrowd": 0},
                      {"id": 3, "image_id": 1, "category_id": 2, "bbox": [80, 0, 10, 10], "area": 100, "iscrowd": 0},
                      {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 80, 10, 10], "area": 100, "iscrowd": 1}]}
    gt.createIndex()
    preds = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},   # hit a
             {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.8},   # duplicate: FP
             {"image_id": 1, "category_id": 1, "bbox": [51, 51, 10, 10], "score": 0.7},  # b seen as a
             {"image_id": 1, "category_id": 2, "bbox": [30, 30, 5, 5], "score": 0.6},   # on nothing
             {"image_id": 1, "category_id": 2, "bbox": [80, 0, 10, 10], "score": 0.1}]  # below score
    m = confusion_matrix(gt, preds, [1], [1, 2], iou=0.5, score=0.3)
    # rows: true a, true b, background; columns: predicted a, predicted b, missed
    assert m.tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 0]]


def test_without_matplotlib_a_run_skips_plots_with_one_log_line(registry, tiny_data, tmp_path,
                                                                 monkeypatch, caplog):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with caplog.at_level(logging.INFO, logger="detcore"):
        result = train(registry, tiny_data, tmp_path, "train.max_steps=2")
    assert result["status"] == "ok" and "bbox_mAP" in result["metrics"]
    assert "plots" not in result["artifacts"] and not list(tmp_path.glob("plots/*.png"))
    said = [r.getMessage() for r in caplog.records if "matplotlib" in r.getMessage()]
    assert said == ["plots skipped: matplotlib is not installed (pip install 'detcore[plots]')"]


def test_eval_task_draws_the_evaluation_plots(smoke, registry, tiny_data, tmp_path):
    weights = smoke[0] / "checkpoints" / "last.pt"
    result = train(registry, tiny_data, tmp_path, task="eval", weights=str(weights))
    assert {p.stem for p in (tmp_path / "plots").glob("*.png")} == {"pr_bbox", "confusion",
                                                                     "val_grid"}
    assert result["metrics"]["bbox_mAP"] == smoke[1]["metrics"]["bbox_mAP"]


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.external = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])


@pytest.fixture(scope="module")
def report_page(smoke, registry, tiny_data, cache_dir, tmp_path_factory):
    """``detcore report`` (through the CLI) on the smoke run and a second run with another lr."""
    tmp = tmp_path_factory.mktemp("report")
    train(registry, tiny_data, tmp / "other", "optimizer.lr=0.004", "train.max_steps=4")
    out = tmp / "page" / "report.html"
    proc = subprocess.run([sys.executable, "-m", "detcore.cli", "report", str(smoke[0]),
                           str(tmp / "other"), "--out", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=tmp, env=cli_env(cache_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == f"wrote {out} (2 run(s))"
    return out


def test_report_page_is_self_contained_and_every_image_is_a_png(report_page, smoke):
    page = report_page.read_text()
    parser = Images()
    parser.feed(page)
    assert parser.external == []  # nothing outside the file
    # the comparison figure, then each run's plots (the second run did not evaluate per epoch)
    assert len(parser.sources) == 1 + len(EXPECTED) + len(EXPECTED)
    for src in parser.sources:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        assert is_png(base64.b64decode(data, validate=True))
    assert "optimizer.lr" in page and "0.004" in page  # the config difference
    assert "train.eval_every" in page and "train.max_steps" in page
    assert str(smoke[1]["metrics"]["bbox_mAP"]) in page  # figures from result.json


def _browser_tools():
    """``(playwright.sync_api, chromium path)``. Outside CI a missing tool skips the test with
    what to install; in CI (``CI`` set, as .ci/run sets it, after installing both) it fails."""
    missing = []
    try:
        playwright = importlib.import_module("playwright.sync_api")
    except ImportError:
        playwright = None
        missing.append("playwright (pip install 'detcore[browser]')")
    path = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
    if path is None:
        missing.append("a Chromium (apt-get install chromium)")
    if missing:
        message = f"the browser check needs {' and '.join(missing)}"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{message}; .ci/run installs both")
        pytest.skip(message)
    return playwright, path


def test_report_page_opens_in_a_headless_browser_without_errors(report_page, smoke):
    """Chromium opens the page without a console error, a script error or a failed request,
    and shows what it holds: every image decoded and laid out with a size, the figures table
    with each run's result.json metrics, the config difference, every plot heading."""
    playwright, browser_path = _browser_tools()
    other = json.loads((report_page.parent.parent / "other" / "result.json").read_text())
    errors = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("requestfailed", lambda req: errors.append(f"failed: {req.url[:80]}"))
            page.goto(report_page.resolve().as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, "
                                   "i.naturalWidth, i.getBoundingClientRect().width, "
                                   "i.getBoundingClientRect().height])")
            text = page.inner_text("body")
            table = page.inner_text("table")  # the first: the figures from result.json
            title = page.title()
        finally:
            browser.close()
    assert errors == []
    assert title == "detcore report: 2 run(s)"
    assert len(images) == 1 + 2 * len(EXPECTED)  # the comparison, then each run's plots
    assert all(done and natural > 0 and width > 50 and height > 50
               for done, natural, width, height in images), images
    for result in (smoke[1], other):
        for key in ("bbox_mAP", "bbox_mAP_50"):
            assert f"metrics.{key}" in table and json.dumps(result["metrics"][key]) in table
    assert "optimizer.lr" in text and "0.004" in text
    for heading in ("Figures (result.json)", "Config differences", "Runs compared",
                    "Loss terms and learning rate per step", "Precision-recall per class (bbox)",
                    "Confusion matrix", "Validation images"):
        assert heading in text, heading
