"""Configs, the model wrapper, backbone weights, boxes from masks and the fixed-shape export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import solov2_util as U


def test_registered_models_and_pins():
    from detcore.plugins import Registry

    reg = Registry()
    for name in ("solov2", "solov2-light"):
        spec = reg.get_model(name)
        assert spec.task_type == "segm" and spec.plugin == "solov2"
        assert spec.upstream == ("mmdet==3.3.0", "mmcv==2.1.0", "mmengine==0.10.7")
        assert set(spec.configs) == {"smoke", "coco"} and spec.default_config == "smoke"
        ok, detail = spec.needs["mmcv compiled ops"]()
        assert ok, detail


def test_coco_config_is_the_mmdet_reference():
    from detcore.config import resolve_config
    from detcore.plugins import Registry

    assert U.config("solov2")["model"]["mmdet_config"] == "solov2/solov2_r50_fpn_1x_coco.py"

    _, coco = resolve_config(Registry().get_model("solov2"), "coco", [])
    m = coco["model"]
    assert (m["depth"], m["frozen_stages"], m["norm_eval"], m["feat_channels"]) == (50, 1, True, 512)
    assert m["num_grids"] == [40, 36, 24, 16, 12] and m["backbone_weights"] == ""
    assert coco["data"]["input_size"] == [800, 1344] and coco["data"]["batch_size"] == 2
    assert (coco["train"]["epochs"], coco["train"]["amp"], float(coco["train"]["loss_scale"]),
            coco["train"]["clip_grad"]) == (12, "fp16", 128.0, 35.0)
    assert coco["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
                                 "scale_lr_by_world_size": True, "base_world_size": 8}
    assert coco["scheduler"] == {"name": "step", "warmup_steps": 500, "warmup_ratio": 0.001,
                                 "milestones": [0.6667, 0.9167], "gamma": 0.1}
    assert (coco["eval"]["score_threshold"], coco["eval"]["max_detections"]) == (0.05, 100)


@pytest.mark.parametrize("model", ["solov2", "solov2-light"])
def test_every_plugin_key_can_be_set(model):
    from detcore.config import resolve_config
    from detcore.plugins import Registry

    spec = Registry().get_model(model)
    for name in ("smoke", "coco"):
        _, cfg = resolve_config(spec, name, [])
        sets = [f"model.{k}={v if not isinstance(v, (list, bool)) else str(v).lower()}"
                for k, v in cfg["model"].items() if v != ""]
        sets += ["model.backbone_weights=/x/resnet.pth", "train.loss_scale=dynamic",
                 "train.loss_scale=64"]
        _, again = resolve_config(spec, name, sets)
        assert again["model"]["backbone_weights"] == "/x/resnet.pth"


def test_solov2_full_head_builds_and_trains_a_step():
    cfg = U.config("solov2")
    assert cfg["model"]["stacked_convs"] == 4  # SOLOv2's head, not the light one
    model = U.build(cfg).train()
    losses = model(U.images(2), U.targets(2))
    assert set(losses) == {"loss_mask", "loss_cls"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_predictions_have_boxes_from_masks():
    from mmdet.structures.mask import mask2bbox

    from detcore_solov2.static import masks_to_boxes

    model = U.spread_scores(U.build(U.config())).eval()
    with torch.no_grad():
        outs = model(U.images(2, seed=5))
    assert sum(len(o["scores"]) for o in outs) > 0
    for o in outs:
        assert o["masks"].dtype == torch.bool and o["masks"].shape[-2:] == U.SIZE
        assert o["labels"].dtype == torch.int64
        assert torch.equal(o["boxes"], mask2bbox(o["masks"]))
    masks = torch.rand(7, 9, 11) > 0.8
    masks[2] = False
    assert torch.equal(masks_to_boxes(masks), mask2bbox(masks))


def test_export_forward_matches_eval():
    cfg = U.config()
    model = U.spread_scores(U.build(cfg), bias=-2.8).eval()
    imgs = U.images(2, seed=5)
    with torch.no_grad():
        ref = model(imgs)
        dets, labels, masks = model.export_forward(imgs)
    n = model.max_detections
    assert dets.shape == (2, n, 5) and labels.shape == (2, n) and masks.shape == (2, n, *U.SIZE)
    for i, r in enumerate(ref):
        k = len(r["scores"])
        assert k > 0
        assert torch.allclose(dets[i, :k, 4], r["scores"], atol=1e-5)
        assert torch.equal(labels[i, :k], r["labels"])
        assert torch.equal(masks[i, :k] > 0.5, r["masks"])
        assert torch.equal(dets[i, :k, :4], r["boxes"])
        assert (labels[i, k:] == -1).all() and (dets[i, k:] == 0).all() and (masks[i, k:] == 0).all()


@pytest.mark.parametrize("opset_key", ["opset", "om_opset"])
def test_onnx_export_parity_and_decoding(tmp_path, opset_key):
    """At ``export.opset`` (17) and at ``export.om_opset``, the opset ``--format om`` converts
    (CANN 6.0's atc takes 9-13: the static matrix NMS avoids Trilu, an opset-14 operator)."""
    import onnx

    from detcore.export import export_onnx
    from detcore.infer import OnnxRuntimeEngine, decode_outputs

    cfg = U.config()
    model = U.spread_scores(U.build(cfg), bias=-2.8).eval()
    imgs = U.images(1, seed=5)
    opset = int(cfg["export"][opset_key])
    info = export_onnx(model, tmp_path / "m.onnx", U.SIZE, 1, opset, False, sample=imgs)
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == opset
    assert info["outputs"] == ["dets", "labels", "masks"]
    assert all(v < 1e-3 for v in info["parity_max_abs_diff"].values()), info
    out = decode_outputs(OnnxRuntimeEngine(tmp_path / "m.onnx")(imgs.numpy()))[0]
    with torch.no_grad():
        ref = model(imgs)[0]
    assert torch.equal(out["labels"], ref["labels"])
    assert torch.allclose(out["scores"], ref["scores"], atol=1e-4)
    assert ((out["masks"] > 0.5) != ref["masks"]).sum() <= 2  # float noise at the threshold


def test_backbone_weights_from_a_local_torchvision_file(tmp_path):
    import torchvision

    from detcore.errors import UserError

    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    cfg = U.config("solov2-light", "model.base_channels=64", f"model.backbone_weights={path}")
    model = U.build(cfg, seed=1)
    assert torch.equal(model.model.backbone.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert torch.equal(model.model.backbone.bn1.running_var, tv.bn1.running_var)
    bad = U.config("solov2-light", f"model.backbone_weights={path}")  # base 16: shapes differ
    with pytest.raises(UserError, match="tensors fit this ResNet"):
        U.build(bad)
    with pytest.raises(UserError, match="does not exist"):
        U.build(U.config("solov2-light", f"model.backbone_weights={tmp_path / 'none.pth'}"))


def test_finetune_reinitialises_only_the_class_layer():
    from detcore.checkpoint import load_model_weights

    cfg = U.config()
    src = U.build(cfg, num_classes=3, seed=1)
    dst = U.build(cfg, num_classes=2, seed=2)
    assert dst.class_parameter_prefixes() == ("model.mask_head.conv_cls.",)
    reset = load_model_weights(dst, {"model": src.state_dict()}, "src", finetune=True)
    assert sorted(reset) == ["model.mask_head.conv_cls.bias", "model.mask_head.conv_cls.weight"]
    assert all(k.startswith(dst.class_parameter_prefixes()) for k in reset)
    assert torch.equal(dst.model.mask_head.conv_kernel.weight, src.model.mask_head.conv_kernel.weight)


def test_gt_mask_stats_pads_and_truncates():
    from detcore_solov2.static import gt_mask_stats

    masks = np.zeros((3, 16, 16), np.uint8)
    masks[0, 2:6, 4:8] = 1
    masks[2, 8:, 8:] = 1
    count, ch, cw, small = gt_mask_stats(masks, 4, (4, 4), 2)
    assert count.tolist() == [16, 0] and small.shape == (2, 4, 4)
    assert (float(ch[0]), float(cw[0])) == (3.5, 5.5)


def test_baseline_train_step_hook_runs_mmengines_step_with_masks():
    """``detcore bench``'s upstream side: the hook is detcore-mmdet's mmengine ``train_step``;
    with instance masks (``BitmapMasks``, padded by mmdet's preprocessor) it gives the loss
    detcore's own forward gives for the same batch and weights."""
    from detcore.plugins import Registry

    spec = Registry().get_model("solov2-light")
    cfg = U.config()
    model = U.build(cfg).train()
    imgs, tgts = U.images(2), U.targets(2)
    with torch.no_grad():
        ours = float(sum(model(imgs, tgts).values()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    step = Registry().hooks_for(spec).baseline_train_step(spec=spec, config=cfg, model=model,
                                                         optimizer=optimizer)
    assert step.__module__ == "detcore_mmdet.adapter" and getattr(step, "upstream", True)
    weight = model.model.mask_head.conv_cls.weight.detach().clone()
    log_vars = step(imgs, tgts)
    assert set(log_vars) >= {"loss", "loss_mask", "loss_cls"}
    assert float(log_vars["loss"].detach()) == pytest.approx(ours, rel=1e-4)
    assert not torch.equal(model.model.mask_head.conv_cls.weight, weight)


def test_mmdet_native_checkpoint_keys_include_the_mask_head():
    src, dst = U.build(U.config(), seed=1), U.build(U.config(), seed=2)
    native = src.model.state_dict()
    assert any(k.startswith("mask_head.") for k in native)
    dst.load_state_dict(dst.convert_state_dict(native), strict=True)
    assert torch.equal(dst.model.mask_head.conv_kernel.weight, src.model.mask_head.conv_kernel.weight)


def test_reference_solo_checkpoint_layout_loads_strictly(tmp_path):
    """The reference port's keys (``bbox_head.solo_cate``, ``mask_feat_head.conv_pred.0``...) in
    an mmcv checkpoint load through core's strict loader and give the same predictions."""
    from detcore.checkpoint import load_checkpoint, load_model_weights
    from detcore_mmdet.upstream import save_mmcv1

    src = U.spread_scores(U.build(U.config(), seed=1)).eval()
    legacy = U.solo_layout(src.model.state_dict())
    assert "bbox_head.solo_cate.weight" in legacy and "mask_feat_head.conv_pred.0.conv.weight" in legacy
    assert not any(k.startswith("mask_head.") for k in legacy)
    path = save_mmcv1(legacy, tmp_path / "solov2_light.pth", ("a", "b", "c"),
                      mmdet_version="1.0.0+unknown", mmcv_version="0.2.16")
    dst = U.build(U.config(), seed=2).eval()
    spec = __import__("detcore.plugins", fromlist=["Registry"]).Registry().get_model("solov2-light")
    load_model_weights(dst, load_checkpoint(path, spec.checkpoint_globals), str(path),
                       finetune=False)
    with torch.no_grad():
        ref, got = src(U.images(2)), dst(U.images(2))
    assert sum(len(r["scores"]) for r in ref) > 0
    for r, g in zip(ref, got):
        assert torch.equal(r["scores"], g["scores"]) and torch.equal(r["masks"], g["masks"])
