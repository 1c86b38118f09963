"""Each patch's NPU branch, run under detcore's CPU simulator of torch_npu
(``detcore.testing.npu_sim``) and compared with its CPU branch within the patch's tolerance.

The patches choose their branch from ``device.type``; ``npu_device()`` stands for
``torch.device("npu")`` (which needs the real backend). None of these branches moves a
tensor to its device: they run the torch_npu op on the tensors the model gives them.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from effdet_helpers import images, max_diff, outputs, sgd_steps, targets

from detcore.testing.npu_sim import npu_device, simulated_npu  # noqa: F401 (a fixture)
from detcore_efficientdet.patches import (PATCHES, FixedSizeNmsPatch, FpnCombineStackPatch,
                                          FusedSgdPatch, OneHotPatch, apply_all)

CPU = torch.device("cpu")
NPU = npu_device()


def sorted_rows(dets: torch.Tensor) -> np.ndarray:
    return np.stack([img[np.lexsort(img.T[::-1])] for img in dets.numpy()])


@pytest.fixture(scope="module")
def data():
    return images(3), targets(3)


def test_npu_branches_take_the_torch_npu_ops(simulated_npu):
    from effdet import bench, loss

    from detcore_efficientdet import optim
    from detcore_efficientdet.patches import fixed_nms, one_hot

    with OneHotPatch(NPU), FixedSizeNmsPatch(NPU), FusedSgdPatch(NPU):
        assert loss.one_hot is one_hot.one_hot_npu
        assert bench._batch_detection is fixed_nms.batch_detection_npu
        assert optim.SGD_FACTORY is simulated_npu.optim.NpuFusedSGD


@pytest.mark.parametrize("patch_cls", [FpnCombineStackPatch])
def test_device_independent_patches_install_the_same_code_on_npu(patch_cls, simulated_npu):
    assert [t[2] for t in patch_cls(NPU).targets()] == [t[2] for t in patch_cls(CPU).targets()]


def test_one_hot_npu_equals_cpu_branch_and_effdet(simulated_npu):
    from effdet import loss

    x = torch.tensor([[0, 2, -1], [-2, 1, 3]])
    ref = loss.one_hot(x, 4)
    for patch in (OneHotPatch(NPU), OneHotPatch(CPU)):
        with patch:
            got = loss.one_hot(x, 4)
            assert got.dtype == torch.float32 and torch.equal(got, ref)
            got = loss.one_hot(x.to(torch.int32), 4)  # int32 targets too
            assert torch.equal(got, ref)
            assert torch.equal(loss.one_hot(torch.zeros((0, 5), dtype=torch.int64), 4),
                               torch.zeros((0, 5, 4)))


@pytest.mark.parametrize("patch_cls", [OneHotPatch, FixedSizeNmsPatch])
def test_npu_branch_equals_cpu_branch_on_the_model(patch_cls, model, data, simulated_npu):
    """Head outputs, losses and detections: NPU branch (simulated) vs CPU branch, row for row."""
    with patch_cls(CPU):
        cpu = outputs(model, *data)
    with patch_cls(NPU) as patch:
        npu = outputs(model, *data)
    assert max_diff(cpu[0], npu[0]) <= patch.tolerance
    assert max_diff(cpu[1].values(), npu[1].values()) <= patch.tolerance
    assert npu[2].shape == cpu[2].shape == (3, 100, 6)
    if patch_cls is FixedSizeNmsPatch:
        assert int((npu[2][..., 4] > 0).sum()) >= 200, "the test needs detections to compare"
        np.testing.assert_array_equal(npu[2].numpy(), cpu[2].numpy())  # same rows, same order
    else:
        np.testing.assert_array_equal(sorted_rows(npu[2]), sorted_rows(cpu[2]))


def test_fixed_nms_npu_with_image_scale_and_few_candidates(model, simulated_npu):
    """effdet's own call with img_scale/img_size, and fewer candidates than max_det."""
    from effdet import bench

    with torch.no_grad():
        cls_out, box_out = model.raw_outputs(images(2))
    for points in (5000, 40):  # 40 candidates < 100 output rows
        pp = bench._post_process(cls_out, box_out, 5, 3, max_detection_points=points)
        kwargs = dict(img_scale=torch.tensor([1.5, 0.5]),
                      img_size=torch.tensor([[128.0, 128.0]] * 2), max_det_per_image=100)
        args = (2, pp[0], pp[1], model.anchors.boxes, *pp[2:])
        with FixedSizeNmsPatch(CPU):
            cpu = bench._batch_detection(*args, **kwargs)
        with FixedSizeNmsPatch(NPU):
            npu = bench._batch_detection(*args, **kwargs)
        assert npu.shape == cpu.shape == (2, 100, 6)
        np.testing.assert_array_equal(npu.numpy(), cpu.numpy())
        if points == 40:
            assert bool((npu[:, 40:] == 0).all())


def test_fixed_nms_npu_soft_nms_runs_effdets_own(model, simulated_npu):
    from effdet import bench

    with torch.no_grad():
        cls_out, box_out = model.raw_outputs(images(2))
    pp = bench._post_process(cls_out, box_out, 5, 3, max_detection_points=500)
    args = (2, pp[0], pp[1], model.anchors.boxes, *pp[2:])
    with FixedSizeNmsPatch(CPU):
        cpu = bench._batch_detection(*args, max_det_per_image=100, soft_nms=True)
    with FixedSizeNmsPatch(NPU):
        npu = bench._batch_detection(*args, max_det_per_image=100, soft_nms=True)
    np.testing.assert_array_equal(npu.numpy(), cpu.numpy())


def test_fused_sgd_npu_trains_like_torch_sgd(model, data, simulated_npu):
    """The patched ``build_optimizer`` hook builds NpuFusedSGD on NPU; core's step pattern
    (``zero_grad()`` without set_to_none, backward, step) trains as torch's SGD does."""
    ref, _ = sgd_steps(model, data)
    got, opt = sgd_steps(model, data, FusedSgdPatch(NPU))
    assert type(opt) is simulated_npu.optim.NpuFusedSGD
    with pytest.raises(ValueError, match="set_to_none"):
        opt.zero_grad(set_to_none=True)  # why every step in detcore calls zero_grad()
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(ref.parameters(), got.parameters()))
    assert diff <= FusedSgdPatch.tolerance


def test_effdet_baseline_step_runs_with_npu_fused_sgd(model, data, simulated_npu):
    """``detcore bench``'s effdet-own step (DetBenchTrain) with the NPU optimizer."""
    from detcore_efficientdet import optim
    from detcore_efficientdet.model import baseline_train_step

    cfg = {"optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 4e-5,
                         "scale_lr_by_world_size": True, "base_world_size": 1},
           "train": {"amp": "off", "clip_grad": 10.0, "ema": 0.0}}
    net = copy.deepcopy(model).train()
    with FusedSgdPatch(NPU):
        opt = optim.build_optimizer(cfg, net, 1)
    step = baseline_train_step(net, opt, cfg)
    losses = [float(step(*data)) for _ in range(2)]
    assert all(np.isfinite(losses)) and opt._fused_grads


def test_hook_applies_every_patch_on_npu_and_all_equal_cpu(model, data, simulated_npu):
    """``apply_npu_patches`` as core calls it on an NPU: every patch applied, model outputs
    within the largest tolerance of the same patches' CPU branches, all reverted after."""
    from effdet import bench, loss

    from detcore_efficientdet import plugin

    before = (loss.one_hot, bench._batch_detection)
    cpu_patches = apply_all({}, CPU)
    try:
        cpu = outputs(model, *data)
    finally:
        for p in reversed(cpu_patches):
            p.revert()
    applied = plugin.apply_npu_patches(config={}, device=NPU)
    try:
        assert [p.name for p in applied] == [cls.name for cls in PATCHES]
        npu = outputs(model, *data)
    finally:
        for p in reversed(applied):
            p.revert()
    assert (loss.one_hot, bench._batch_detection) == before
    tol = max(p.tolerance for p in applied)
    assert max_diff(cpu[0], npu[0]) <= tol and max_diff(cpu[1].values(), npu[1].values()) <= tol
    np.testing.assert_array_equal(npu[2].numpy(), cpu[2].numpy())
