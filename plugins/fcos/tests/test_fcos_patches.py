"""The vendored patches: applied/reverted through the hook, and equivalent to unpatched mmdet on CPU."""
from __future__ import annotations

import pytest
import torch
from fcos_testlib import (SMALL, build_fcos, detections, fcos_config, fcos_spec, images,
                          patch_test_model, sorted_rows)

from detcore.errors import MissingDependency
from detcore_fcos.patches import PATCHES, StaticPostprocessPatch, apply_all


@pytest.fixture(scope="module")
def model():
    return patch_test_model()


def head_owns_predict():
    from mmdet.models.dense_heads.fcos_head import FCOSHead

    return "predict_by_feat" in FCOSHead.__dict__


def test_every_patch_documents_limitation_and_tolerance():
    for cls in PATCHES:
        doc = cls.__doc__ or ""
        assert "NPU limitation" in doc and "Tolerance" in doc, cls
        assert cls.tolerance >= 0 and cls.name != "unnamed"


def test_hook_applies_and_core_reverts():
    registry, spec = fcos_spec()
    config = fcos_config(*SMALL)
    groups = registry.hooks_for(spec).apply_npu_patches(spec=spec, config=config,
                                                        device=torch.device("cpu"))
    applied = [p for group in groups for p in group or []]
    try:
        assert [p.name for p in applied] == [c.name for c in PATCHES]
        assert all(p.applied for p in applied) and head_owns_predict()
    finally:
        for patch in reversed(applied):
            patch.revert()
    assert not head_owns_predict() and not any(p.applied for p in applied)


def test_another_plugins_model_never_reaches_this_hook():
    from dataclasses import replace

    registry, spec = fcos_spec()
    other = replace(spec, name="not-fcos", plugin="not-fcos")  # owned by another plugin
    groups = registry.hooks_for(other).apply_npu_patches(spec=other, config=fcos_config(),
                                                         device=torch.device("cpu"))
    assert not [p for g in groups if g for p in g] and not head_owns_predict()


def test_npu_branch_without_torch_npu_fails_cleanly_and_leaves_nothing_applied():
    try:
        import torch_npu  # noqa: F401
        pytest.skip("torch_npu is installed")
    except ImportError:
        pass
    with pytest.raises(MissingDependency, match="torch_npu"):
        apply_all(fcos_config(), _NpuDevice())
    assert not head_owns_predict()


class _NpuDevice:
    """Stands for ``torch.device("npu")``, which needs torch_npu to exist."""

    type = "npu"


@pytest.mark.parametrize("seed", [1, 2])
def test_static_postprocess_equals_mmdet(model, seed):
    x = images(seed=seed)
    reference = detections(model, x)
    assert all(len(r) > 10 for r in reference), "the test needs detections to compare"
    with StaticPostprocessPatch(torch.device("cpu")):
        patched = detections(model, x)
    assert not head_owns_predict()
    for ref, got in zip(reference, patched):
        assert ref.shape == got.shape
        torch.testing.assert_close(got, ref, atol=StaticPostprocessPatch.tolerance, rtol=0)


def test_static_postprocess_rescale_and_thresholds(model):
    """mmdet's own ``predict(rescale=True)`` with another score threshold and nms_pre."""
    from mmengine.config import ConfigDict

    x = images(seed=4)
    samples = model.data_samples(x)
    for s in samples:
        s.set_metainfo({"scale_factor": (0.5, 0.25)})
    head = model.model.bbox_head
    saved = head.test_cfg
    head.test_cfg = ConfigDict(dict(saved, score_thr=0.3, nms_pre=50, min_bbox_size=4.0))
    try:
        with torch.no_grad():
            ref = model.model.predict(model.normalise(x), samples, rescale=True)
            with StaticPostprocessPatch(torch.device("cpu")):
                got = model.model.predict(model.normalise(x), samples, rescale=True)
    finally:
        head.test_cfg = saved
    for r, g in zip(ref, got):
        r, g = r.pred_instances, g.pred_instances
        assert len(r) > 0
        torch.testing.assert_close(sorted_rows(g.bboxes, g.scores, g.labels),
                                   sorted_rows(r.bboxes, r.scores, r.labels), atol=1e-4, rtol=0)


def test_export_forward_equals_mmdet_predict(model):
    """The exported graph's PyTorch side is the same post-processing: fixed shapes, same detections."""
    x = images(seed=5)
    reference = detections(model, x)
    with torch.no_grad():
        dets, labels = model.export_forward(x)
    assert labels.shape == (2, 100) and dets.shape == (2, 100, 5) and labels.dtype == torch.int64
    for i, ref in enumerate(reference):
        keep = labels[i] >= 0
        assert bool((dets[i, ~keep] == 0).all())
        assert bool((dets[i, :-1, 4] >= dets[i, 1:, 4]).all()), "rows in descending score order"
        got = sorted_rows(dets[i, keep, :4], dets[i, keep, 4], labels[i, keep])
        torch.testing.assert_close(got, ref[:100], atol=1e-5, rtol=0)


def test_empty_predictions_keep_fixed_shapes():
    model = build_fcos(*SMALL).eval()  # fresh: every score at the 0.01 prior, below 0.05
    x = images(h=128, w=128)
    with torch.no_grad():
        assert all(len(o["scores"]) == 0 for o in model(x))
        with StaticPostprocessPatch(torch.device("cpu")):
            assert all(len(o["scores"]) == 0 for o in model(x))
        dets, labels = model.export_forward(x)
    assert labels.shape == (2, 100) and bool((labels == -1).all()) and bool((dets == 0).all())


def test_onnx_nms_matches_onnxruntime_operator():
    """The eager side of the NonMaxSuppression Function against onnxruntime's operator."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from detcore_fcos.postprocess import OnnxNMS

    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 300, 2, generator=gen) * 100
    wh = torch.rand(2, 300, 2, generator=gen) * 40 + 1
    boxes = torch.cat([xy, xy + wh], -1)
    scores = torch.rand(2, 4, 300, generator=gen) * (torch.rand(2, 4, 300, generator=gen) > 0.5)
    max_per_class, iou, thr = 7, 0.4, 0.2
    got = OnnxNMS.apply(boxes, scores, max_per_class, iou, thr)

    node = helper.make_node("NonMaxSuppression", ["b", "s", "m", "i", "t"], ["out"])
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 300, 4]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 4, 300])],
        [helper.make_tensor_value_info("out", TensorProto.INT64, None)],
        [helper.make_tensor("m", TensorProto.INT64, [1], [max_per_class]),
         helper.make_tensor("i", TensorProto.FLOAT, [1], [iou]),
         helper.make_tensor("t", TensorProto.FLOAT, [1], [thr])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    proto.ir_version = 7
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"b": boxes.numpy(), "s": scores.numpy()})[0]
    assert len(want) > 20
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, np.asarray(want).tolist()))


def test_candidates_match_mmdet_filter_scores_and_topk():
    """top-k then mask == mask then top-k (mmdet's ``filter_scores_and_topk``), per level."""
    from mmdet.models.utils import filter_scores_and_topk

    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(500, 3, generator=gen)
    for thr, k in ((0.05, 1000), (0.9, 50), (0.5, 10)):
        ref, ref_labels, ref_idx, _ = filter_scores_and_topk(scores, thr, k)
        top, idx = scores.reshape(-1).topk(min(k, scores.numel()))
        valid = top > thr
        assert torch.equal(top[valid], ref)
        assert torch.equal(idx[valid] // 3, ref_idx) and torch.equal(idx[valid] % 3, ref_labels)


# -- the patch against mmdet's own predict_by_feat on its unit tests' inputs ----------------
# mmdet's tests/test_models/test_dense_heads/test_fcos_head.py builds a bare FCOSHead
# (num_classes=4, in_channels=1, feat_channels=1, stacked_convs=1, norm_cfg=None) with image
# metas of a 256 x 256 image whose ``scale_factor`` is the int 1. Here the head's raw outputs
# are drawn directly (spread logits, non-negative distances), so the post-processing has
# thousands of candidates; each case runs mmdet's method and the patched one on the same
# inputs and compares the whole result: type, fields, dtypes, shapes and values.
S = 256
BIG = 10 ** 6  # max_per_img that cuts nothing
FULL_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)


def bare_head(test_cfg=None):
    from mmdet.models.dense_heads import FCOSHead
    from mmengine.config import ConfigDict

    head = FCOSHead(num_classes=4, in_channels=1, feat_channels=1, stacked_convs=1, norm_cfg=None,
                    test_cfg=ConfigDict(FULL_CFG if test_cfg is None else test_cfg))
    return head.eval()


def head_outputs(head, batch=1, size=S, seed=0, empty=False):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(0, 0) if empty else (-(-size // s[1]), -(-size // s[0]))
              for s in head.prior_generator.strides]
    cls = [torch.randn(batch, 4, h, w, generator=gen) * 2 - 1.5 for h, w in shapes]
    reg = [torch.rand(batch, 4, h, w, generator=gen) * 48 for h, w in shapes]
    ctr = [torch.randn(batch, 1, h, w, generator=gen) for h, w in shapes]
    return cls, reg, ctr


def metas(batch=1, size=S, scale_factor=1):
    return [{"img_shape": (size, size, 3), "pad_shape": (size, size, 3),
             "scale_factor": scale_factor} for _ in range(batch)]


def both(head, *args, **kwargs):
    """mmdet's ``predict_by_feat`` and the patched one on the same inputs."""
    with torch.no_grad():
        ref = head.predict_by_feat(*args, **kwargs)
        with StaticPostprocessPatch(torch.device("cpu")):
            got = head.predict_by_feat(*args, **kwargs)
    return ref, got


def assert_same_results(ref, got, atol=StaticPostprocessPatch.tolerance):
    from mmengine.structures import InstanceData

    assert type(got) is type(ref) is list and len(got) == len(ref)
    for r, g in zip(ref, got):
        assert isinstance(g, InstanceData) and isinstance(r, InstanceData)
        assert sorted(g.keys()) == sorted(r.keys()) == ["bboxes", "labels", "scores"]
        for key in r.keys():
            assert g[key].dtype == r[key].dtype and g[key].shape == r[key].shape, key
        torch.testing.assert_close(sorted_rows(g.bboxes, g.scores, g.labels),
                                   sorted_rows(r.bboxes, r.scores, r.labels), atol=atol, rtol=0)


@pytest.mark.parametrize("test_cfg", [
    FULL_CFG,
    # only the keys mmdet needs on the NMS path: nms_pre -1 (mmdet then drops each level's
    # last valid candidate), score_thr 0, no min_bbox_size filter
    dict(nms=dict(type="nms", iou_threshold=0.5), max_per_img=BIG),
    dict(FULL_CFG, nms_pre=-3, max_per_img=BIG),  # [:-3] of each level's valid candidates
    dict(FULL_CFG, nms_pre=0),  # mmdet keeps nothing
    dict(FULL_CFG, nms_pre=50, score_thr=0.3, min_bbox_size=24.0, max_per_img=7),
    dict(FULL_CFG, nms=dict(type="nms", iou_threshold=0.5, split_thr=10)),
], ids=["full", "nms_keys_only", "nms_pre_negative", "nms_pre_zero", "thresholds", "split_thr"])
def test_patch_equals_mmdet_on_the_static_path(test_cfg):
    head = bare_head(test_cfg)
    cls, reg, ctr = head_outputs(head, batch=2)
    ref, got = both(head, cls, reg, ctr, batch_img_metas=metas(2))
    assert_same_results(ref, got)
    if test_cfg.get("nms_pre", -1) != 0:
        assert all(len(r) > 5 for r in ref), "the case needs detections"


def test_patch_keeps_mmdets_nms_pre_default_quirk():
    """Without ``nms_pre`` mmdet keeps ``scores[:-1]`` of each level: one box fewer a level."""
    cfg = dict(nms=dict(type="nms", iou_threshold=1.0), max_per_img=BIG, score_thr=0.5)
    head = bare_head(cfg)
    args = (*head_outputs(head), )
    ref, got = both(head, *args, batch_img_metas=metas())
    cls = args[0]
    above = sum(int((c.sigmoid() > 0.5).sum()) for c in cls)
    assert len(ref[0]) == len(got[0]) == above - len(cls)  # iou 1.0: NMS keeps all
    assert_same_results(ref, got)


@pytest.mark.parametrize("test_cfg", [
    dict(score_thr=1.0),  # nothing passes: mmdet never reads nms / max_per_img
    dict(FULL_CFG, score_thr=1.0),
    dict(FULL_CFG, nms=None),  # mmdet sorts without NMS
    dict(FULL_CFG, nms=dict(type="soft_nms", iou_threshold=0.5, min_score=0.05), max_per_img=BIG),
    dict(FULL_CFG, nms=dict(type="nms", iou_threshold=0.5, class_agnostic=True), max_per_img=BIG),
    dict(FULL_CFG, nms=dict(type="nms", iou_threshold=0.5, score_threshold=0.2), max_per_img=BIG),
], ids=["score_thr_only", "nothing_above", "nms_none", "soft_nms", "class_agnostic",
        "nms_score_threshold"])
def test_patch_equals_mmdet_off_the_static_path(test_cfg):
    head = bare_head(test_cfg)
    ref, got = both(head, *head_outputs(head), batch_img_metas=metas())
    assert_same_results(ref, got)
    assert (len(ref[0]) == 0) == (test_cfg.get("score_thr") == 1.0)


def test_patch_takes_cfg_argument_over_test_cfg():
    head = bare_head(dict(score_thr=1.0))  # the head's own cfg alone would give nothing
    ref, got = both(head, *head_outputs(head), batch_img_metas=metas(),
                    cfg=__import__("mmengine").config.ConfigDict(FULL_CFG))
    assert len(ref[0]) > 5
    assert_same_results(ref, got)


def test_patch_rescale_measures_min_bbox_size_on_the_original_image():
    """mmdet rescales first, then drops boxes not larger than ``min_bbox_size``."""
    cfg = dict(FULL_CFG, min_bbox_size=12.0, max_per_img=BIG)
    head = bare_head(cfg)
    outs = head_outputs(head, batch=2)
    image_metas = metas(2, scale_factor=(0.5, 0.25))
    image_metas[1]["scale_factor"] = (2.0, 1.5)  # per image
    ref, got = both(head, *outs, batch_img_metas=image_metas, rescale=True)
    canvas, _ = both(head, *outs, batch_img_metas=image_metas, rescale=False)
    assert len(ref[0]) != len(canvas[0]), "the case must depend on where boxes are measured"
    assert_same_results(ref, got, atol=1e-4)  # boxes x4: float rounding scales too


@pytest.mark.parametrize("kwargs", [dict(score_factors=None), dict(with_nms=False)],
                         ids=["no_score_factors", "without_nms"])
def test_patch_hands_other_calls_to_mmdet(kwargs):
    head = bare_head()
    cls, reg, ctr = head_outputs(head)
    call = {"score_factors": ctr, "batch_img_metas": metas(), **kwargs}
    ref, got = both(head, cls, reg, **call)
    assert len(ref[0]) > 5
    assert_same_results(ref, got)


def test_patch_with_images_of_different_shapes():
    head = bare_head()
    image_metas = metas(2)
    image_metas[1]["img_shape"] = (200, 256, 3)
    ref, got = both(head, *head_outputs(head, batch=2), batch_img_metas=image_metas)
    assert_same_results(ref, got)


@pytest.mark.parametrize("batch,empty", [(0, False), (1, True), (2, True)],
                         ids=["no_images", "empty_feature_maps", "empty_feature_maps_batch"])
def test_patch_with_empty_inputs(batch, empty):
    head = bare_head()
    ref, got = both(head, *head_outputs(head, batch=batch, empty=empty),
                    batch_img_metas=metas(batch))
    assert_same_results(ref, got)
    assert all(len(r) == 0 for r in ref)


def test_patch_has_mmdets_signature():
    import inspect

    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    from mmdet.models.dense_heads.fcos_head import FCOSHead

    with StaticPostprocessPatch(torch.device("cpu")):
        patched = inspect.signature(FCOSHead.predict_by_feat)
    upstream = inspect.signature(BaseDenseHead.predict_by_feat)
    assert [(p.name, p.kind, p.default) for p in patched.parameters.values()] == \
        [(p.name, p.kind, p.default) for p in upstream.parameters.values()]


def test_patch_refuses_a_locally_edited_mmdet(tmp_path, monkeypatch):
    """mmdet's ``_predict_by_feat_single``, which the static path re-implements (``reproduces``),
    edited by one line: the patch refuses, naming it, and ``FCOSHead`` keeps mmdet's method."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead

    from detcore.testing.patch_checks import edited_copy

    edited = edited_copy(BaseDenseHead._predict_by_feat_single, "cfg.get('nms_pre', -1)",
                         "cfg.get('nms_pre', 1000)", tmp_path)
    monkeypatch.setattr(BaseDenseHead, "_predict_by_feat_single", edited)
    with pytest.raises(MissingDependency, match="BaseDenseHead._predict_by_feat_single differs"):
        StaticPostprocessPatch(torch.device("cpu")).apply()
    assert not head_owns_predict()
