"""Each vendored patch: equivalent to the code it replaces (within its tolerance) and reversible."""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from effdet_helpers import images, max_diff, outputs, sgd_steps, stable_slots, targets

from detcore.errors import MissingDependency
from detcore.patching import Patch
from detcore_efficientdet.model import effdet_targets
from detcore_efficientdet.patches import (PATCHES, FixedSizeNmsPatch, FpnCombineStackPatch,
                                          FusedSgdPatch, OneHotPatch, apply_all)

CPU = torch.device("cpu")


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


@pytest.mark.parametrize("patch_cls", [OneHotPatch, FixedSizeNmsPatch, FpnCombineStackPatch])
def test_model_outputs_equal_within_tolerance(patch_cls, model, data, reference):
    """Same weights, same inputs: head outputs, losses and detections, unpatched vs patched."""
    with patch_cls(CPU) as patch:
        got = outputs(model, *data)
    tol = patch.tolerance
    assert max_diff(reference[0], got[0]) <= tol
    assert max_diff(reference[1].values(), got[1].values()) <= max(tol, 0.0)
    if tol == 0:  # row for row, in effdet's order
        np.testing.assert_array_equal(reference[2].numpy(), got[2].numpy())
    else:  # rounding-level score changes may reorder near-equal detections: compare the rest
        ref, new = reference[2], got[2]
        par = stable_slots(ref[..., :5], ref[..., 5], new[..., :5], new[..., 5], min_score=0.05)
        assert par["compared"] >= 200  # 250 of the 300 here
        assert par["label_mismatches"] == 0 and par["max_abs_diff"] <= 0.01
    # the model is back to effdet's code
    assert max_diff(reference[0], outputs(model, *data)[0]) == 0


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
    np.testing.assert_array_equal(ref.numpy(), got.numpy())  # row for row


def test_fused_sgd_matches_torch_sgd(model, data):
    ref, ref_opt = sgd_steps(model, data)
    got, got_opt = sgd_steps(model, data, FusedSgdPatch(CPU))
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
    import importlib.util

    if importlib.util.find_spec("torch_npu") is not None:  # a real or simulated torch_npu
        pytest.skip("checks the failure when torch_npu is missing")
    from effdet import bench, efficientdet

    from detcore.patching import apply_patches

    before = bench._batch_detection, efficientdet.FpnCombine.forward
    with pytest.raises(MissingDependency):  # the FPN patch applies, then the NPU NMS needs torch_npu
        apply_patches([FpnCombineStackPatch(_FakeNpu()), FixedSizeNmsPatch(_FakeNpu())])
    assert (bench._batch_detection, efficientdet.FpnCombine.forward) == before
    with pytest.raises(MissingDependency):
        apply_all({}, _FakeNpu())
    assert (bench._batch_detection, efficientdet.FpnCombine.forward) == before


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


# -- the upstream contract on its edge cases: every patch, patched vs unpatched ------------------
# Each replacement must accept every input the function it replaces accepts (same signature, the
# optional arguments, empty ground truth, no candidate above a threshold, empty feature maps,
# minimal configs) and return the same type, shape, dtype and values there; where upstream
# refuses an input, the replacement refuses it too (same exception type).

def outcome(call):
    try:
        return call()
    except Exception as exc:  # an exception is an outcome to compare
        return exc


def both(patch_cls, call):
    """``call()`` unpatched, then patched (it must look the replaced attribute up when called)."""
    ref = outcome(call)
    with patch_cls(CPU):
        got = outcome(call)
    return ref, got


def assert_same(ref, got, atol: float = 0.0):
    if isinstance(ref, Exception):
        assert isinstance(got, Exception), f"upstream raises {ref!r}; the patch returned {got!r}"
        assert type(got) is type(ref), (ref, got)
        return
    assert not isinstance(got, Exception), f"upstream accepts this input; the patch raised {got!r}"
    assert type(got) is type(ref)
    assert (got.shape, got.dtype, got.device) == (ref.shape, ref.dtype, ref.device)
    if atol == 0:
        assert torch.equal(got, ref), float((got.double() - ref.double()).abs().max())
    else:
        torch.testing.assert_close(got, ref, atol=atol, rtol=0)


def signature_of(fn) -> list[tuple]:
    """``[(name, default)]`` of a Python callable or a TorchScript function."""
    import inspect

    schema = getattr(fn, "schema", None)
    if schema is not None:
        return [(a.name, a.default_value) for a in schema.arguments]
    return [(p.name, None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("patch_cls", PATCHES)
def test_replacements_keep_the_upstream_signature(patch_cls):
    for owner, attr, new in patch_cls(CPU).targets():
        original = owner.__dict__[attr]
        want, got = signature_of(original), signature_of(new)
        if patch_cls is FusedSgdPatch:  # SGD(fused=True): the same parameters, another default
            want = [(n, d) for n, d in want if n != "fused"]
            got = [(n, d) for n, d in got if n != "fused"]
        assert got == want, f"{patch_cls.name}: {attr}{got} replaces {attr}{want}"


# npu_one_hot: what effdet's one_hot accepts (int64 and int32, any shape) and refuses

ONE_HOT_CASES = {
    "targets with -1/-2": (torch.tensor([[0, 2, -1], [-2, 1, 3]]), 4),
    "int32 targets": (torch.tensor([[0, 2, -1], [-2, 1, 3]], dtype=torch.int32), 4),
    "empty": (torch.zeros((0,), dtype=torch.int64), 4),
    "empty level (B x 0 x W x A)": (torch.zeros((2, 0, 3, 9), dtype=torch.int64), 90),
    "0-d": (torch.tensor(2), 4),
    "all background": (torch.full((2, 3, 3, 9), -1), 3),
    "one class": (torch.tensor([0, -1, 0]), 1),
    "class out of range (refused)": (torch.tensor([4]), 4),
    "float targets (refused)": (torch.tensor([1.0, -1.0]), 4),
    "int16 targets (refused)": (torch.tensor([1, -1], dtype=torch.int16), 4),
}


@pytest.mark.parametrize("case", list(ONE_HOT_CASES))
def test_one_hot_edge_cases(case):
    from effdet import loss

    x, n = ONE_HOT_CASES[case]
    assert_same(*both(OneHotPatch, lambda: loss.one_hot(x, n)))


@pytest.mark.parametrize("variant", [{}, {"jit_loss": True}, {"legacy_focal": True},
                                     {"label_smoothing": 0.1}])
@pytest.mark.parametrize("gt", ["no boxes in the batch", "one image empty"])
def test_detection_loss_edge_cases(model, variant, gt):
    """effdet's ``DetectionLoss`` (which calls the patched ``one_hot``, and ``loss_jit`` with
    ``jit_loss``) on empty ground truth and minimal configs: the same losses."""
    from effdet.loss import DetectionLoss

    keys = ("num_classes", "alpha", "gamma", "delta", "box_loss_weight", "label_smoothing",
            "legacy_focal", "jit_loss")
    config = SimpleNamespace(**{**{k: model.config[k] for k in keys}, **variant})
    t = targets(2) if gt == "one image empty" else [targets(3)[2]] * 2
    with torch.no_grad():
        cls_out, box_out = model.raw_outputs(images(2))
        labels = model.anchor_labeler.batch_label_anchors(*effdet_targets(t, model.max_targets, CPU))
    fn = DetectionLoss(config)
    ref, got = both(OneHotPatch, lambda: fn(cls_out, box_out, *labels))
    assert not isinstance(ref, Exception) and not isinstance(got, Exception), (ref, got)
    for r, g in zip(ref, got):
        assert_same(r, g)


# fixed_size_nms: effdet's _batch_detection on every path, compared row for row (no sorting)

def _candidates(model, n: int, batch: int = 2, logits=None, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    anchors = model.anchors.boxes
    cls = torch.randn(batch, n, 1, generator=g) if logits is None else torch.full((batch, n, 1), logits)
    box = torch.randn(batch, n, 4, generator=g) * 0.2
    idx = torch.stack([torch.randperm(anchors.shape[0], generator=g)[:n] for _ in range(batch)])
    classes = torch.randint(0, 3, (batch, n), generator=g)
    return batch, cls.to(dtype), box.to(dtype), anchors, idx, classes


NMS_CASES = {
    "model-sized candidate set": dict(n=3000),
    "fewer candidates than max_det": dict(n=20),
    "a single candidate": dict(n=1, batch=1),
    "every score exactly 0 (no candidate above any threshold)": dict(n=50, logits=-200.0),
    "every score equal": dict(n=50, logits=0.0),
    "max_det_per_image=0": dict(n=50, kwargs=dict(max_det_per_image=0)),
    "max_det_per_image=1": dict(n=50, kwargs=dict(max_det_per_image=1)),
    "img_scale only": dict(n=50, kwargs=dict(img_scale=torch.tensor([2.0, 0.5]))),
    "img_size only": dict(n=50, kwargs=dict(img_size=torch.tensor([[50.0, 60.0], [70.0, 80.0]]))),
    "img_scale and img_size": dict(n=50, kwargs=dict(img_scale=torch.tensor([2.0, 0.5]),
                                                     img_size=torch.tensor([[50.0, 60.0], [70.0, 80.0]]))),
    "half-precision head outputs": dict(n=50, dtype=torch.float16),
    "soft_nms=True": dict(n=200, kwargs=dict(soft_nms=True)),
    "soft_nms=True, no candidate above its 0.001": dict(n=50, logits=-10.0, kwargs=dict(soft_nms=True)),
}


@pytest.mark.parametrize("case", list(NMS_CASES))
def test_fixed_nms_edge_cases(model, case):
    from effdet import bench

    spec = dict(NMS_CASES[case])
    kwargs = spec.pop("kwargs", {})
    args = _candidates(model, **spec)
    ref, got = both(FixedSizeNmsPatch, lambda: bench._batch_detection(*args, **kwargs))
    assert_same(ref, got)


def test_fixed_nms_through_effdets_predict_bench(model):
    """``DetBenchPredict`` (effdet's own caller) with img_info, unpatched vs patched."""
    from effdet import DetBenchPredict

    from detcore_efficientdet.model import _Network

    predict = DetBenchPredict(_Network(model)).eval()
    x = (images(2) - model.pixel_mean) / model.pixel_std
    info = {"img_scale": torch.tensor([1.25, 0.8]), "img_size": torch.tensor([[160.0, 100.0]] * 2)}
    with torch.no_grad():
        ref, got = both(FixedSizeNmsPatch, lambda: predict(x, img_info=info))
    assert_same(ref, got)


# fpn_combine_stack: every weight method, node count, dtype, empty batch, a bad method

def _fpn_combine(weight_method: str, offsets: tuple, dtype):
    from effdet.efficientdet import FpnCombine

    torch.manual_seed(0)
    info = [dict(num_chs=8, size=(16, 16)), dict(num_chs=8, size=(8, 8)), dict(num_chs=6, size=(8, 8))]
    node = FpnCombine(info, 8, offsets, output_size=(8, 8), weight_method=weight_method,
                      downsample="max", upsample="nearest").eval().to(dtype)
    if node.edge_weights is not None:
        with torch.no_grad():
            node.edge_weights.copy_(torch.tensor([0.7, -0.2, 1.9][:len(offsets)]))
    return node, [torch.randn(2, f["num_chs"], *f["size"]).to(dtype) for f in info]


@pytest.mark.parametrize("weight_method", ["attn", "fastattn", "sum", "not-a-method (refused)"])
@pytest.mark.parametrize("offsets", [(0,), (1, 2), (0, 1, 2)])
def test_fpn_combine_edge_cases(weight_method, offsets):
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        node, x = _fpn_combine(weight_method, offsets, dtype)
        for batch in (x, [t[:0] for t in x]):  # and an empty batch
            with torch.no_grad():
                assert_same(*both(FpnCombineStackPatch, lambda: node(batch)))


# fused_sgd: the optimizer the build_optimizer hook makes, on every option SGD takes

SGD_GROUPS = {
    "one group": lambda net, frozen: net.parameters(),
    "decay / no-decay groups": lambda net, frozen: [
        {"params": [p for p in net.parameters() if p.ndim <= 1], "weight_decay": 0.0},
        {"params": [p for p in net.parameters() if p.ndim > 1], "weight_decay": 1e-2}],
    "an empty group": lambda net, frozen: [{"params": [], "weight_decay": 0.0},
                                           {"params": list(net.parameters())}],
    "parameters that never get a gradient": lambda net, frozen: [*net.parameters(), *frozen.parameters()],
}
SGD_OPTIONS = [dict(lr=0.1, momentum=0.9, nesterov=False), dict(lr=0.1), dict(lr=0.1, momentum=0.0),
               dict(lr=0.1, momentum=0.9, nesterov=True), dict(lr=0.1, momentum=0.9, dampening=0.5),
               dict(lr=0.1, momentum=0.9, weight_decay=1e-3, maximize=True),
               dict(lr=torch.tensor(0.1), momentum=0.9),
               dict(lr=0.1, momentum=0.0, nesterov=True)]  # refused by SGD


@pytest.mark.parametrize("groups", list(SGD_GROUPS))
def test_fused_sgd_edge_cases(groups):
    from detcore_efficientdet import optim

    def train(options):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
        frozen = torch.nn.Linear(2, 2)
        opt = optim.SGD_FACTORY(SGD_GROUPS[groups](net, frozen), **options)
        for step in range(3):
            loss = net(torch.randn(5, 4, generator=torch.Generator().manual_seed(step))).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in [*net.parameters(), *frozen.parameters()]])

    for options in SGD_OPTIONS:
        ref, got = both(FusedSgdPatch, lambda: train(options))
        assert_same(ref, got, atol=FusedSgdPatch.tolerance)


# -- what the patches were written against --------------------------------------------------

def test_patch_refuses_a_locally_edited_effdet(tmp_path, monkeypatch):
    """effdet's ``one_hot`` edited by one line (a temporary copy of its source put in its
    place): ``npu_one_hot`` refuses, naming it, and replaces neither of its targets."""
    from effdet import loss

    from detcore.testing.patch_checks import edited_copy

    jit = loss.loss_jit
    edited = edited_copy(loss.one_hot, "dtype=torch.float32", "dtype=torch.float16", tmp_path)
    monkeypatch.setattr(loss, "one_hot", edited)
    with pytest.raises(MissingDependency, match="patch npu_one_hot: effdet.loss:one_hot differs "
                                                "from the upstream source"):
        OneHotPatch(CPU).apply()
    assert loss.one_hot is edited and loss.loss_jit is jit
