"""Plugin surface: configs, model building, weights, optimizer (the import-light entry point:
the conformance suite)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from fcos_testlib import SMALL, build_fcos, fcos_config, fcos_spec

from detcore.errors import UserError


def test_spec_pins_and_doctor_check():
    _, spec = fcos_spec()
    assert spec.upstream == ("mmdet==3.3.0", "mmcv==2.1.0", "mmengine==0.10.7")
    assert set(spec.configs) == {"smoke", "coco"} and spec.default_config == "smoke"
    ok, detail = spec.needs["mmcv compiled ops"]()
    assert ok, detail


def test_plugin_keys_settable_and_unknown_arch_is_a_user_error():
    config = fcos_config("model.arch=fcos_r50", "model.backbone_weights=/x.pth",
                         "model.frozen_stages=-1", "model.nms_iou=0.7")
    assert config["model"]["arch"] == "fcos_r50" and config["model"]["nms_iou"] == 0.7
    with pytest.raises(UserError, match="model.arch 'fcos_r77'"):
        build_fcos("model.arch=fcos_r77")
    with pytest.raises(UserError, match="unknown config key"):
        fcos_config("model.backbone_weigths=x")


def test_coco_config_is_the_reference_run():
    from detcore_fcos.model import mmdet_model_config

    config = fcos_config(name="coco")
    assert config["data"]["input_size"] == [800, 1333] and config["data"]["batch_size"] == 4
    assert config["train"]["epochs"] == 12 and config["train"]["clip_grad"] == 35.0
    opt, sched = config["optimizer"], config["scheduler"]
    assert (opt["name"], opt["lr"], opt["momentum"], opt["weight_decay"], opt["base_world_size"]) == \
        ("sgd", 0.01, 0.9, 1e-4, 4)
    assert (opt["bias_lr_mult"], opt["bias_decay_mult"]) == (2.0, 0.0)
    assert sched["name"] == "step" and sched["warmup_steps"] == 500
    assert sched["milestones"] == [8 / 12, 11 / 12]
    cfg, dp = mmdet_model_config(config, 80)
    assert cfg.backbone.depth == 50 and cfg.backbone.style == "caffe" and cfg.backbone.init_cfg is None
    assert cfg.backbone.frozen_stages == 1 and cfg.backbone.norm_eval is True
    assert dp.bgr_to_rgb is False  # caffe weights: BGR input, the wrapper flips RGB
    assert cfg.test_cfg.nms.iou_threshold == 0.5 and cfg.test_cfg.max_per_img == 100


def test_smoke_model_unfrozen_and_wrapper_normalises():
    model = build_fcos(*SMALL)
    backbone = model.model.backbone
    assert backbone.frozen_stages == -1 and backbone.norm_eval is False
    assert all(p.requires_grad for p in model.parameters())
    assert model.bgr is False and model.task_type == "bbox"
    assert model.export_output_names == ("dets", "labels") and model.max_detections == 100
    assert model.atc_out_nodes == ("labels", "dets")  # the reference's atc --out_node="labels;dets"
    assert model.class_parameter_prefixes() == ("model.bbox_head.conv_cls.",)
    assert any(k.startswith("model.bbox_head.conv_cls.") for k in model.state_dict())
    # mmdet's focal-loss prior was applied (init_weights ran): bias = -log((1 - 0.01) / 0.01)
    torch.testing.assert_close(model.model.bbox_head.conv_cls.bias,
                               torch.full((3,), -4.59512), atol=1e-4, rtol=0)


def test_backbone_weights_from_a_local_file(tmp_path, caplog):
    source = build_fcos(*SMALL, seed=1).model.backbone.state_dict()
    plain = tmp_path / "resnet18.pth"
    torch.save({**source, "fc.weight": torch.zeros(10, 512)}, plain)  # torchvision-style extra
    mmdet_ckpt = tmp_path / "fcos.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": {f"backbone.{k}": v for k, v in source.items()}},
               mmdet_ckpt)
    for path in (plain, mmdet_ckpt):
        model = build_fcos(*SMALL, f"model.backbone_weights={path}", seed=2)
        for key, value in model.model.backbone.state_dict().items():
            torch.testing.assert_close(value, source[key], atol=0, rtol=0)
    with pytest.raises(UserError, match="does not exist"):
        build_fcos(*SMALL, f"model.backbone_weights={tmp_path / 'missing.pth'}")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(UserError, match="tensors fit this ResNet"):
        build_fcos(*SMALL, f"model.backbone_weights={wrong}")


def test_frozen_reference_backbone_without_weights_warns(caplog):
    with caplog.at_level("WARNING", logger="detcore.fcos"):
        build_fcos(*SMALL, "model.frozen_stages=1", "model.norm_eval=true")
    assert "model.backbone_weights" in caplog.text


def test_optimizer_bias_lr_and_decay_multipliers():
    from detcore_fcos.optim import build_optimizer

    model = build_fcos(*SMALL)
    registry, spec = fcos_spec()
    config = fcos_config(*SMALL, "optimizer.name=sgd", "optimizer.lr=0.01",
                         "optimizer.base_world_size=4", "optimizer.bias_lr_mult=2.0",
                         "optimizer.bias_decay_mult=0.0")
    opt = registry.hooks_for(spec).build_optimizer(spec=spec, config=config, model=model,
                                                   world_size=8)
    assert isinstance(opt, torch.optim.SGD)
    base, bias = opt.param_groups
    assert base["lr"] == pytest.approx(0.02) and bias["lr"] == pytest.approx(0.04)
    assert base["weight_decay"] == 1e-4 and bias["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    bias_names = [names[id(p)] for p in bias["params"]]
    assert "model.bbox_head.conv_cls.bias" in bias_names
    assert not any(".gn." in n or ".bn" in n for n in bias_names)  # norm biases stay in base
    assert len(base["params"]) + len(bias["params"]) == sum(1 for _ in model.parameters())
    assert build_optimizer(config, model, 1).param_groups[0]["lr"] == pytest.approx(0.0025)


def test_detcore_plugins_lists_fcos():
    out = subprocess.run([sys.executable, "-m", "detcore.cli", "plugins", "--json"],
                         capture_output=True, text=True, check=True)
    plugin = next(p for p in json.loads(out.stdout)["plugins"] if p["name"] == "fcos")
    assert plugin["status"] == "ok" and plugin["models"] == ["fcos"]
    assert {u["requirement"] for u in plugin["upstream"] if u["ok"]} == {
        "mmdet==3.3.0", "mmcv==2.1.0", "mmengine==0.10.7"}



def test_baseline_train_step_hook_is_mmengines_step():
    """``detcore bench``'s upstream side: detcore-mmdet's mmengine ``train_step``, not core's loop."""
    registry, spec = fcos_spec()
    model = build_fcos(*SMALL)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = registry.hooks_for(spec).baseline_train_step(spec=spec, config=fcos_config(*SMALL),
                                                        model=model, optimizer=optimizer)
    assert step.__module__ == "detcore_mmdet.adapter" and getattr(step, "upstream", True)


def test_mmdet2_fcos_head_keys_are_renamed_for_strict_loading():
    """Early mmdet 2.x's ``fcos_cls``/``fcos_reg``/``fcos_centerness`` (mmdet renames them too)."""
    src, dst = build_fcos(*SMALL, seed=1), build_fcos(*SMALL, seed=2)
    old = {k.replace("bbox_head.conv_", "bbox_head.fcos_")
           if k.startswith(("bbox_head.conv_cls", "bbox_head.conv_reg", "bbox_head.conv_centerness"))
           else k: v for k, v in src.model.state_dict().items()}
    assert "bbox_head.fcos_centerness.bias" in old
    dst.load_state_dict(dst.convert_state_dict(old), strict=True)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key
