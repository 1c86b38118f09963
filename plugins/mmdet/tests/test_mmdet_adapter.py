"""detcore_mmdet's adapter on a tiny FCOS from mmdet's shipped config (no detcore plugin needed)."""
from __future__ import annotations

import pytest
import torch

#: mmdet's FCOS R18 config, narrowed to seconds a step on a CPU.
FCOS_R18 = "fcos/fcos_r18_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco.py"
SIZE = (96, 128)


def tiny_fcos(seed: int = 0, num_classes: int = 3):
    from detcore_mmdet.adapter import MMDetDetector, build_detector, model_config

    cfg, preprocessor = model_config(FCOS_R18, {"frozen_stages": -1, "norm_eval": False})
    cfg.neck.out_channels = cfg.bbox_head.in_channels = cfg.bbox_head.feat_channels = 32
    cfg.bbox_head.stacked_convs = 1
    cfg.bbox_head.num_classes = num_classes
    torch.manual_seed(seed)
    return build_detector(MMDetDetector, cfg, preprocessor, "", "fcos-tiny")


def batch(n: int = 2, seed: int = 0):
    """``[0, 1]`` images and detcore targets (xyxy canvas pixels, 0-based labels)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = SIZE
    images = torch.rand(n, 3, h, w, generator=gen)
    targets = []
    for i in range(n):
        xy = torch.rand(3, 2, generator=gen) * torch.tensor([w / 2, h / 2])
        wh = torch.rand(3, 2, generator=gen) * torch.tensor([w / 2, h / 2]) + 8
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.tensor([0, 1, 2]),
                        "image_id": i, "scale": 0.5, "orig_size": (2 * h, 2 * w)})
    return images, targets


def test_package_import_is_light_and_pins_the_upstream():
    import detcore_mmdet

    from detcore.testing.imports import modules_loaded_by

    assert detcore_mmdet.UPSTREAM == ("mmdet==3.3.0", "mmcv==2.1.0", "mmengine==0.10.7")
    assert modules_loaded_by("import detcore_mmdet", ("torch", "mmdet", "mmcv", "mmengine")) == []


def test_not_a_detcore_plugin():
    from importlib import metadata

    eps = metadata.entry_points(group="detcore")
    assert not [ep for ep in eps if ep.value.split(".")[0] == "detcore_mmdet"]


def test_compiled_ops_check():
    from detcore_mmdet import compiled_ops_check

    ok, detail = compiled_ops_check()
    assert ok, detail


def test_model_config_applies_the_backbone_keys():
    from detcore_mmdet.adapter import load_config, model_config

    cfg, preprocessor = model_config(FCOS_R18, {"frozen_stages": 1, "norm_eval": True})
    assert cfg.backbone.init_cfg is None and "data_preprocessor" not in cfg
    assert (cfg.backbone.frozen_stages, cfg.backbone.norm_eval) == (1, True)
    assert preprocessor.type == "DetDataPreprocessor" and preprocessor.bgr_to_rgb is True
    assert "data_preprocessor" in load_config(FCOS_R18).model  # the shipped config is untouched
    cfg, _ = model_config(FCOS_R18, {"frozen_stages": -1, "norm_eval": False})
    assert cfg.backbone.norm_cfg.requires_grad is True


def test_convert_state_dict_maps_mmdet_native_keys_for_strict_loading():
    source, target = tiny_fcos(seed=1), tiny_fcos(seed=2)
    native = source.model.state_dict()  # what mmdet saves: backbone.*, neck.*, bbox_head.*
    assert {k.split(".", 1)[0] for k in native} == {"backbone", "neck", "bbox_head"}
    converted = target.convert_state_dict(native)
    assert set(converted) == set(target.state_dict())
    target.load_state_dict(converted, strict=True)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, atol=0, rtol=0)
    own = target.state_dict()
    assert target.convert_state_dict(own) is own  # detcore keys: unchanged


def test_baseline_train_step_is_mmengines_train_step():
    from detcore_mmdet.adapter import baseline_train_step

    model = tiny_fcos().train()
    images, targets = batch()
    # the same batch through detcore's own path, same weights: its loss and which parameters
    # it gives a gradient (mmdet's ResNet starts each residual branch at zero: not all do)
    detcore_loss = sum(model(images, targets).values())
    detcore_loss.backward()
    moving = {k for k, v in model.named_parameters() if v.grad is not None and v.grad.any()}
    model.zero_grad(set_to_none=True)
    detcore_loss = float(detcore_loss.detach())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    # Adam: every parameter with a gradient moves by about lr, whatever its gradient's size
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    config = {"train": {"clip_grad": 35.0, "amp": "off", "loss_scale": "dynamic"}}
    step = baseline_train_step(model, optimizer, config)
    assert type(model.model.data_preprocessor).__name__ == "DetDataPreprocessor"
    log_vars = step(images, targets)
    loss = float(log_vars["loss"].detach())
    assert torch.isfinite(torch.tensor(loss)) and {"loss_cls", "loss_bbox"} <= set(log_vars)
    # mmdet's DetDataPreprocessor and PackDetInputs-style samples feed the network what the
    # wrapper does: the same loss for the same batch and weights
    assert loss == pytest.approx(detcore_loss, rel=1e-4)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert len(moving) > len(before) / 2 and changed == moving  # the given optimizer stepped


def test_optim_wrapper_clips_only_when_asked():
    from mmengine.optim import OptimWrapper

    from detcore_mmdet.adapter import optim_wrapper

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    clipped = optim_wrapper(opt, {"train": {"clip_grad": 35.0, "amp": "off"}})
    assert type(clipped) is OptimWrapper and clipped.clip_grad_kwargs == {"max_norm": 35.0}
    assert not optim_wrapper(opt, {"train": {"clip_grad": 0.0, "amp": "off"}}).clip_grad_kwargs
