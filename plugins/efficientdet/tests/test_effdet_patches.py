"""Each vendored patch: equivalent to the code it replaces (within its tolerance) and reversible."""
from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest
import torch
from effdet_helpers import images, stable_slots, targets

from detcore.errors import MissingDependency
from detcore.patching import Patch
from detcore_efficientdet.model import effdet_targets
from detcore_efficientdet.patches import (PATCHES, FixedSizeNmsPatch, FpnCombineStackPatch,
                                          FusedSgdPatch, OneHotPatch, StaticSamePadPatch, apply_all)

CPU = torch.device("cpu")


def outputs(model, x, t):
    """Head outputs, losses and detections of ``model`` (eval-mode BN, fixed seed)."""
    model.eval()
    with torch.no_grad():
        cls_out, box_out = model.raw_outputs(x)
        losses = model.losses(cls_out, box_out, *effdet_targets(t, model.max_targets, x.device))
        dets = model.detect(cls_out, box_out)
    return list(cls_out) + list(box_out), losses, dets


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def sorted_rows(dets: torch.Tensor) -> np.ndarray:
    """Detections per image in a canonical order (equal scores may come in either order)."""
    out = []
    for img in dets.numpy():
        out.append(img[np.lexsort(img.T[::-1])])
    return np.stack(out)


def originals(patch: Patch) -> list:
    return [(owner, attr, owner.__dict__.get(attr)) for owner, attr, _ in patch.targets()]


def assert_reverts(patch_cls):
    patch = patch_cls(CPU)
    before = originals(patch)
    patch.apply()
    assert patch.applied
    assert all(owner.__dict__.get(attr) is not old for owner, attr, old in before)
    patch.revert()
    assert not patch.applied
    assert all(owner.__dict__.get(attr) is old for owner, attr, old in before)


@pytest.fixture(scope="module")
def data():
    return images(3), targets(3)


@pytest.fixture(scope="module")
def reference(model, data):
    return outputs(model, *data)


@pytest.mark.parametrize("patch_cls", PATCHES)
def test_patch_is_documented_and_reverts(patch_cls):
    doc = patch_cls.__doc__ or ""
    assert "NPU" in doc and "Tolerance" in doc, f"{patch_cls.__name__} must name its NPU limitation and tolerance"
    assert patch_cls.name != "unnamed" and patch_cls.tolerance >= 0
    assert_reverts(patch_cls)


@pytest.mark.parametrize("patch_cls", [StaticSamePadPatch, OneHotPatch, FixedSizeNmsPatch,
                                       FpnCombineStackPatch])
def test_model_outputs_equal_within_tolerance(patch_cls, model, data, reference):
    """Same weights, same inputs: head outputs, losses and detections, unpatched vs patched."""
    with patch_cls(CPU) as patch:
        got = outputs(model, *data)
    tol = patch.tolerance
    assert max_diff(reference[0], got[0]) <= tol
    assert max_diff(reference[1].values(), got[1].values()) <= max(tol, 0.0)
    if tol == 0:
        np.testing.assert_array_equal(sorted_rows(reference[2]), sorted_rows(got[2]))
    else:  # rounding-level score changes may reorder near-equal detections: compare the rest
        ref, new = reference[2], got[2]
        par = stable_slots(ref[..., :5], ref[..., 5], new[..., :5], new[..., 5], min_score=0.05)
        assert par["compared"] >= 200  # 250 of the 300 here
        assert par["label_mismatches"] == 0 and par["max_abs_diff"] <= 0.01
    # the model is back to effdet's code
    assert max_diff(reference[0], outputs(model, *data)[0]) == 0


def test_static_same_pad_makes_the_pad_constant(model):
    from timm.layers.conv2d_same import Conv2dSame

    convs = [m for m in model.modules() if isinstance(m, Conv2dSame)]
    assert convs, "tf_efficientdet_d0 uses timm's dynamic SAME padding"
    with StaticSamePadPatch(CPU):
        with torch.no_grad():
            model.raw_outputs(images(1))
        graph = torch.jit.trace(convs[0], torch.rand(1, convs[0].in_channels, 64, 64)).inlined_graph
    assert "aten::size" not in str(graph) and "aten::ceil" not in str(graph)
    graph = torch.jit.trace(convs[0], torch.rand(1, convs[0].in_channels, 64, 64)).inlined_graph
    assert "aten::size" in str(graph)  # timm's own: the pad is computed from the runtime shape


def test_one_hot_portable_matches_effdet():
    from effdet import loss

    x = torch.tensor([[0, 2, -1], [-2, 1, 3]])
    ref = loss.one_hot(x, 4)
    with OneHotPatch(CPU):
        assert loss.one_hot is not ref and loss.loss_jit is loss.loss_fn
        got = loss.one_hot(x, 4)
    assert got.dtype == ref.dtype == torch.float32
    assert torch.equal(got, ref)


def test_fixed_nms_matches_effdet_with_image_scale(model):
    """The replaced ``_batch_detection`` as effdet's own benches call it (img_scale/img_size)."""
    from effdet import bench

    with torch.no_grad():
        cls_out, box_out = model.raw_outputs(images(2))
        pp = bench._post_process(cls_out, box_out, 5, 3, max_detection_points=5000)
    args = (2, *pp)
    kwargs = dict(img_scale=torch.tensor([1.5, 0.5]), img_size=torch.tensor([[128.0, 128.0]] * 2),
                  max_det_per_image=100)
    ref = bench._batch_detection(args[0], args[1], args[2], model.anchors.boxes, *args[3:], **kwargs)
    with FixedSizeNmsPatch(CPU):
        got = bench._batch_detection(args[0], args[1], args[2], model.anchors.boxes, *args[3:], **kwargs)
    assert got.shape == ref.shape == (2, 100, 6)
    np.testing.assert_array_equal(sorted_rows(ref), sorted_rows(got))


def test_fused_sgd_matches_torch_sgd(model, data):
    from detcore_efficientdet import optim

    cfg = {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 4e-5,
                         "scale_lr_by_world_size": True, "base_world_size": 1}}
    x, t = data

    def train(patched: bool):
        net = copy.deepcopy(model).train()
        patch = FusedSgdPatch(CPU).apply() if patched else None
        try:
            opt = optim.build_optimizer(cfg, net, 1)
            for step in range(2):
                torch.manual_seed(step)  # drop-path draws
                loss = sum(net(x, t).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
        finally:
            if patch:
                patch.revert()
        return net, opt

    ref, ref_opt = train(False)
    got, got_opt = train(True)
    assert not ref_opt.defaults.get("fused")
    assert got_opt.defaults.get("fused") is True  # torch has a fused CPU SGD kernel
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(ref.parameters(), got.parameters()))
    assert diff <= FusedSgdPatch.tolerance


@pytest.mark.parametrize("patch_cls", [OneHotPatch, FixedSizeNmsPatch, FusedSgdPatch])
def test_npu_branch_names_torch_npu_when_absent(patch_cls):
    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is installed here")
    with pytest.raises(MissingDependency, match="torch_npu"):
        patch_cls(_FakeNpu()).apply()
    assert not patch_cls(CPU).applied


class _FakeNpu:
    type = "npu"


def test_hook_applies_all_portable_patches():
    from detcore_efficientdet import plugin

    applied = plugin.apply_npu_patches(config={}, device=CPU)
    try:
        assert [p.name for p in applied] == [cls.name for cls in PATCHES]
        assert all(p.applied for p in applied)
    finally:
        for p in reversed(applied):
            p.revert()


def test_apply_all_reverts_on_failure(monkeypatch):
    from effdet import bench

    before = bench._batch_detection
    with pytest.raises(MissingDependency):
        apply_all({}, _FakeNpu())  # static pad applies, then the NPU one-hot needs torch_npu
    assert bench._batch_detection is before
    from timm.layers.conv2d_same import Conv2dSame

    assert "_static_pad" not in getattr(Conv2dSame.forward, "__code__").co_names


def test_patched_model_is_still_deterministic(model, data):
    """Applying every patch at once keeps the model within the largest tolerance."""
    ref = outputs(model, *data)
    patches = apply_all({}, CPU)
    try:
        got = outputs(model, *data)
    finally:
        for p in reversed(patches):
            p.revert()
    tol = max(p.tolerance for p in patches)
    assert max_diff(ref[0], got[0]) <= tol
    assert max_diff(ref[1].values(), got[1].values()) <= tol
