"""The upstream's own machinery around detcore's mmdet-family models, to check detcore against it.

* :func:`train_checkpoint`: mmengine's ``Runner``, configured as mmdet 3.x ``tools/train.py``
  configures it (``CocoDataset`` + mmdet's train pipeline, ``OptimWrapper`` with clipping,
  ``LinearLR`` + ``MultiStepLR``, the default hooks), trains an mmdet model config for a few
  iterations on a COCO root; its ``CheckpointHook`` writes the checkpoint
  (``meta``, ``state_dict``, ``message_hub``, ``optimizer``, ``param_schedulers``);
* :func:`evaluate`: mmengine's ``Runner.test()`` with mmdet's test pipeline and its
  ``CocoMetric``: mmdet's own figure for a checkpoint on a COCO root, under a resize policy
  (:data:`POLICIES`);
* :func:`save_published` / :func:`save_mmcv1`: the other two layouts users bring, mmdet 3.x's
  published model-zoo file (``tools/model_converters/publish_model.py``: ``meta`` and
  ``state_dict`` only, torch's legacy serialization) and mmcv 1.x's ``save_checkpoint``
  (mmdet 2.x and its forks: ``meta`` with ``mmdet_version``/``CLASSES``/``config``...,
  ``state_dict``, ``optimizer``);
* :func:`main`: the per-plugin ``upstream_eval.py`` scripts (detcore ``--task eval`` next to
  mmdet's evaluation of the same weights on the same images).

Nothing here is on detcore's path: tests and those scripts use it. mmdet and mmengine are
imported inside the functions.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

#: Resize policies of :func:`evaluate`:
#:
#: * ``letterbox``: detcore's input tensor, built by mmdet's own transforms (square canvases):
#:   images decoded and resized with Pillow (bilinear) keeping the aspect ratio to fit the
#:   canvas ``data.input_size``, as core's letterbox does (``Resize(keep_ratio=True,
#:   backend='pillow')``; mmdet keeps its per-axis ``scale_factor``, core one scale), then
#:   ``Pad`` with black pixels at the bottom/right to the canvas, as core does. For segm
#:   models the pad keeps ``img_shape`` the resized image's (:data:`PAD_KEEP_IMG_SHAPE`, the one
#:   transform added to mmdet's pipeline): mmdet's SOLO heads crop masks to ``img_shape``,
#:   which ``Pad`` sets to the padded canvas, which would stretch every mask over the padding.
#:   (``FixShapeResize(keep_ratio=True)``, mmdet's letterbox transform, is not used: its second
#:   rescale makes some images a pixel narrower than the size it computed.)
#: * ``mmdet``: mmdet's shipped test pipeline at detcore's input size: cv2 decode, cv2
#:   ``Resize(scale=input_size, keep_ratio=True)`` (short/long-edge rule), batches padded to a
#:   multiple of 32 with the mean colour by the ``DetDataPreprocessor``.
POLICIES = ("letterbox", "mmdet")

#: mmdet's test meta keys (``PackDetInputs`` in its COCO test pipelines).
META_KEYS = ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")

MASK_BOX_METRIC = "DetcoreMaskBoxCocoMetric"
PAD_KEEP_IMG_SHAPE = "DetcorePadKeepImgShape"


def coco_classes(root, split: str = "val2017") -> tuple[str, ...]:
    """Category names in sorted category-id order: detcore's label order, as mmdet metainfo."""
    data = json.loads((Path(root) / "annotations" / f"instances_{split}.json").read_text())
    return tuple(c["name"] for c in sorted(data["categories"], key=lambda c: c["id"]))


def full_model_config(model_cfg, preprocessor) -> dict:
    """An mmdet ``model`` config with its ``data_preprocessor`` back in (``batch_augments``,
    the LSJ configs' training-only pad to 1024 x 1024, removed)."""
    cfg = copy.deepcopy(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg))
    pre = copy.deepcopy(preprocessor.to_dict() if hasattr(preprocessor, "to_dict")
                        else dict(preprocessor))
    pre.pop("batch_augments", None)
    cfg["data_preprocessor"] = pre
    return cfg


def _runner(cfg: dict):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from .adapter import _mmdet_registry

    _mmdet_registry()
    base = dict(default_scope="mmdet", log_level="WARNING",
                experiment_name=f"detcore-{uuid.uuid4().hex[:8]}",
                env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"),
                             mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0)))
    return Runner.from_cfg(Config({**base, **cfg}))


def _dataset(root, split: str, pipeline, train: bool) -> dict:
    root = Path(root)
    dataset = dict(type="CocoDataset", data_root=str(root),
                   ann_file=f"annotations/instances_{split}.json", data_prefix=dict(img=f"{split}/"),
                   metainfo=dict(classes=coco_classes(root, split)), pipeline=pipeline)
    if train:
        dataset["filter_cfg"] = dict(filter_empty_gt=True, min_size=1)
    else:
        dataset["test_mode"] = True
    return dataset


def train_checkpoint(model_cfg: dict, data_root, work_dir, input_size, *, iters: int = 2,
                     masks: bool = False, lr: float = 1e-4, batch_size: int = 2,
                     before_train=None):
    """Train ``model_cfg`` (:func:`full_model_config`) for ``iters`` iterations with mmengine's
    ``Runner`` on ``data_root``'s ``train2017`` and return ``(checkpoint path, runner)``.

    As mmdet 3.x ``tools/train.py`` runs it (its COCO train pipeline with the ``Resize`` scale
    set to ``input_size`` ``[H, W]``, SGD with gradient clipping, mmdet's 1x schedule in
    iterations, the default hooks); ``CheckpointHook`` writes ``iter_<iters>.pth``.
    ``before_train(runner)`` runs after the model is built and initialised, before the first
    step (e.g. to move its scores off the prior so that it detects something).
    """
    h, w = (int(v) for v in input_size)
    pipeline = [dict(type="LoadImageFromFile"),
                dict(type="LoadAnnotations", with_bbox=True, with_mask=masks),
                dict(type="Resize", scale=(w, h), keep_ratio=True),
                dict(type="RandomFlip", prob=0.5),
                dict(type="PackDetInputs")]
    runner = _runner(dict(
        work_dir=str(work_dir), model=model_cfg,
        train_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                              sampler=dict(type="DefaultSampler", shuffle=True),
                              batch_sampler=dict(type="AspectRatioBatchSampler"),
                              dataset=_dataset(data_root, "train2017", pipeline, train=True)),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters + 1),
        optim_wrapper=dict(type="OptimWrapper", clip_grad=dict(max_norm=35, norm_type=2),
                           optimizer=dict(type="SGD", lr=lr, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=[dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0,
                              end=max(1, iters // 2)),
                         dict(type="MultiStepLR", by_epoch=False, begin=0, end=iters,
                              milestones=[max(1, iters - 1)], gamma=0.1)],
        default_hooks=dict(timer=dict(type="IterTimerHook"),
                           logger=dict(type="LoggerHook", interval=1),
                           param_scheduler=dict(type="ParamSchedulerHook"),
                           checkpoint=dict(type="CheckpointHook", interval=iters, by_epoch=False),
                           sampler_seed=dict(type="DistSamplerSeedHook")),
        randomness=dict(seed=0)))
    runner.model.init_weights()  # the Runner's own call then finds it done (mmengine's rule)
    if before_train is not None:
        before_train(runner)
    runner.train()
    return Path(work_dir) / f"iter_{iters}.pth", runner


def _mask_box_metric() -> str:
    """``CocoMetric`` with each prediction's boxes set to its masks' boxes (mmdet's
    ``mask2bbox``): mmdet's SOLO heads return zero boxes, so its bbox mAP would be 0."""
    from mmdet.evaluation import CocoMetric
    from mmdet.registry import METRICS
    from mmdet.structures.mask import mask2bbox

    if MASK_BOX_METRIC not in METRICS.module_dict:
        class MaskBoxCocoMetric(CocoMetric):
            def process(self, data_batch, data_samples):
                for sample in data_samples:
                    pred = sample["pred_instances"]
                    if "masks" in pred and len(pred["masks"]):
                        pred["bboxes"] = mask2bbox(pred["masks"])
                super().process(data_batch, data_samples)

        METRICS.register_module(name=MASK_BOX_METRIC, module=MaskBoxCocoMetric)
    return MASK_BOX_METRIC


def _pad_keep_img_shape() -> str:
    """mmdet's ``Pad`` that leaves ``img_shape`` the resized image's size (``pad_shape`` is the
    canvas), registered in mmdet's ``TRANSFORMS``."""
    from mmdet.datasets.transforms import Pad
    from mmdet.registry import TRANSFORMS

    if PAD_KEEP_IMG_SHAPE not in TRANSFORMS.module_dict:
        class PadKeepImgShape(Pad):
            def transform(self, results: dict) -> dict:
                shape = results["img_shape"]
                results = super().transform(results)
                results["img_shape"] = shape
                return results

        TRANSFORMS.register_module(name=PAD_KEEP_IMG_SHAPE, module=PadKeepImgShape)
    return PAD_KEEP_IMG_SHAPE


def mmdet_test_pipeline(input_size, policy: str, segm: bool) -> list[dict]:
    """mmdet's test pipeline under ``policy`` (:data:`POLICIES`) for a canvas ``[H, W]``."""
    h, w = (int(v) for v in input_size)
    pack = dict(type="PackDetInputs", meta_keys=META_KEYS)
    if policy == "mmdet":
        return [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(w, h), keep_ratio=True),
                pack]
    if policy != "letterbox":
        raise ValueError(f"policy {policy!r}: use one of {POLICIES}")
    if h != w:
        raise ValueError(f"the letterbox policy needs a square canvas (mmdet's Resize scales by "
                         f"the long/short edges, core's letterbox by height/width), got {h}x{w}")
    load = dict(type="LoadImageFromFile", imdecode_backend="pillow")
    resize = dict(type="Resize", scale=(w, h), keep_ratio=True, backend="pillow",
                  interpolation="bilinear")
    pad = dict(type=_pad_keep_img_shape() if segm else "Pad", size=(w, h),
               pad_val=dict(img=0, seg=255))
    return [load, resize, pad, pack]


def evaluate(model_cfg: dict, checkpoint, data_root, input_size, *, policy: str, work_dir,
             segm: bool = False, batch_size: int = 1) -> dict:
    """mmdet's own COCO evaluation of ``checkpoint`` on ``data_root``'s ``val2017``.

    ``Runner.test()`` with ``load_from=checkpoint`` (an mmengine/mmdet checkpoint: mmengine's
    ``load_checkpoint``), ``CocoDataset`` with :func:`mmdet_test_pipeline` and mmdet's ``CocoMetric``
    (bbox; and segm, with boxes from the masks, for segm models). Returns the metrics under
    detcore's names (``bbox_mAP``, ``segm_mAP_50``...; mmdet rounds them to 3 decimals) and
    ``results``: the result files CocoMetric wrote (``<work_dir>/mmdet.bbox.json``...).
    """
    h, w = (int(v) for v in input_size)
    root = Path(data_root)
    metric = dict(type=_mask_box_metric() if segm else "CocoMetric",
                  ann_file=str(root / "annotations" / "instances_val2017.json"),
                  metric=["bbox", "segm"] if segm else "bbox",
                  outfile_prefix=str(Path(work_dir) / "mmdet"), backend_args=None)
    runner = _runner(dict(
        work_dir=str(work_dir), model=model_cfg, load_from=str(checkpoint),
        test_dataloader=dict(batch_size=batch_size, num_workers=0, persistent_workers=False,
                             drop_last=False, sampler=dict(type="DefaultSampler", shuffle=False),
                             dataset=_dataset(root, "val2017",
                                              mmdet_test_pipeline((h, w), policy, segm),
                                              train=False)),
        test_evaluator=metric, test_cfg=dict(type="TestLoop")))
    metrics = runner.test()
    out = {k.split("/", 1)[-1]: float(v) for k, v in metrics.items()
           if k.split("/", 1)[-1].split("_", 1)[0] in ("bbox", "segm")
           and "_mAP" in k and "copypaste" not in k}
    out["results"] = {kind: str(Path(work_dir) / f"mmdet.{kind}.json")
                      for kind in (("bbox", "segm") if segm else ("bbox",))}
    return out


def as_core_maps_back(results: list[dict], ann_file, input_size,
                      rescale: str = "uniform") -> list[dict]:
    """mmdet's bbox results with their boxes mapped back to the images as core maps its own.

    Both resize the image to ``round(w * s) x round(h * s)`` pixels, ``s`` the letterbox scale
    ``min(H / h, W / w)``. mmdet divides canvas boxes by its per-axis ``scale_factor`` (those
    whole pixels over ``w`` and ``h``) and keeps what extends past the image; core divides by
    ``s`` on both axes (``data.letterbox.rescale=uniform``, its default) or as mmdet does
    (``per_axis``), then clips to the image and rounds (``bbox`` to 0.01, ``score`` to 1e-5).
    Under the ``letterbox`` policy the result is detcore's own prediction file.
    """
    images = {i["id"]: (i["width"], i["height"])
              for i in json.loads(Path(ann_file).read_text())["images"]}
    big, small = (float(v) for v in (max(input_size), min(input_size)))
    out = []
    for r in results:
        w, h = images[r["image_id"]]
        s = min(big / max(w, h), small / min(w, h))  # mmcv's rescale rule = core's, square
        sx, sy = (int(w * s + 0.5) / w, int(h * s + 0.5) / h) if rescale == "uniform" else (s, s)
        x, y, bw, bh = r["bbox"]
        x1, x2 = (min(max(v * sx / s, 0.0), w) for v in (x, x + bw))
        y1, y2 = (min(max(v * sy / s, 0.0), h) for v in (y, y + bh))
        out.append(dict(r, bbox=[round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        score=round(float(r["score"]), 5)))
    return out


def mmdet_meta(classes, **extra) -> dict:
    """The ``meta`` an mmengine ``Runner`` saves (its plain parts), for a published file."""
    import mmengine

    now = datetime.datetime.now()
    return {"epoch": 0, "iter": 0, "cfg": "", "seed": 0, "experiment_name": "detcore",
            "time": now.strftime("%Y%m%d_%H%M%S"), "mmengine_version": mmengine.__version__,
            "dataset_meta": {"classes": tuple(classes)}, **extra}


def save_published(state_dict: dict, path, meta: dict) -> Path:
    """mmdet 3.x's published layout (``publish_model.py``): ``meta`` and ``state_dict`` only,
    written with torch's legacy (non-zip) serialization as that script does."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": state_dict}, path, _use_new_zipfile_serialization=False)
    return path


def save_mmcv1(state_dict: dict, path, classes, *, mmdet_version: str = "2.10.0",
               mmcv_version: str = "1.2.7", optimizer: dict | None = None, epoch: int = 12) -> Path:
    """mmcv 1.x ``save_checkpoint``'s layout, as mmdet 2.x ``tools/train.py`` (and the reference
    forks) wrote it: ``meta`` (``mmdet_version``, ``mmcv_version``, ``config`` text,
    ``CLASSES``, ``env_info``, ``seed``, ``exp_name``, ``epoch``, ``iter``, ``time``,
    ``hook_msgs``), ``state_dict`` (an ``OrderedDict`` with ``_metadata``, as ``model.state_dict()``
    gives it), ``optimizer``; torch's legacy serialization (torch < 1.6)."""
    import collections
    import time

    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = collections.OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items())
    state._metadata = getattr(state_dict, "_metadata", collections.OrderedDict())
    meta = {"mmdet_version": mmdet_version, "mmcv_version": mmcv_version,
            "config": "model = dict(type='...')\n", "CLASSES": tuple(classes),
            "env_info": "sys.platform: linux\nPyTorch: 1.5.0", "seed": 0,
            "exp_name": "train.py", "epoch": epoch, "iter": 1000, "time": time.asctime(),
            "hook_msgs": {"last_ckpt": f"work_dirs/epoch_{epoch}.pth"}}
    ckpt = {"meta": meta, "state_dict": state}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return path


# -- the per-plugin upstream_eval.py scripts ---------------------------------------------------
def _detcore(*args, cwd=None) -> dict:
    """``detcore ARGS`` through the CLI (this interpreter); the run's result.json for ``run``."""
    cmd = [sys.executable, "-m", "detcore.cli", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if args[0] == "run":
        work = Path(args[args.index("--work-dir") + 1])
        return json.loads((work / "result.json").read_text())
    return {}


def main(default_model: str, mmdet_model_config, argv=None) -> dict:
    """detcore ``--task eval`` next to mmdet's evaluation of the same weights on the same images.

    The per-plugin ``upstream_eval.py`` scripts are this function. mmdet's evaluation is
    mmengine's ``Runner.test()`` with mmdet's test pipeline and ``CocoMetric`` (:func:`evaluate`),
    on CPU, under each resize policy (:data:`POLICIES`).
    ``mmdet_model_config(config, num_classes)`` is the plugin's (``(model_cfg, preprocessor)``).
    Without ``--data``, ``detcore data synth`` writes the synthetic set into the work folder;
    without ``--weights``, a short detcore training run (``--train-epochs``) makes the
    checkpoint. Prints the markdown table and writes ``WORK/upstream_eval.json``.
    """
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model, help="detcore model name")
    parser.add_argument("--data", help="COCO root (default: detcore data synth WORK/synth)")
    parser.add_argument("--weights", help="checkpoint (default: a short detcore training run)")
    parser.add_argument("--config", default=None, help="detcore config name (default: the model's)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="detcore config override KEY=VALUE (repeatable)")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--work-dir", help="default: work_dirs/MODEL/upstream_eval")
    args = parser.parse_args(argv)
    model_name = args.model

    import torch

    from detcore.checkpoint import load_checkpoint, load_model_weights
    from detcore.config import resolve_config
    from detcore.plugins import Registry

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(args.work_dir or f"work_dirs/{model_name}/upstream_eval").resolve()
    work.mkdir(parents=True, exist_ok=True)
    sets = [a for s in args.sets for a in ("--set", s)]
    config_args = ["--config", args.config] if args.config else []
    data = Path(args.data).resolve() if args.data else work / "synth"
    if not args.data and not (data / "annotations" / "instances_val2017.json").exists():
        _detcore("data", "synth", data)
    weights = Path(args.weights).resolve() if args.weights else None
    if weights is None:
        trained = _detcore("run", "--model", model_name, "--task", "train", "--data", data,
                           "--work-dir", work / "train", "--device", "cpu", "--no-progress",
                           *config_args, "--set", f"train.epochs={args.train_epochs}", *sets)
        weights = Path(trained["artifacts"]["checkpoint"])

    evaluated = _detcore("run", "--model", model_name, "--task", "eval", "--data", data,
                         "--weights", weights, "--work-dir", work / "eval", "--device", "cpu",
                         "--no-progress", *config_args, *sets)

    registry = Registry()
    spec = registry.get_model(model_name)
    config_name, config = resolve_config(spec, args.config, list(args.sets))
    segm = spec.task_type == "segm"
    input_size = config["data"]["input_size"]
    classes = coco_classes(data)
    model = registry.hooks_for(spec).build_model(spec=spec, config=config,
                                                  num_classes=len(classes))
    load_model_weights(model, load_checkpoint(weights, spec.checkpoint_globals), str(weights),
                       finetune=False, expected_model=model_name)
    published = save_published(model.model.state_dict(), work / "mmdet_weights.pth",
                               mmdet_meta(classes))
    model_cfg = full_model_config(*mmdet_model_config(config, len(classes)))

    from detcore.evaluate import coco_metrics
    from pycocotools.coco import COCO

    policies = list(args.policies)
    if "letterbox" in policies and input_size[0] != input_size[1]:
        print(f"skipping the letterbox policy: canvas {input_size} is not square (mmdet's Resize "
              f"would scale by the long/short edges, not as core's letterbox)", file=sys.stderr)
        policies.remove("letterbox")
    rows = {}
    for policy in policies:
        rows[policy] = evaluate(model_cfg, published, data, input_size, policy=policy,
                                work_dir=work / f"mmdet_{policy}", segm=segm)
    columns = list(policies)
    if not segm and "letterbox" in rows:  # the whole difference: how boxes are mapped back
        ann_file = data / "annotations" / "instances_val2017.json"
        results = json.loads(Path(rows["letterbox"]["results"]["bbox"]).read_text())
        mapped = as_core_maps_back(results, ann_file, input_size)
        rows["letterbox, mapped back as core does"] = coco_metrics(COCO(str(ann_file)), mapped,
                                                                   ("bbox",))
        columns.append("letterbox, mapped back as core does")
    keys = [f"{kind}_{m}" for kind in (("bbox", "segm") if segm else ("bbox",))
            for m in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")]
    header = ["metric", "detcore `--task eval`"]
    for column in columns:
        header += [column if column.startswith("detcore") else f"mmdet ({column})", "Δ"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        ours = evaluated["metrics"][key]
        cells = [f"`{key}`", f"{ours:.4f}"]
        for column in columns:
            theirs = max(0.0, rows[column][key])  # COCO's -1 (no such ground truth) is 0 in core
            digits = 3 if column in POLICIES else 4  # CocoMetric rounds to 3 decimals
            cells += [f"{theirs:.{digits}f}", f"{ours - theirs:+.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    report = {"model": model_name, "config": config_name, "sets": args.sets,
              "input_size": input_size, "data": str(data), "weights": str(weights),
              "date": datetime.date.today().isoformat(), "detcore": evaluated["metrics"],
              "mmdet": rows, "table": table}
    (work / "upstream_eval.json").write_text(json.dumps(report, indent=2))
    print(table)
    return report
