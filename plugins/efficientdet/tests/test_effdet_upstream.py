"""Proven against upstream (slow): effdet's own checkpoints through the CLI, and effdet's own evaluator.

Each checkpoint is made with the upstream's own code: timm's ``CheckpointSaver`` exactly as effdet's
``train.py`` drives it (``args`` namespace, ``state_dict`` / ``state_dict_ema`` of the model that
``unwrap_bench`` gives, optimizer, AMP scaler, saver state), and a plain state dict in the layout
effdet publishes for ``tf_efficientdet_d0`` (its 90-output COCO head). ``detcore run --task eval``
on each must give the detections the in-memory model gives; a partial checkpoint must fail naming
keys. Nothing is downloaded: every effdet model is built with ``pretrained=False``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from effdet_helpers import calibrate_bn

pytestmark = pytest.mark.slow

MODEL = "efficientdet-d0"
SIZE = 128
HERE = Path(__file__).resolve().parent


def detcore_eval(work: Path, data: Path, weights: Path, *sets: str, check: bool = True):
    cmd = [sys.executable, "-m", "detcore.cli", "run", "--model", MODEL, "--task", "eval",
           "--config", "tiny", "--device", "cpu", "--no-progress", "--data", str(data),
           "--weights", str(weights), "--work-dir", str(work)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=600)
    if not check:
        return proc
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    result = json.loads((work / "result.json").read_text())
    assert result["status"] == "ok"
    return result, json.loads(Path(result["artifacts"]["predictions"]).read_text())


def in_memory_predictions(state: dict, data: Path, *sets: str) -> list[dict]:
    """What core's eval computes for ``state`` loaded into the plugin's model, without any file."""
    from detcore.config import resolve_config
    from detcore.data.coco import CocoDetection
    from detcore.evaluate import predict_dataset
    from detcore.plugins import Registry
    from detcore.train.loader import eval_loader
    from detcore_efficientdet.model import build

    _, cfg = resolve_config(Registry().get_model(MODEL), "tiny", list(sets))
    dataset = CocoDetection(data, "val", cfg["data"]["input_size"])
    model = build(MODEL, cfg, dataset.num_classes)
    model.load_state_dict(state, strict=True)
    loader = eval_loader(dataset, int(cfg["eval"]["batch_size"]), 0, 0, 1)
    results = predict_dataset(model, loader, torch.device("cpu"))
    results.sort(key=lambda r: (r["image_id"], -r["score"]))
    return results


def assert_same_detections(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert (g["image_id"], g["category_id"]) == (w["image_id"], w["category_id"])
        assert np.abs(np.subtract(g["bbox"], w["bbox"])).max() <= 0.011  # rounded to 0.01 px
        assert abs(g["score"] - w["score"]) <= 2e-5                        # rounded to 1e-5


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 1]) B x 3 x H x W -> ImageNet-normalised, as detcore's model does it."""
    from effdet.data.transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    x = images.float() / 255 if images.dtype == torch.uint8 else images
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)


def noise(n: int, seed: int) -> torch.Tensor:
    return normalise(torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)))


class _Raw(torch.nn.Module):
    """``calibrate_bn`` drives ``model.raw_outputs``; a bare effdet model has only ``forward``."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def raw_outputs(self, x):
        return self.net(x)


def spread_scores(net: torch.nn.Module, batch: torch.Tensor | None = None) -> torch.nn.Module:
    """An untrained effdet ``EfficientDet`` whose class scores spread (distinct, not saturated):
    BN statistics from ``batch`` (normalised images; default noise), class logits x3."""
    calibrate_bn(_Raw(net), noise(8, 0) if batch is None else batch)
    with torch.no_grad():
        net.class_net.predict.conv_pw.weight.mul_(3.0)
    return net


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """Core's synthetic COCO set (3 classes, category ids 1..3), small images."""
    from detcore.data.synthetic import SynthSpec, write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synth") / "coco",
                           SynthSpec(num_train=1, num_val=6, min_size=96, max_size=160))


def train_py_args(**over) -> argparse.Namespace:
    """The kind of namespace effdet's ``train.py`` parses (and ``CheckpointSaver`` pickles)."""
    args = dict(model="tf_efficientdet_d0", dataset="coco", root="/data/coco", num_classes=3,
                pretrained=False, no_pretrained_backbone=True, initial_checkpoint="", resume="",
                batch_size=4, opt="momentum", opt_eps=1e-3, opt_betas=None, momentum=0.9,
                weight_decay=4e-5, clip_grad=10.0, clip_mode="norm", sched="cosine", lr=0.01,
                lr_noise=None, warmup_lr=1e-4, min_lr=1e-5, epochs=300, warmup_epochs=5,
                mean=None, std=None, interpolation="", fill_color=None, amp=True, native_amp=True,
                apex_amp=False, sync_bn=False, dist_bn="", model_ema=True, model_ema_decay=0.5,
                bench_labeler=True, eval_metric="map", seed=42, output="", workers=4,
                device="cpu", world_size=1, rank=0, local_rank=0, distributed=False,
                prefetcher=True, pretrained_backbone=False)
    args.update(over)
    return argparse.Namespace(**args)


@pytest.fixture(scope="module")
def train_py_checkpoint(tmp_path_factory):
    """``model_best.pth.tar`` as effdet's train.py writes it, and the EMA / raw weights in memory."""
    from effdet import create_model, unwrap_bench
    from timm.optim import create_optimizer
    from timm.utils import CheckpointSaver, ModelEmaV2, NativeScaler

    args = train_py_args()
    torch.manual_seed(0)
    model = create_model(args.model, bench_task="train", num_classes=args.num_classes,
                         pretrained=False, pretrained_backbone=False, image_size=(SIZE, SIZE),
                         bench_labeler=args.bench_labeler)
    spread_scores(unwrap_bench(model))
    optimizer = create_optimizer(args, model)
    loss_scaler = NativeScaler(device="cpu")
    model_ema = ModelEmaV2(model, decay=args.model_ema_decay)
    model.train()
    # one step of train.py's train_epoch: loss, scaler(backward, clip, step), EMA update
    target = {"bbox": torch.tensor([[[20.0, 10.0, 80.0, 60.0]], [[5.0, 5.0, 120.0, 90.0]]]),
              "cls": torch.tensor([[1.0], [3.0]])}
    loss = model(noise(2, seed=1), target)["loss"]
    optimizer.zero_grad()
    loss_scaler(loss, optimizer, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                parameters=model.parameters())
    model_ema.update(model)
    out = tmp_path_factory.mktemp("train_py")
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=model_ema,
                            amp_scaler=loss_scaler, checkpoint_dir=str(out), decreasing=False,
                            unwrap_fn=unwrap_bench)
    saver.save_checkpoint(epoch=0, metric=0.25)
    path = out / "model_best.pth.tar"
    assert path.is_file()
    ema = {k: v.clone() for k, v in unwrap_bench(model_ema).state_dict().items()}
    raw = {k: v.clone() for k, v in unwrap_bench(model).state_dict().items()}
    return path, ema, raw


def test_train_py_checkpoint_evaluates_through_cli(train_py_checkpoint, synth, tmp_path):
    path, ema, raw = train_py_checkpoint
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    # the format under test: what timm's saver wrote for effdet's train.py
    assert {"epoch", "arch", "optimizer", "version", "args", "amp_scaler", "state_dict",
            "state_dict_ema", "metric", "saver"} <= set(ckpt)
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["arch"] == "tf_efficientdet_d0"
    assert set(ckpt["state_dict_ema"]) == set(ema)
    with pytest.raises(Exception):
        torch.load(path, map_location="cpu", weights_only=True)  # plain weights_only refuses it

    _, preds = detcore_eval(tmp_path / "eval", synth, path)
    assert_same_detections(preds, in_memory_predictions(ema, synth))  # core prefers the EMA
    assert in_memory_predictions(raw, synth) != preds  # ... and the two differ here


def test_partial_train_py_checkpoint_fails_naming_keys(train_py_checkpoint, synth, tmp_path):
    path, _, _ = train_py_checkpoint
    with torch.serialization.safe_globals([argparse.Namespace]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "state_dict_ema"):
        ckpt[key] = {k: v for k, v in ckpt[key].items() if not k.startswith("box_net.")}
        ckpt[key]["head.extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.pth.tar"
    torch.save(ckpt, partial)
    proc = detcore_eval(tmp_path / "eval", synth, partial, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert "missing" in err and "box_net." in err, err
    assert "unexpected" in err and "head.extra.weight" in err, err
    assert "Traceback" not in proc.stderr


# -- effdet's published layout: tf_efficientdet_d0, 90 COCO outputs ----------------------------

def write_coco80(root: Path) -> Path:
    """An 80-category COCO-format val set with COCO 2017's category ids, tiny images."""
    from PIL import Image

    from detcore_efficientdet.model import COCO80_CATEGORY_IDS

    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, anns = [], []
    for image_id, (w, h) in enumerate([(64, 48), (40, 72), (96, 96), (80, 36)], start=1):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "val2017" / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for k in range(image_id % 3):  # 1, 2, 0, 1 objects
            cat = COCO80_CATEGORY_IDS[(image_id * 7 + k * 31) % 80]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": [4.0 + k * 8, 4.0, w / 3, h / 3], "area": w * h / 9, "iscrowd": 0})
    cats = [{"id": c, "name": f"category{c}", "supercategory": "coco"} for c in COCO80_CATEGORY_IDS]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """``tf_efficientdet_d0.pth`` as effdet publishes it: the unwrapped model's plain state dict."""
    from effdet import create_model

    from detcore.data.coco import CocoDetection

    data = write_coco80(tmp_path_factory.mktemp("coco80") / "coco")
    torch.manual_seed(0)
    net = create_model("tf_efficientdet_d0", pretrained=False, pretrained_backbone=False,
                       image_size=(SIZE, SIZE))
    assert net.config.num_classes == 90 and net.class_net.predict.conv_pw.out_channels == 90 * 9
    # BN statistics from the set's own letterboxed canvases (+ noise): scores ~0.04..0.1, distinct
    canvases = CocoDetection(data, "val", (SIZE, SIZE))
    spread_scores(net, torch.cat([normalise(torch.stack([canvases[i][0] for i in range(4)])),
                                  noise(4, 0)])).eval()
    path = tmp_path_factory.mktemp("published") / "tf_efficientdet_d0.pth"
    torch.save(net.state_dict(), path)
    return path, net, data


def test_published_coco90_weights_evaluate_through_cli(published, tmp_path):
    from effdet import DetBenchPredict

    from detcore.data.coco import CocoDetection
    from detcore_efficientdet.model import COCO80_CATEGORY_IDS

    path, net, data = published
    sets = ("model.coco_90_classes=auto",)
    result, preds = detcore_eval(tmp_path / "eval", data, path, *sets)
    assert_same_detections(preds, in_memory_predictions(net.state_dict(), data, *sets))
    assert {p["category_id"] for p in preds} <= set(COCO80_CATEGORY_IDS)

    # effdet's own predict bench on the same canvases: output class (1-based) = COCO category id.
    # img_info makes it clip boxes to the canvas before NMS (as the model does; validate.py's
    # loader would give the resized image's extent) and scale them back to the original image
    bench = DetBenchPredict(net).eval()
    dataset = CocoDetection(data, "val", (SIZE, SIZE))
    expected = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        x = normalise(image[None])
        h, w = target["orig_size"]
        scale = target["scale"]
        with torch.no_grad():
            rows = bench(x, img_info={"img_scale": torch.tensor([1.0 / scale]),
                                      "img_size": torch.tensor([[SIZE / scale, SIZE / scale]])})[0]
        for x1, y1, x2, y2, score, cls in rows.tolist():
            if score >= 0.05 and int(cls) in COCO80_CATEGORY_IDS:  # tiny's score cut; 80 of 90 ids
                x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)  # core: within the image
                y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
                expected.append({"image_id": target["image_id"], "category_id": int(cls),
                                 "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    expected.sort(key=lambda r: (r["image_id"], -r["score"]))
    assert len(preds) == len(expected)
    for g, w in zip(preds, expected):
        assert (g["image_id"], g["category_id"]) == (w["image_id"], w["category_id"])
        assert np.abs(np.subtract(g["bbox"], w["bbox"])).max() <= 0.02
        assert abs(g["score"] - w["score"]) <= 2e-5


def test_partial_published_weights_fail_naming_keys(published, tmp_path):
    path, net, data = published
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("class_net.predict.")}
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    proc = detcore_eval(tmp_path / "eval", data, partial, "model.coco_90_classes=auto", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert "missing" in err and "class_net.predict." in err, err


# -- effdet's own evaluator ----------------------------------------------------------------------

def upstream_eval(tmp_path: Path, *sets: str) -> dict:
    """Run ``upstream_eval.py --quick --seeded`` (the README's table command) on core's synthetic set."""
    out = tmp_path / "upstream.json"
    cmd = [sys.executable, str(HERE.parent / "upstream_eval.py"), "--quick", "--seeded",
           "--work-dir", str(tmp_path / "work"), "--json", str(out)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["rows"]) == 8 and all(r["detections"] > 0 for r in report["rows"].values())
    return report


def test_eval_equals_effdets_own_evaluator_without_letterbox(tmp_path):
    """Images already at the input size (no resize, no letterbox padding): detcore ``--task eval``
    with effdet's 0.001 cut and effdet's validate.py pipeline (``DetBenchPredict``,
    ``create_loader``, ``CocoEvaluator``) give the same detections, one for one but for near-ties
    (≥ 99.5%), and the same mAP,
    whatever effdet's fill colour."""
    report = upstream_eval(tmp_path, "data.synthetic.num_val=12", "data.synthetic.min_size=128",
                           "data.synthetic.max_size=128")
    rows, cmp = report["rows"], report["comparison"]
    assert cmp["resize_size_differs"] == 0
    same = cmp["same_resize"]
    assert same["images"] == 12 and same["ours"] == same["theirs"] == 1200
    # 1200 with the old smoke model section, 1197 with the current one (no stochastic depth,
    # BN momentum 0.1): near-ties swapped by the normalisation order, as in the letterboxed test
    assert same["matched"] >= 1194
    # effdet normalises (x - 255 mean) / (255 std), detcore's model (x / 255 - mean) / std
    assert cmp["max_box_diff_px"] <= 0.05 and cmp["max_score_diff"] <= 1e-4
    for key in ("effdet_black", "effdet_default"):
        assert abs(rows[key]["mAP"] - rows["detcore_cut"]["mAP"]) <= 0.002, (key, rows[key]["mAP"])


def test_eval_next_to_effdets_own_evaluator_with_letterbox(tmp_path):
    """Core's usual synthetic sizes (letterboxed): every difference is one of the documented
    ones. detcore's model with core's result conversion and scoring, fed effdet's letterbox
    (``int()`` of the resized side, its fill colour) and clipping boxes to the resized image
    before NMS as ``DetBenchPredict`` does, reproduces effdet's detections one for one and its
    mAP; detcore's own CLI matches nearly every detection where both letterboxes resize alike."""
    report = upstream_eval(tmp_path, "data.synthetic.num_val=16")
    rows, cmp = report["rows"], report["comparison"]
    emu = cmp["emulated_vs_effdet"]
    assert emu["images"] == 16 and emu["ours"] == emu["theirs"] == 1600
    assert emu["matched"] >= 1590  # 1599 measured: a near-tie swapped by the normalisation order
    assert abs(emu["delta_mAP_black"]) <= 0.002 and abs(emu["delta_mAP_mean"]) <= 0.002
    assert 0 < cmp["resize_size_differs"] < 16
    assert cmp["same_resize"]["matched_fraction"] >= 0.85  # 0.93 measured; the rest: NMS clip region
    assert abs(rows["emulated_round_black_image"]["mAP"] - rows["detcore_cut"]["mAP"]) <= 0.002
    # the CLI configured with effdet's letterbox (data.letterbox): only the NMS clip region differs
    pol = cmp["effdet_letterbox_vs_effdet"]
    assert pol["ours"] == pol["theirs"] == 1600 and abs(pol["delta_mAP"]) <= 0.002
    assert pol["matched_fraction"] >= 0.85
