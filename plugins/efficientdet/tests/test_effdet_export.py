"""ONNX export through core (torch.onnx, dynamo=False; opset 17, and the plugin's
``export.om_opset`` for ``--format om``) and onnxruntime parity."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from effdet_helpers import SIZE, images, stable_slots

from detcore.export import export_onnx
from detcore.infer import OnnxRuntimeEngine, decode_outputs
from detcore_efficientdet.patches import apply_all


def om_opset() -> int:
    """The opset ``--format om`` exports efficientdet-d0 with (its resolved config)."""
    from detcore.config import resolve_config
    from detcore.plugins import Registry

    return int(resolve_config(Registry().get_model("efficientdet-d0"), None, [])[1]["export"]
               ["om_opset"])


@pytest.fixture(scope="module", params=["unpatched", "patched", "om_opset"])
def exported(request, model, tmp_path_factory):
    patches = apply_all({}, torch.device("cpu")) if request.param == "patched" else []
    opset = om_opset() if request.param == "om_opset" else 17
    try:
        path = tmp_path_factory.mktemp(request.param) / "efficientdet-d0.onnx"
        sample = images(2, seed=0)
        info = export_onnx(model, path, SIZE, 2, opset, False, sample=sample)
        assert onnx.load(str(path)).opset_import[0].version == opset
        with torch.no_grad():
            dets, labels = model.export_forward(sample)
    finally:
        for p in reversed(patches):
            p.revert()
    return request.param, path, info, sample, (dets.numpy(), labels.numpy())


def test_export_contract(exported, model):
    _, path, info, _, (dets, labels) = exported
    assert info["outputs"] == ["dets", "labels"]
    assert info["inputs"] == {"input": [2, 3, *SIZE]}
    assert dets.shape == (2, model.max_detections, 5) and dets.dtype == np.float32
    assert labels.shape == (2, model.max_detections) and labels.dtype == np.int64
    out = onnx.load(str(path)).graph.output
    assert [o.name for o in out] == ["dets", "labels"]
    assert [o.type.tensor_type.elem_type for o in out] == [onnx.TensorProto.FLOAT,
                                                          onnx.TensorProto.INT64]
    dims = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in out]
    assert dims == [[2, 100, 5], [2, 100]]  # fixed shapes, known to the graph
    assert set(np.unique(labels)) <= {-1, 0, 1, 2}
    assert (dets[labels < 0] == 0).all() and (dets[labels >= 0][:, 4] >= model.score_threshold).all()


def test_rows_below_score_threshold_are_emptied(model):
    """Empty slot: label -1 and an all-zero ``dets`` row; the rows kept are the same rows."""
    sample = images(2, seed=0)
    strict = copy.deepcopy(model)
    strict.score_threshold = 0.3
    with torch.no_grad():
        dets, labels = (t.numpy() for t in model.export_forward(sample))
        got_dets, got_labels = (t.numpy() for t in strict.export_forward(sample))
    empty = got_labels < 0
    assert empty.any() and (~empty).any()
    assert (got_dets[empty] == 0).all()
    assert (dets[empty][:, 4] < 0.3).all()
    np.testing.assert_array_equal(got_dets[~empty], dets[~empty])
    np.testing.assert_array_equal(got_labels[~empty], labels[~empty])


def test_onnxruntime_parity(exported):
    _, path, info, sample, (ref_dets, ref_labels) = exported
    # core's check (detcore.export.check_parity, run by export_onnx): detections matched one
    # to one; only those in a near-tie at the 100th place may lack a counterpart
    # (a detection matches only one of the same label)
    assert info["parity_max_abs_diff"]["dets"] < 1e-3
    assert info["parity_unmatched"] <= 2
    # and directly: the score-sorted slots whose order rounding cannot change, slot by slot
    got = OnnxRuntimeEngine(path)(sample.numpy())
    par = stable_slots(ref_dets, ref_labels, got["dets"], got["labels"])
    assert par["compared"] >= 150  # 172 of the 200 here
    assert par["label_mismatches"] == 0 and par["max_abs_diff"] < 1e-3


def test_decoded_by_core(exported):
    _, path, _, sample, (_, ref_labels) = exported
    per_image = decode_outputs(OnnxRuntimeEngine(path)(sample.numpy()))
    assert len(per_image) == 2
    for det, labels in zip(per_image, ref_labels):
        assert len(det["boxes"]) == int((labels >= 0).sum())
        assert det["labels"].min() >= 0


def test_same_padding_reaches_the_device_as_python_ints(model):
    """Why ``static_same_pad`` was retired (README): in eager mode timm's ``pad_same`` already
    hands ``F.pad`` Python ints, so every ``constant_pad_nd`` a d0 forward runs (what the NPU
    executes) has literal pads; a patch making them constants changed no device op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Pads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.constant_pad_nd.default:
                self.calls.append(args[1])
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Pads() as pads:
        model.raw_outputs(images(1))
    assert len(pads.calls) >= 10  # d0's stride-2 convs and BiFPN max-pools pad "SAME"
    assert all(type(v) is int for pad in pads.calls for v in pad), pads.calls
