"""The FCOS patch's NPU branch (``torch_npu.npu_batch_nms``), run under detcore's CPU simulator
of torch_npu (``detcore.testing.npu_sim``) and compared with its CPU branch within tolerance.

``npu_device()`` stands for ``torch.device("npu")`` (which needs the real backend); the
patch reads only its ``.type`` and runs the NPU op on the tensors the head gives it.
"""
from __future__ import annotations

import pytest
import torch
from fcos_testlib import (SMALL, detections, fcos_config, fcos_spec, images, patch_test_model,
                          sorted_rows)

from detcore.testing.npu_sim import npu_device, simulated_npu  # noqa: F401 (a fixture)
from detcore_fcos.patches import PATCHES, StaticPostprocessPatch

CPU = torch.device("cpu")
NPU = npu_device()
TOL = StaticPostprocessPatch.tolerance


@pytest.fixture(scope="module")
def model():
    return patch_test_model()


def random_candidates(batch=2, k=400, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, k, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + torch.rand(batch, k, 2, generator=gen) * 60 + 1], -1)
    scores = torch.rand(batch, k, generator=gen) * (torch.rand(batch, k, generator=gen) > 0.3)
    labels = torch.randint(0, classes, (batch, k), generator=gen)
    return boxes, scores, labels


@pytest.mark.parametrize("seed", [1, 2])
def test_npu_branch_equals_cpu_branch_on_the_model(model, seed, simulated_npu):
    x = images(seed=seed)
    with StaticPostprocessPatch(CPU):
        cpu = detections(model, x)
    with StaticPostprocessPatch(NPU):
        npu = detections(model, x)
    assert all(len(r) > 10 for r in cpu), "the test needs detections to compare"
    for c, n in zip(cpu, npu):
        assert c.shape == n.shape
        torch.testing.assert_close(n, c, atol=TOL, rtol=0)


@pytest.mark.parametrize("max_per_img,iou", [(100, 0.5), (7, 0.3), (1000, 0.6)])
def test_fixed_nms_npu_equals_onnx_backend(max_per_img, iou, simulated_npu):
    """The two fixed-size NMS backends: same rows, same order, same padding."""
    from detcore_fcos.postprocess import fixed_nms

    boxes, scores, labels = random_candidates()
    onnx = fixed_nms(boxes, scores, labels, 4, iou, max_per_img, "onnx")
    npu = fixed_nms(boxes, scores, labels, 4, iou, max_per_img, "npu")
    assert npu[0].shape == onnx[0].shape == (2, max_per_img, 5)
    assert npu[1].dtype == onnx[1].dtype == torch.int64
    for b in range(2):
        keep = onnx[1][b] >= 0
        assert int(keep.sum()) > 0
        torch.testing.assert_close(
            sorted_rows(npu[0][b, keep, :4], npu[0][b, keep, 4], npu[1][b, keep]),
            sorted_rows(onnx[0][b, keep, :4], onnx[0][b, keep, 4], onnx[1][b, keep]),
            atol=TOL, rtol=0)
        assert torch.equal(npu[1][b] >= 0, keep)
        assert not npu[0][b, ~keep].any()


def test_fixed_nms_npu_with_nothing_to_keep(simulated_npu):
    from detcore_fcos.postprocess import fixed_nms

    boxes, _, labels = random_candidates(k=30)
    dets, out = fixed_nms(boxes, torch.zeros(2, 30), labels, 4, 0.5, 100, "npu")
    assert dets.shape == (2, 100, 5) and not dets.any() and bool((out == -1).all())
    # no candidate at all (empty feature maps): npu_batch_nms refuses empty inputs, as documented
    dets, out = fixed_nms(boxes[:, :0], torch.zeros(2, 0), labels[:, :0], 4, 0.5, 100, "npu")
    assert dets.shape == (2, 100, 5) and not dets.any() and bool((out == -1).all())


def test_hook_applies_the_npu_branch_and_core_reverts(simulated_npu):
    from mmdet.models.dense_heads.fcos_head import FCOSHead

    registry, spec = fcos_spec()
    groups = registry.hooks_for(spec).apply_npu_patches(spec=spec, config=fcos_config(*SMALL),
                                                        device=NPU)
    applied = [p for group in groups for p in group or []]
    try:
        assert [p.name for p in applied] == [c.name for c in PATCHES]
        assert "npu NMS" in FCOSHead.__dict__["predict_by_feat"].__doc__
    finally:
        for patch in reversed(applied):
            patch.revert()
    assert "predict_by_feat" not in FCOSHead.__dict__


@pytest.mark.xfail(strict=True, raises=RuntimeError,
                   reason="open: torch_npu's npu_batch_nms page lists only the Atlas training and "
                          "inference series (910, 310P), not the Atlas A2/A3 training series "
                          "(910B, 910C); the NPU branch has no other kernel there")
def test_npu_branch_runs_on_atlas_a2(model):
    from detcore.testing.npu_sim import active, real_torch_npu_importable, simulated_torch_npu

    if real_torch_npu_importable() or active():
        pytest.skip("a real torch_npu is installed, or the simulator is on for the session")
    with simulated_torch_npu(product="910b"), StaticPostprocessPatch(NPU):
        detections(model, images())
