"""Discovery, configs, model build, training step, checkpoints (fast)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from effdet_helpers import NUM_CLASSES, SIZE, images, make_model, targets

from detcore.config import CORE_DEFAULTS, apply_override, resolve_config
from detcore.errors import UserError
from detcore.plugins import Registry


@pytest.fixture(scope="module")
def registry():
    return Registry()


def test_plugin_discovered_with_pins_ok():
    out = subprocess.run([sys.executable, "-m", "detcore.cli", "plugins", "--json"],
                         capture_output=True, text=True, check=True)
    plugins = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}
    info = plugins["efficientdet"]
    assert info["status"] == "ok", info["reason"]
    assert info["distribution"] == "detcore-efficientdet"
    assert "efficientdet-d0" in info["models"]
    assert {u["requirement"] for u in info["upstream"]} == {"effdet==0.4.1", "timm==1.0.31"}
    assert all(u["ok"] for u in info["upstream"])
    assert {"register_models", "build_model", "apply_npu_patches", "build_optimizer"} <= set(info["hooks"])


def test_variants_share_one_table(registry):
    from detcore_efficientdet.variants import VARIANTS

    spec = registry.get_model("efficientdet-d0")
    assert spec.plugin == "efficientdet"
    assert spec.upstream == ("effdet==0.4.1", "timm==1.0.31")
    assert set(VARIANTS) <= set(registry.models)
    assert VARIANTS["efficientdet-d0"].arch == "tf_efficientdet_d0"


@pytest.mark.parametrize("name", ["smoke", "tiny", "coco"])
def test_configs_resolve_and_every_key_is_settable(registry, name):
    spec = registry.get_model("efficientdet-d0")
    _, cfg = resolve_config(spec, name, [])
    # every key of the plugin config exists after the merge, so --set reaches it
    for section in CORE_DEFAULTS:
        assert section in cfg
    for key, value in [("model.arch", "tf_efficientdet_d0"), ("model.max_targets", "50"),
                       ("data.synthetic.num_train", "16"), ("data.max_images", "4"),
                       ("train.ema", "0.999"), ("optimizer.lr", "0.01")]:
        apply_override(copy.deepcopy(cfg), f"{key}={value}")


def test_coco_config_reproduces_reference(registry):
    _, cfg = resolve_config(registry.get_model("efficientdet-d0"), "coco", [])
    assert cfg["data"]["input_size"] == [512, 512] and cfg["data"]["batch_size"] == 16
    assert cfg["optimizer"] == {"name": "sgd", "lr": 0.16, "weight_decay": 4e-5, "momentum": 0.9,
                                "scale_lr_by_world_size": True, "base_world_size": 8}
    t = cfg["train"]
    assert (t["epochs"], t["ema"], t["sync_bn"], t["amp"]) == (300, 0.9998, True, "fp16")


def test_build_state_dict_keys_are_effdets(model):
    from effdet.efficientdet import EfficientDet

    plain = EfficientDet(model.config, pretrained_backbone=False)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert model.class_parameter_prefixes() == ("class_net.predict.",)


def test_build_rejects_bad_input_size(registry):
    from detcore_efficientdet.model import build

    _, cfg = resolve_config(registry.get_model("efficientdet-d0"), "tiny", ["data.input_size=[100,128]"])
    with pytest.raises(UserError, match="multiples of 128"):
        build("efficientdet-d0", cfg, 3)


def test_train_step_finite_and_equal_to_effdet_bench(model):
    from effdet.bench import DetBenchTrain
    from effdet.efficientdet import EfficientDet

    from detcore_efficientdet.model import effdet_targets

    ours = copy.deepcopy(model).train()
    x, t = images(3), targets(3)
    torch.manual_seed(1)
    losses = ours(x, t)
    assert set(losses) == {"loss_cls", "loss_box"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)

    plain = EfficientDet(model.config, pretrained_backbone=False)
    plain.load_state_dict(model.state_dict())
    bench = DetBenchTrain(plain, create_labeler=True).train()
    bbox, cls = effdet_targets(t, 100, x.device)
    torch.manual_seed(1)
    ref = bench((x - ours.pixel_mean) / ours.pixel_std, {"bbox": bbox, "cls": cls})
    assert float(total.detach()) == pytest.approx(float(ref["loss"].detach()), abs=1e-6)


def test_eval_output_contract(model):
    with torch.no_grad():
        out = model(images(2))
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape[1] == 4 and det["boxes"].dtype == torch.float32
        assert len(det["boxes"]) == len(det["scores"]) == len(det["labels"]) > 0
        assert det["labels"].dtype == torch.int64
        assert int(det["labels"].min()) >= 0 and int(det["labels"].max()) < NUM_CLASSES
        assert float(det["scores"].min()) >= model.score_threshold
        assert float(det["boxes"].min()) >= 0 and float(det["boxes"].max()) <= SIZE[0]
        assert bool((det["boxes"][:, 2:] >= det["boxes"][:, :2]).all())


def test_effdet_checkpoints_load_through_core(model, tmp_path):
    """effdet train.py saves ``state_dict``/``state_dict_ema`` of the unwrapped EfficientDet."""
    from detcore.checkpoint import load_checkpoint, load_model_weights

    src = {k: v.clone() for k, v in model.state_dict().items()}
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in src.items()}
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "tf_efficientdet_d0", "state_dict": src, "state_dict_ema": ema}, path)
    fresh = make_model(seed=5)
    load_model_weights(fresh, load_checkpoint(path), str(path), finetune=False)
    got = fresh.state_dict()
    assert all(torch.equal(got[k], ema[k]) for k in ema)  # core prefers the EMA weights

    bare = tmp_path / "tf_efficientdet_d0.pth"  # a released-weights-style plain state dict
    torch.save(src, bare)
    load_model_weights(fresh, load_checkpoint(bare), str(bare), finetune=False)
    assert all(torch.equal(fresh.state_dict()[k], src[k]) for k in src)


def test_finetune_reinitialises_only_the_class_layer(model, tmp_path):
    from detcore.checkpoint import load_checkpoint, load_model_weights

    path = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    five = make_model(seed=1, num_classes=5)
    reset = load_model_weights(five, load_checkpoint(path), str(path), finetune=True)
    assert reset and all(k.startswith(five.class_parameter_prefixes()) for k in reset)
    with pytest.raises(UserError, match="finetune"):
        load_model_weights(make_model(seed=1, num_classes=5), load_checkpoint(path), str(path),
                           finetune=False)


def test_sgd_optimizer_hook_filters_weight_decay(registry, model):
    from detcore_efficientdet.optim import build_optimizer

    spec = registry.get_model("efficientdet-d0")
    _, cfg = resolve_config(spec, "coco", [])
    hooks = registry.hooks_for(spec)
    opt = hooks.build_optimizer(spec=spec, config=cfg, model=model, world_size=1)
    assert isinstance(opt, torch.optim.SGD)
    no_wd, wd = opt.param_groups
    assert no_wd["weight_decay"] == 0.0 and wd["weight_decay"] == 4e-5
    assert all(p.ndim > 1 for p in wd["params"]) and opt.defaults["nesterov"] is False
    assert opt.defaults["lr"] == pytest.approx(0.16 / 8)  # world size 1 of base 8
    opt = hooks.build_optimizer(spec=spec, config=cfg, model=model, world_size=4)
    assert opt.defaults["lr"] == pytest.approx(0.16 / 2)  # the world size core passes
    _, smoke = resolve_config(spec, "smoke", [])
    assert build_optimizer(smoke, model, 1) is None  # AdamW: core's default


def test_sync_batchnorm_keeps_timm_activations(model):
    """The model's own converter (which core's trainer calls for ``train.sync_bn``) turns
    timm's BN+act layers into ``SyncBatchNormAct``; torch's would drop their activation."""
    from effdet.efficientdet import EfficientDet
    from timm.layers.norm_act import SyncBatchNormAct

    x = images(1)
    with torch.no_grad():
        ref = model.raw_outputs(x)[0][0]
        ours = copy.deepcopy(model).convert_sync_batchnorm().eval()
        assert torch.allclose(ours.raw_outputs(x)[0][0], ref, atol=1e-5)
        assert sum(isinstance(m, SyncBatchNormAct) for m in ours.modules()) == 48
        assert list(ours.state_dict()) == list(model.state_dict())

        broken = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model)).eval()
        norm = (x - model.pixel_mean) / model.pixel_std
        assert not torch.allclose(EfficientDet.forward(broken, norm)[0][0], ref, atol=1e-3)


def test_one_train_step_through_core(tmp_path, registry):
    from detcore.context import RunOptions
    from detcore.runner import run

    opts = RunOptions(model="efficientdet-d0", task="train", config="tiny", device="cpu",
                      work_dir=str(tmp_path / "train"), progress=False,
                      sets=("train.max_steps=1", "train.eval_after=false", "train.warmup_fps_steps=0"))
    result = run(registry, opts)
    assert result["metrics"]["steps"] == 1
    assert torch.isfinite(torch.tensor(result["metrics"]["final_loss"]))
    assert os.path.isfile(result["artifacts"]["checkpoint"])


def _baseline_vs_by_hand(registry, model, sets, clip=0.0):
    """One step of the plugin's ``baseline_train_step`` under config ``tiny`` + ``sets``, and
    the same SGD step written by hand (clipping at ``clip``): ``(step, its loss, the hand
    loss, max parameter difference)``."""
    spec = registry.get_model("efficientdet-d0")
    _, cfg = resolve_config(spec, "tiny", sets)
    x, t = images(2), targets(2)
    ours, theirs = copy.deepcopy(model).train(), copy.deepcopy(model)
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.01)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.01)
    step = registry.hooks_for(spec).baseline_train_step(spec=spec, config=cfg, model=theirs,
                                                         optimizer=opt_b)
    torch.manual_seed(3)
    loss_a = sum(ours(x, t).values())
    opt_a.zero_grad()
    loss_a.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(ours.parameters(), clip)
    opt_a.step()
    torch.manual_seed(3)
    loss_b = step(x, t)
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(ours.parameters(), theirs.parameters()))
    return step, float(loss_b), float(loss_a.detach()), diff


def test_baseline_train_step_is_effdets_bench(registry, model):
    """``detcore bench``'s upstream step: DetBenchTrain's loss, the same update as core's step."""
    _, loss_b, loss_a, diff = _baseline_vs_by_hand(registry, model, [])
    assert loss_b == pytest.approx(loss_a, abs=1e-6) and diff < 1e-6


def test_baseline_train_step_clips_as_effdet_train_py(registry, model):
    """With ``train.clip_grad`` the upstream step clips as effdet's train.py does (timm's
    ``dispatch_clip_grad``): the same update as clipping by hand; ``train.ema`` keeps timm's EMA."""
    from timm.utils import ModelEmaV2

    step, _, _, diff = _baseline_vs_by_hand(registry, model, ["train.clip_grad=0.01",
                                                              "train.ema=0.5"], clip=0.01)
    assert diff < 1e-6
    assert isinstance(step.ema, ModelEmaV2) and step.ema.decay == 0.5


def test_coco_config_uses_effdets_90_output_head(registry, tmp_path):
    """effdet COCO checkpoints have 90 outputs (category id - 1): the coco config loads them."""
    from effdet.efficientdet import EfficientDet

    from detcore.checkpoint import load_checkpoint, load_model_weights
    from detcore_efficientdet.model import COCO80_CATEGORY_IDS, build

    spec = registry.get_model("efficientdet-d0")
    _, cfg = resolve_config(spec, "coco", ["data.input_size=[128,128]"])
    model = build("efficientdet-d0", cfg, 80)
    assert model.num_classes == 90 and model.class_net.predict.conv_pw.out_channels == 90 * 9
    assert build("efficientdet-d0", cfg, 3).num_classes == 3  # auto: other datasets as they are

    torch.manual_seed(0)
    effdet_model = EfficientDet(model.config, pretrained_backbone=False)  # a 90-class effdet model
    path = tmp_path / "model_best.pth.tar"
    torch.save({"state_dict": effdet_model.state_dict()}, path)
    load_model_weights(model, load_checkpoint(path), str(path), finetune=False)

    person, toothbrush = 0, 79  # dataset labels of category ids 1 and 90
    assert COCO80_CATEGORY_IDS[person] == 1 and COCO80_CATEGORY_IDS[toothbrush] == 90
    from detcore_efficientdet.model import effdet_targets

    _, cls = effdet_targets([{"boxes": torch.ones(2, 4), "labels": torch.tensor([person, toothbrush])}],
                            4, "cpu", model.label_to_output)
    assert cls[0, :2].tolist() == [1.0, 90.0]  # effdet's 1-based outputs
    model.train()
    x = images(2)
    losses = model(x, [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([79])}] * 2)
    assert torch.isfinite(sum(losses.values()))
    model.eval()
    with torch.no_grad():
        _, labels = model.export_forward(x)
        out = model(x)
    valid = labels >= 0
    assert not valid.any() or labels[valid].max() < 80
    assert all(int(o["labels"].max()) < 80 for o in out if len(o["labels"]))

    _, forced = resolve_config(spec, "coco", ["data.input_size=[128,128]", "model.coco_90_classes=true"])
    with pytest.raises(UserError, match="80-category COCO"):
        build("efficientdet-d0", forced, 3)
