"""The CPU simulator of torch_npu (``detcore.testing.npu_sim``): activation, refusal next to a
real torch_npu, and each simulated API against the examples and restrictions Ascend documents."""
from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import types

import pytest
import torch

from detcore.testing import npu_sim
from detcore.testing.npu_sim import (RealTorchNpuPresent, npu_batch_nms, npu_device, npu_nms_v4,
                                     npu_one_hot, simulated_npu, simulated_torch_npu)  # noqa: F401

REAL = npu_sim.real_torch_npu_importable()
no_real = pytest.mark.skipif(REAL, reason="a real torch_npu is installed here")
#: for tests that switch the simulator on and off themselves
standalone = pytest.mark.skipif("npu_sim.active()",
                                reason="the simulator is on for the session (DETCORE_SIMULATE_NPU)")


# --- activation --------------------------------------------------------------------------


@no_real
@standalone
def test_inactive_unless_asked():
    assert not npu_sim.active() and "torch_npu" not in sys.modules
    with pytest.raises(ImportError):
        importlib.import_module("torch_npu")


@no_real
@standalone
def test_context_installs_the_module_and_removes_it():
    with simulated_torch_npu() as fake:
        import torch_npu
        from torch_npu.optim import NpuFusedSGD

        assert torch_npu is fake and npu_sim.is_simulated(torch_npu)
        assert torch_npu.__version__ == npu_sim.SIMULATED_VERSION
        assert NpuFusedSGD is npu_sim.NpuFusedSGD
        assert importlib.util.find_spec("torch_npu") is not None  # what detcore.devices asks
        with simulated_torch_npu() as again:  # reentrant
            assert again is fake
        assert sys.modules["torch_npu"] is fake
    assert "torch_npu" not in sys.modules and "torch_npu.optim" not in sys.modules
    assert not npu_sim.active()


@no_real
def test_fixture_gives_the_module(simulated_npu):
    import torch_npu

    assert torch_npu is simulated_npu
    assert torch_npu.npu_one_hot is npu_one_hot


@no_real
def test_unsimulated_api_names_the_simulator():
    with simulated_torch_npu() as fake:
        with pytest.raises(AttributeError, match="not simulated by detcore.testing.npu_sim"):
            fake.npu_multiclass_nms  # noqa: B018
        with pytest.raises(ImportError):
            from torch_npu.contrib import function  # noqa: F401


@no_real
def test_patching_helper_imports_the_simulated_module(simulated_npu):
    from detcore.patching import is_npu, require_torch_npu

    assert require_torch_npu("some-patch") is simulated_npu
    assert is_npu(npu_device()) and not is_npu(torch.device("cpu"))
    assert str(npu_device(1)) == "npu:1" and npu_device(1).index == 1


@standalone
def test_refuses_next_to_a_real_torch_npu(monkeypatch, tmp_path):
    package = tmp_path / "torch_npu"
    package.mkdir()
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert npu_sim.real_torch_npu_importable()
    with pytest.raises(RealTorchNpuPresent, match="never shadows"):
        npu_sim.install()
    assert not npu_sim.active() and "torch_npu" not in sys.modules

    monkeypatch.setitem(sys.modules, "torch_npu", types.ModuleType("torch_npu"))  # imported already
    with pytest.raises(RealTorchNpuPresent):
        with simulated_torch_npu():
            pass


def test_environment_variable_is_strict():
    assert npu_sim.requested({"DETCORE_SIMULATE_NPU": "1"})
    for off in ({}, {"DETCORE_SIMULATE_NPU": ""}, {"DETCORE_SIMULATE_NPU": "0"}):
        assert not npu_sim.requested(off)
    with pytest.raises(ValueError, match="use 1"):
        npu_sim.requested({"DETCORE_SIMULATE_NPU": "yes"})
    assert npu_sim.from_env({"DETCORE_SIMULATE_NPU": "910b"}) == (True, "910b")


@no_real
@standalone
def test_product_support_follows_each_api_page():
    """npu_batch_nms's page lists only the Atlas training and inference series (910, 310P);
    npu_nms_v4, npu_one_hot and NpuFusedSGD list the Atlas A2 training series (910B) too."""
    boxes, scores = torch.rand(1, 4, 1, 4), torch.rand(1, 4, 2)
    with simulated_torch_npu(product="910b") as fake:
        fake.npu_one_hot(torch.tensor([0, 1]), -1, 2)
        fake.npu_nms_v4(boxes[0, :, 0], scores[0, :, 0], 2, torch.tensor(0.5), torch.tensor(0.0))
        fake.optim.NpuFusedSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        with pytest.raises(RuntimeError, match="not supported on Atlas A2"):
            fake.npu_batch_nms(boxes, scores, 0.1, 0.5, 3, 4)
        with pytest.raises(ValueError, match="already active"):
            npu_sim.install("910")
    with simulated_torch_npu(product="910") as fake:
        fake.npu_batch_nms(boxes, scores, 0.1, 0.5, 3, 4)
    with simulated_torch_npu(product="310p") as fake:
        with pytest.raises(RuntimeError, match="NpuFusedSGD is not supported"):
            fake.optim.NpuFusedSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="product"):
        npu_sim.install("ascend")
    npu_batch_nms(boxes, scores, 0.1, 0.5, 3, 4)  # no product: no check


def _pytest(tmp_path, env_value, extra_path=None):
    import os

    (tmp_path / "test_probe.py").write_text(textwrap.dedent("""
        def test_probe():
            import torch_npu
            from detcore.testing.npu_sim import is_simulated
            assert is_simulated(torch_npu)
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETCORE_")}
    env["DETCORE_SIMULATE_NPU"] = env_value
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # load it once, by module, installed or not
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "detcore.testing.npu_sim",
                           "-p", "no:cacheprovider", "-o", "addopts=", str(tmp_path / "test_probe.py")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)


def test_pytest_plugin_entry_point_is_installed():
    from importlib.metadata import entry_points

    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("detcore_npu_sim") == "detcore.testing.npu_sim"


@no_real
def test_pytest_plugin_simulates_a_whole_session(tmp_path):
    proc = _pytest(tmp_path, "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch_npu simulated on CPU" in proc.stdout
    a2 = _pytest(tmp_path, "910b")
    assert a2.returncode == 0 and "Atlas A2 training series" in a2.stdout
    off = _pytest(tmp_path, "0")
    assert off.returncode == 1 and "No module named 'torch_npu'" in off.stdout


def test_pytest_plugin_refuses_next_to_a_real_torch_npu(tmp_path):
    real = tmp_path / "site"
    (real / "torch_npu").mkdir(parents=True)
    (real / "torch_npu" / "__init__.py").write_text("")
    proc = _pytest(tmp_path, "1", extra_path=real)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert "never shadows" in proc.stderr
    bad = _pytest(tmp_path, "true")
    assert bad.returncode == 4 and "use 1" in bad.stderr


# --- npu_one_hot -------------------------------------------------------------------------


def test_one_hot_documented_example():
    """``npu_one_hot(IntTensor([5, 3, 2, 1]), depth=5)``: 5 is out of range -> a zero row."""
    got = npu_one_hot(torch.IntTensor([5, 3, 2, 1]), depth=5)
    want = torch.tensor([[0., 0., 0., 0., 0.],
                         [0., 0., 0., 1., 0.],
                         [0., 0., 1., 0., 0.],
                         [0., 1., 0., 0., 0.]])
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_one_hot_defaults_axis_depth_and_values():
    x = torch.tensor([[0, 2], [-1, 1]], dtype=torch.int64)
    assert npu_one_hot(torch.tensor([0, 1])).tolist() == [[1.0], [0.0]]  # depth defaults to 1
    got = npu_one_hot(x, -1, 3, 1, 0)  # the effdet patch's call: axis -1, depth = classes
    assert got.shape == (2, 2, 3)
    assert torch.equal(got[0, 0], torch.tensor([1., 0., 0.])) and not got[1, 0].any()
    assert npu_one_hot(x, 0, 3).shape == (3, 2, 2)  # num_classes is the axis
    assert torch.equal(npu_one_hot(x, 0, 3).movedim(0, -1), got)
    assert npu_one_hot(x, depth=-1).shape == (2, 2, 3)  # depth inferred as max + 1
    assert set(npu_one_hot(x, -1, 3, on_value=5, off_value=-2).unique().tolist()) == {-2.0, 5.0}
    ref = torch.nn.functional.one_hot(x.clamp(min=0), 3).float() * (x >= 0)[..., None]
    assert torch.equal(npu_one_hot(x.int(), -1, 3, 1, 0), ref)


def test_one_hot_restrictions():
    with pytest.raises(TypeError, match="integer index tensor"):
        npu_one_hot(torch.tensor([0.0, 1.0]), -1, 2)
    with pytest.raises(TypeError, match="integer index tensor"):
        npu_one_hot(torch.tensor([True]), -1, 2)
    with pytest.raises(ValueError, match="axis"):
        npu_one_hot(torch.tensor([0, 1]), 4, 2)  # (x, depth, axis) swapped: axis out of range
    with pytest.raises(ValueError, match="depth"):
        npu_one_hot(torch.tensor([0, 1]), -1, 0)
    with pytest.raises(TypeError):
        npu_one_hot([0, 1], -1, 2)


# --- npu_nms_v4 --------------------------------------------------------------------------


def _doc_boxes(n=100, seed=0):
    gen = torch.Generator().manual_seed(seed)
    boxes = torch.empty(n, 4).uniform_(0, 100, generator=gen)
    scores = torch.empty(n).uniform_(0, 1, generator=gen)
    return boxes, scores


def test_nms_v4_documented_example():
    """boxes uniform(0, 100) [100, 4], scores uniform(0, 1), max 20, IoU 0.5, score 0.3."""
    from torchvision.ops import nms

    boxes, scores = _doc_boxes()
    selected, valid = npu_nms_v4(boxes, scores, 20, torch.tensor(0.5), torch.tensor(0.3))
    assert selected.dtype == valid.dtype == torch.int32 and valid.dim() == 0
    assert len(selected) == int(valid) <= 20
    # uniform corners are any diagonal pair (TensorFlow's contract): normalise for torchvision
    xyxy = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]),
                      torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    idx = torch.nonzero(scores >= 0.3, as_tuple=True)[0]
    want = idx[nms(xyxy[idx], scores[idx], 0.5)][:20]
    assert selected.long().tolist() == want.tolist()


def test_nms_v4_padding_and_greedy_order():
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 0., 11., 10.], [50., 50., 60., 60.],
                          [0., 0., 10., 10.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    sel, valid = npu_nms_v4(boxes, scores, 5, torch.tensor(0.5), torch.tensor(0.0),
                            pad_to_max_output_size=True)
    assert sel.tolist() == [0, 2, 0, 0, 0] and int(valid) == 2  # IoU(0, 1) = 0.82; 3 == 0
    sel, valid = npu_nms_v4(boxes, scores, 5, torch.tensor(0.9), torch.tensor(0.75))
    assert sel.tolist() == [0, 1] and int(valid) == 2  # 0.82 <= 0.9 kept; 0.7 < 0.75 removed
    yxyx = boxes[:, [1, 0, 3, 2]]
    assert npu_nms_v4(yxyx, scores, 5, torch.tensor(0.5), torch.tensor(0.0))[0].tolist() == [0, 2]
    sel, valid = npu_nms_v4(boxes.half(), scores.half(), 1, torch.tensor(0.5).half(),
                            torch.tensor(0.0).half())
    assert sel.tolist() == [0] and int(valid) == 1


def test_nms_v4_restrictions():
    boxes, scores = _doc_boxes(10)
    iou, thr = torch.tensor(0.5), torch.tensor(0.3)
    with pytest.raises(TypeError, match="iou_threshold"):
        npu_nms_v4(boxes, scores, 5, 0.5, thr)  # a Python float where a 0-D tensor is documented
    with pytest.raises(TypeError, match="max_output_size"):
        npu_nms_v4(boxes, scores, iou, 5, thr)  # arguments out of order
    with pytest.raises(TypeError, match="float16 or float32"):
        npu_nms_v4(boxes.double(), scores.double(), 5, iou, thr)
    with pytest.raises(ValueError, match="0-D"):
        npu_nms_v4(boxes, scores, 5, iou[None], thr)
    with pytest.raises(ValueError, match="num_boxes"):
        npu_nms_v4(boxes, scores[:5], 5, iou, thr)
    with pytest.raises(ValueError, match="2-D"):
        npu_nms_v4(boxes[None], scores, 5, iou, thr)


# --- npu_batch_nms -----------------------------------------------------------------------


def test_batch_nms_documented_example_and_its_shapes():
    """The page's example passes boxes of batch 8 and scores of batch 3: the documented
    contract ([batch, anchors, q, 4] against [batch, anchors, classes]) rejects it; with
    one batch size it gives the documented output shapes."""
    gen = torch.Generator().manual_seed(0)
    boxes = torch.randn(8, 2, 4, 4, generator=gen)
    with pytest.raises(ValueError, match="batch"):
        npu_batch_nms(boxes, torch.randn(3, 2, 4, generator=gen), 0.3, 0.5, 3, 4)
    scores = torch.randn(8, 2, 4, generator=gen)
    nmsed_boxes, nmsed_scores, nmsed_classes, nmsed_num = npu_batch_nms(boxes, scores, 0.3, 0.5, 3, 4)
    assert nmsed_boxes.shape == (8, 4, 4) and nmsed_scores.shape == nmsed_classes.shape == (8, 4)
    assert nmsed_num.shape == (8,) and nmsed_num.dtype == torch.int32
    assert nmsed_boxes.dtype == nmsed_scores.dtype == nmsed_classes.dtype == torch.float32
    for b in range(8):
        n = int(nmsed_num[b])
        assert bool((nmsed_scores[b, :n] > 0.3).all()) and not nmsed_scores[b, n:].any()
        assert not nmsed_boxes[b, n:].any() and not nmsed_classes[b, n:].any()
        assert bool((nmsed_scores[b, :n].diff() <= 0).all())


def test_batch_nms_matches_per_class_nms():
    from torchvision.ops import batched_nms

    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(2, 60, 2, generator=gen) * 50
    boxes = torch.cat([xy, xy + torch.rand(2, 60, 2, generator=gen) * 30 + 1], -1)
    scores = torch.rand(2, 60, 3, generator=gen)
    out_boxes, out_scores, out_classes, out_num = npu_batch_nms(
        boxes[:, :, None], scores, 0.2, 0.5, 1000, 1000)
    for b in range(2):
        flat = scores[b].reshape(-1)
        anchor = torch.arange(60).repeat_interleave(3)
        cls = torch.arange(3).repeat(60)
        keep = flat > 0.2
        kept = batched_nms(boxes[b][anchor[keep]], flat[keep], cls[keep], 0.5)
        n = int(out_num[b])
        assert n == len(kept)
        torch.testing.assert_close(out_scores[b, :n], flat[keep][kept])
        assert torch.equal(out_classes[b, :n].long(), cls[keep][kept])
        torch.testing.assert_close(out_boxes[b, :n], boxes[b][anchor[keep]][kept])
    # per-class limit, total limit, q == num_classes, the transposed layout
    per_class = npu_batch_nms(boxes[:, :, None], scores, 0.2, 0.5, 2, 100)
    assert bool((per_class[3] <= 6).all())
    for b in range(2):
        counts = torch.bincount(per_class[2][b, :int(per_class[3][b])].long(), minlength=3)
        assert bool((counts <= 2).all())
    assert npu_batch_nms(boxes[:, :, None], scores, 0.2, 0.5, 100, 5)[0].shape == (2, 5, 4)
    per_q = npu_batch_nms(boxes[:, :, None].expand(-1, -1, 3, -1), scores, 0.2, 0.5, 1000, 1000)
    assert all(torch.equal(a, b) for a, b in zip(per_q, (out_boxes, out_scores, out_classes, out_num)))
    transposed = npu_batch_nms(boxes[:, None].transpose(2, 3), scores, 0.2, 0.5, 1000, 1000,
                               transpose_box=True)
    assert all(torch.equal(a, b) for a, b in zip(transposed, (out_boxes, out_scores, out_classes, out_num)))


def test_batch_nms_score_threshold_is_strict_and_fp16_works():
    boxes = torch.tensor([[[[0., 0., 10., 10.]], [[20., 20., 30., 30.]]]])
    scores = torch.tensor([[[0.5], [0.0]]])
    out = npu_batch_nms(boxes, scores, 0.0, 0.5, 10, 10)
    assert int(out[3][0]) == 1  # the zero score is not above the threshold
    half = npu_batch_nms(boxes.half(), scores.half(), 0.0, 0.5, 10, 10)
    assert half[0].dtype == half[1].dtype == half[2].dtype == torch.float16


def test_batch_nms_restrictions():
    boxes, scores = torch.rand(1, 4, 1, 4), torch.rand(1, 4, 2)
    with pytest.raises(TypeError, match="Python float"):
        npu_batch_nms(boxes, scores, torch.tensor(0.1), 0.5, 3, 4)
    with pytest.raises(TypeError, match="dtype"):
        npu_batch_nms(boxes, scores.half(), 0.1, 0.5, 3, 4)
    with pytest.raises(TypeError, match="float16 or float32"):
        npu_batch_nms(boxes.double(), scores.double(), 0.1, 0.5, 3, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        npu_batch_nms(boxes, scores, 0.1, 1.5, 3, 4)
    for per_class, total in ((0, 4), (3, 1001)):
        with pytest.raises(ValueError, match="documented range"):
            npu_batch_nms(boxes, scores, 0.1, 0.5, per_class, total)
    with pytest.raises(ValueError, match="q = 1 or"):
        npu_batch_nms(torch.rand(1, 4, 3, 4), scores, 0.1, 0.5, 3, 4)
    with pytest.raises(NotImplementedError):
        npu_batch_nms(boxes, scores, 0.1, 0.5, 3, 4, change_coordinate_frame=True)
    with pytest.raises(ValueError, match="positive"):
        npu_batch_nms(boxes[:, :0], scores[:, :0], 0.1, 0.5, 3, 4)  # no candidates at all


# --- NpuFusedSGD -------------------------------------------------------------------------


def _doc_params():
    """The page's example parameters (float and half, the last without a gradient), on CPU."""
    params = [torch.arange(6).reshape(2, 3).float(), torch.arange(12).reshape(4, 3).float(),
              torch.arange(6).reshape(2, 3).half(), torch.arange(12).reshape(4, 3).half(),
              torch.arange(15).reshape(5, 3).float(), torch.arange(18).reshape(6, 3).half(),
              torch.arange(6).reshape(2, 3).float()]
    for i, p in enumerate(params):
        if i < len(params) - 1:
            p.requires_grad = True
            p.grad = p.clone().detach() / 100.
    return params


def test_fused_sgd_documented_example_matches_torch_sgd():
    params, ref = _doc_params(), _doc_params()
    kwargs = dict(lr=0.01, momentum=0.9, weight_decay=0.001)
    fused = npu_sim.NpuFusedSGD(params, **kwargs)
    plain = torch.optim.SGD(ref, **kwargs)
    for _ in range(3):
        with torch.no_grad():
            fused.step()
            plain.step()
    for p, r in zip(params, ref):
        assert p.dtype == r.dtype
        torch.testing.assert_close(p, r, atol=0, rtol=0)
    assert torch.equal(params[-1], torch.arange(6).reshape(2, 3).float())  # no grad: untouched


@pytest.mark.parametrize("kwargs", [dict(momentum=0.9, weight_decay=1e-3, nesterov=True),
                                    dict(momentum=0.9, dampening=0.1), dict()])
def test_fused_sgd_trains_like_torch_sgd(kwargs):
    def run(cls):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        opt = cls(net.parameters(), lr=0.1, **kwargs)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)  # a real torch.optim.Optimizer
        for step in range(4):
            x = torch.randn(16, 4, generator=torch.Generator().manual_seed(step))
            opt.zero_grad()  # what core's trainer calls: no set_to_none
            net(x).pow(2).mean().backward()
            opt.step()
            sched.step()
        return net, opt

    net, opt = run(npu_sim.NpuFusedSGD)
    ref, _ = run(torch.optim.SGD)
    for p, r in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(p, r, atol=1e-7, rtol=0)
    again = npu_sim.NpuFusedSGD(net.parameters(), lr=0.1, **kwargs)
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_fused_sgd_constructor_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="learning rate"):
        npu_sim.NpuFusedSGD(params)
    with pytest.raises(ValueError, match="learning rate"):
        npu_sim.NpuFusedSGD(params, lr=-1)
    with pytest.raises(ValueError, match="momentum"):
        npu_sim.NpuFusedSGD(params, lr=0.1, momentum=-0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        npu_sim.NpuFusedSGD(params, lr=0.1, weight_decay=-0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        npu_sim.NpuFusedSGD(params, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)


def _trained_once():
    net = torch.nn.Linear(3, 2)
    opt = npu_sim.NpuFusedSGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return net, opt


def test_fused_sgd_refuses_set_to_none():
    net, opt = _trained_once()
    with pytest.raises(ValueError, match="set_to_none is not supported"):
        opt.zero_grad(set_to_none=True)
    opt.zero_grad()
    assert net.weight.grad is not None and not net.weight.grad.any()


def test_fused_sgd_rejects_reallocated_parameters_and_gradients():
    net, opt = _trained_once()
    net.weight.data = net.weight.data.clone()  # a re-allocated parameter
    with pytest.raises(RuntimeError, match="re-allocated"):
        opt.step()

    net, opt = _trained_once()
    net.weight.grad = net.weight.grad.clone()  # a replaced gradient (what set_to_none does)
    with pytest.raises(RuntimeError, match="gradient of parameter 0"):
        opt.step()

    net = torch.nn.Linear(3, 2)
    opt = npu_sim.NpuFusedSGD(net.parameters(), lr=0.1)
    net.weight.sum().backward()  # the bias has no gradient at the first step
    opt.step()
    opt.zero_grad()
    net(torch.ones(1, 3)).sum().backward()
    with pytest.raises(RuntimeError, match="never update"):
        opt.step()


def test_fused_sgd_takes_only_float32_and_float16_parameters():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))
    p.grad = torch.ones_like(p)
    with pytest.raises(TypeError, match="float32 or float16"):
        npu_sim.NpuFusedSGD([p], lr=0.1).step()


@pytest.mark.parametrize("amp", [{}, {"amp": "fp16", "loss_scale": "dynamic"},
                                 {"amp": "fp16", "loss_scale": "128"}])
def test_core_trainer_steps_with_the_simulated_fused_sgd(registry, tiny_data, tmp_path, monkeypatch,
                                                          amp):
    """core's training step (zero_grad, backward, unscale, clip, step) under NpuFusedSGD's rules."""
    from tests.test_trainer import train

    made = []

    def fused(model, cfg, world_size):
        made.append(npu_sim.NpuFusedSGD(model.parameters(), lr=1e-3, momentum=0.9))
        return made[-1]

    monkeypatch.setattr("detcore.train.trainer.default_optimizer", fused)
    result = train(registry, tiny_data, tmp_path, "train.max_steps=3", "train.eval_after=false",
                   "train.clip_grad=10", **amp)
    assert result["metrics"]["steps"] == 3 and made[0]._fused_grads


def test_ddp_as_core_builds_it_keeps_fused_gradients(tmp_path):
    """torch_npu's fused optimizers break under DDP's ``gradient_as_bucket_view=True`` (the
    gradients are re-pointed at DDP's buckets after fusion); core's DDP keeps the default
    (False), with which the fused gradients stay in place."""
    import inspect

    import torch.distributed as dist

    from detcore.train import trainer

    src = inspect.getsource(trainer)
    assert "DistributedDataParallel(" in src and "gradient_as_bucket_view" not in src
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        for as_view in (False, True):
            torch.manual_seed(0)
            net = torch.nn.Linear(4, 2)
            ddp = torch.nn.parallel.DistributedDataParallel(net, gradient_as_bucket_view=as_view)
            opt = npu_sim.NpuFusedSGD(net.parameters(), lr=0.1)

            def steps():
                for _ in range(3):
                    opt.zero_grad()
                    ddp(torch.ones(2, 4)).sum().backward()
                    opt.step()

            if as_view:
                with pytest.raises(RuntimeError, match="gradient_as_bucket_view"):
                    steps()
            else:
                steps()
    finally:
        dist.destroy_process_group()
