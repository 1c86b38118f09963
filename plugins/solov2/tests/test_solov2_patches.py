"""The vendored patches: applied and reverted exactly, and equal to mmdet 3.3's code on CPU."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import solov2_util as U


@pytest.fixture(scope="module")
def cfg():
    return U.config()


def _losses(model, imgs, tgts):
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(imgs, tgts)
    sum(losses.values()).backward()
    head = model.model.mask_head
    # mmdet leaves the kernel branch without a gradient (None) when nothing is positive;
    # the patched graph is always the same (zero gradient), which DDP needs anyway
    grads = {name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
             for name, p in (("grad_cls", head.conv_cls.weight),
                             ("grad_kernel", head.conv_kernel.weight))}
    return {**{k: v.detach() for k, v in losses.items()}, **grads}


def test_apply_returns_patches_and_revert_restores_upstream(cfg):
    from mmdet.models.dense_heads.solov2_head import SOLOV2Head

    from detcore.patching import Patch
    from detcore_solov2.patches import PATCHES, apply_all

    before = dict(vars(SOLOV2Head))
    applied = apply_all(cfg, torch.device("cpu"))
    try:
        assert [p.name for p in applied] == ["static_targets", "fixed_matrix_nms"]
        assert [type(p) for p in applied] == list(PATCHES)
        for p in applied:
            assert isinstance(p, Patch) and p.applied
            doc = type(p).__doc__
            assert "NPU" in doc and "Tolerance" in doc and 0 < p.tolerance <= 1e-5
        assert vars(SOLOV2Head)["loss_by_feat"] is not before["loss_by_feat"]
        assert vars(SOLOV2Head)["_predict_by_feat_single"] is not before["_predict_by_feat_single"]
    finally:
        for p in reversed(applied):
            p.revert()
    assert dict(vars(SOLOV2Head)) == before
    assert not any(p.applied for p in applied)


def test_other_plugins_models_never_reach_these_hooks(cfg):
    """The hooks have no ``spec`` guard: core's owner-only dispatch keeps other models away."""
    from detcore.plugins import Registry
    from detcore.spec import ModelSpec

    other = ModelSpec(name="other", plugin="other")
    hooks = Registry().hooks_for(other)
    assert hooks.build_model(spec=other, config=cfg, num_classes=3) is None
    assert hooks.apply_npu_patches(spec=other, config=cfg, device=torch.device("cpu")) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_static_targets_losses_and_grads_equal_mmdet(cfg, seed):
    from detcore_solov2.patches import StaticTargetsPatch

    model = U.build(cfg, seed=seed)
    imgs = U.images(3, seed=seed)
    tgts = U.targets(3, seed=seed, max_objects=6, empty_image=seed == 1)
    ref = _losses(model, imgs, tgts)
    with StaticTargetsPatch(max_instances=8, max_positives=128):
        got = _losses(model, imgs, tgts)
    tol = StaticTargetsPatch.tolerance
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.allclose(got[key], ref[key], atol=tol, rtol=tol), (key, got[key], ref[key])


def test_static_targets_with_no_instances_at_all(cfg):
    from detcore_solov2.patches import StaticTargetsPatch

    model = U.build(cfg)
    tgts = U.targets(2, seed=3, max_objects=0)
    ref = _losses(model, U.images(2), tgts)
    with StaticTargetsPatch(max_instances=4, max_positives=16):
        got = _losses(model, U.images(2), tgts)
    assert float(ref["loss_mask"]) == float(got["loss_mask"]) == 0.0
    assert torch.allclose(got["loss_cls"], ref["loss_cls"], rtol=1e-5, atol=1e-6)


def test_assignment_matches_mmdet_targets_exactly(cfg):
    """Label grids, positive cells, num_pos and the (cell, mask) pairs equal mmdet's."""
    from mmengine.structures import InstanceData

    from detcore_solov2 import static
    from mmdet.structures.mask import BitmapMasks

    model = U.build(cfg)
    head = model.model.mask_head
    h, w = U.SIZE
    featmap = (h // 4, w // 4)
    for seed in range(4):
        (t,) = U.targets(1, seed=10 + seed, max_objects=8)
        gt = InstanceData(bboxes=t["boxes"], labels=t["labels"],
                          masks=BitmapMasks(t["masks"].numpy(), h, w))
        ref_targets, ref_labels, ref_pos, ref_index = head._get_targets_single(gt, featmap_sizes=featmap)
        count, ch, cw, small = static.gt_mask_stats(t["masks"].numpy(), 4, featmap, 10)
        n = len(t["labels"])
        boxes = torch.zeros(1, 10, 4)
        boxes[0, :n] = t["boxes"]
        labels = torch.zeros(1, 10, dtype=torch.int64)
        labels[0, :n] = t["labels"]
        valid = (torch.arange(10) < n)[None] & (count[None] > 0)
        got = static.assign_targets(boxes, labels, valid, ch[None], cw[None],
                                    num_classes=head.num_classes, num_grids=head.num_grids,
                                    scale_ranges=head.scale_ranges, pos_scale=head.pos_scale,
                                    upsampled_size=(featmap[0] * 4, featmap[1] * 4),
                                    max_positives=256)
        assert int(got["dropped"]) == 0
        offsets = np.cumsum([0] + [g * g for g in head.num_grids])
        slots = got["slot_valid"][0]
        points = got["slot_point"][0][slots].tolist()
        owners = got["slot_gt"][0][slots].tolist()
        expected_points, expected_masks = [], []
        for lvl, (lab, pos, idx, tgt) in enumerate(zip(ref_labels, ref_pos, ref_index, ref_targets)):
            assert torch.equal(got["labels"][lvl][0].long(), lab.flatten()), (seed, lvl)
            assert torch.equal(got["pos"][lvl][0], pos), (seed, lvl)
            expected_points += [int(offsets[lvl] + i) for i in idx]
            expected_masks += list(tgt)
        assert points == expected_points, seed
        assert int(got["num_pos"]) == sum(int(p.sum()) for p in ref_pos)
        for owner, mask in zip(owners, expected_masks):
            assert torch.equal(small[owner], mask), seed


def test_mask_stats_batched_rescale_equals_per_instance():
    """Centres equal mmdet's center_of_mass; >128 instances are resized in chunks identically."""
    import mmcv

    from detcore_solov2 import static
    from mmdet.models.utils.misc import center_of_mass

    rng = np.random.default_rng(0)
    masks = (rng.random((130, 61, 83)) > 0.6).astype(np.uint8)
    masks[5] = 0
    count, ch, cw, small = static.gt_mask_stats(masks, 4, (16, 21), 140)
    for i in range(130):
        ref_h, ref_w = center_of_mass(torch.from_numpy(masks[i]).bool())
        assert float(ch[i]) == float(ref_h) and float(cw[i]) == float(ref_w), i
        ref = mmcv.imrescale(masks[i], 1 / 4)
        assert np.array_equal(small[i, :ref.shape[0], :ref.shape[1]].numpy(), ref), i
    assert int(count[5]) == 0 and count[130:].sum() == 0


def test_static_targets_warn_on_truncation(cfg):
    from detcore_solov2.patches import StaticTargetsPatch

    model = U.build(cfg)
    tgts = U.targets(2, seed=4, max_objects=6)
    with StaticTargetsPatch(max_instances=2, max_positives=4), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        losses = model.train()(U.images(2), tgts)
    assert all(torch.isfinite(v) for v in losses.values())
    messages = " ".join(str(x.message) for x in w)
    assert "max_instances=2" in messages and "max_positives=4" in messages


def _candidates(model, imgs) -> list[int]:
    """How many (point, class) scores pass score_thr after point NMS, per image."""
    from detcore_solov2 import static

    head = model.model.mask_head
    with torch.no_grad():
        kernels, cls, _ = head(model.model.extract_feat(model.normalise(imgs)))
        _, scores = static.flatten_levels(kernels, [static.point_nms(c.sigmoid()) for c in cls])
    return (scores > head.test_cfg.score_thr).sum((1, 2)).tolist()


def test_fixed_matrix_nms_predictions_equal_mmdet(cfg):
    from detcore_solov2.patches import FixedMatrixNmsPatch

    model = U.spread_scores(U.build(cfg), bias=-2.8).eval()
    imgs = U.images(2, seed=5)
    # the documented condition: at most nms_pre candidates (here 160-170 of nms_pre=200)
    assert max(_candidates(model, imgs)) <= model.model.mask_head.test_cfg.nms_pre
    with torch.no_grad():
        ref = model(imgs)
        with FixedMatrixNmsPatch():
            got = model(imgs)
    tol = FixedMatrixNmsPatch.tolerance
    assert sum(len(r["scores"]) for r in ref) > 4, "the check needs detections"
    for r, g in zip(ref, got):
        assert len(r["scores"]) == len(g["scores"])
        assert torch.allclose(g["scores"], r["scores"], atol=tol, rtol=tol)
        assert torch.equal(g["labels"], r["labels"])
        assert torch.equal(g["masks"], r["masks"])
        assert torch.equal(g["boxes"], r["boxes"])


def test_static_matrix_nms_equals_mmdet_mask_matrix_nms():
    from detcore_solov2 import static
    from mmdet.models.layers import mask_matrix_nms

    g = torch.Generator().manual_seed(0)
    for kernel in ("gaussian", "linear"):
        n, pad = 30, 10
        masks = torch.rand(n, 12, 12, generator=g) > 0.5
        labels = torch.randint(0, 3, (n,), generator=g)
        scores = torch.rand(n, generator=g).sort(descending=True).values
        area = masks.sum((1, 2)).float()
        ref_scores, ref_labels, _, ref_keep = mask_matrix_nms(masks, labels, scores, mask_area=area,
                                                              kernel=kernel, sigma=2.0)
        # fixed size: the valid entries first, then padding that must change nothing
        fm = torch.cat([masks.flatten(1).float(), torch.rand(pad, 144, generator=g).round()])[None]
        lab = torch.cat([labels, torch.zeros(pad, dtype=torch.int64)])[None]
        sc = torch.cat([scores, torch.zeros(pad)])[None]
        ar = torch.cat([area, torch.zeros(pad)])[None]
        valid = (torch.arange(n + pad) < n)[None]
        decayed = static.matrix_nms_static(fm, lab, sc, ar, valid, kernel, 2.0)[0, :n]
        order = decayed.sort(descending=True).indices
        assert torch.allclose(decayed[order], ref_scores, atol=1e-6, rtol=1e-6), kernel
        assert torch.equal(order, ref_keep), kernel


def test_patched_model_under_autocast(cfg):
    """Mask areas and intersections stay float32 under autocast (H x W exceeds fp16's range)."""
    model = U.spread_scores(U.build(cfg), bias=-2.8)
    imgs, tgts = U.images(2, seed=5), U.targets(2, seed=6)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model.train()(imgs, tgts)
            with torch.no_grad():
                outs = model.eval()(imgs)
                dets, _, masks = model.export_forward(imgs)
        return losses, outs, dets, masks

    losses, outs, dets, masks = U.patched(cfg, run)
    assert all(torch.isfinite(v) for v in losses.values())
    assert sum(len(o["scores"]) for o in outs) > 0
    assert dets.dtype == torch.float32 and torch.isfinite(dets).all() and torch.isfinite(masks).all()


def test_fixed_matrix_nms_empty_result_matches_mmdet(cfg):
    from detcore_solov2.patches import FixedMatrixNmsPatch

    model = U.build(cfg).eval()  # mmdet's prior: no score passes score_thr
    with torch.no_grad():
        ref = model(U.images(1))[0]
        with FixedMatrixNmsPatch():
            got = model(U.images(1))[0]
    assert len(ref["scores"]) == len(got["scores"]) == 0
    assert ref["masks"].shape == got["masks"].shape == (0, *U.SIZE)


# -- the patches against mmdet's own SOLOV2Head methods on its unit tests' inputs -----------
# mmdet's tests/test_models/test_dense_heads/test_solov2_head.py builds a bare SOLOV2Head
# (num_classes=4, in_channels=1, a 128 -> 256 channel mask feature head) on a 256 x 256 image
# and checks empty and one-instance ground truth (loss) and an empty prediction with a
# test_cfg of only score_thr and mask_thr. Each case here runs mmdet's method and the patched
# one on the same inputs and compares the whole result: type, keys, dtypes, shapes, values.
HEAD_SIZE = 256
FULL_TEST_CFG = dict(nms_pre=500, score_thr=0.1, mask_thr=0.5, filter_thr=0.05, kernel="gaussian",
                     sigma=2.0, max_per_img=100)


def bare_head(dynamic_conv_size=1, test_cfg=None):
    from mmdet.models.dense_heads import SOLOV2Head
    from mmengine.config import ConfigDict

    torch.manual_seed(0)
    feature_head = ConfigDict(feat_channels=128, start_level=0, end_level=3, out_channels=256,
                              mask_stride=4, norm_cfg=dict(type="GN", num_groups=32,
                                                           requires_grad=True))
    return SOLOV2Head(num_classes=4, in_channels=1, mask_feature_head=feature_head,
                      dynamic_conv_size=dynamic_conv_size,
                      test_cfg=ConfigDict(FULL_TEST_CFG if test_cfg is None else test_cfg))


def image_meta(size=HEAD_SIZE):
    return {"img_shape": (size, size, 3), "ori_shape": (size, size, 3), "scale_factor": 1,
            "batch_input_shape": (size, size, 3)}


def rand_bitmap_masks(boxes, size=HEAD_SIZE, seed=0):
    """mmdet's test masks: random pixels (> 0.3) inside each box, float64 BitmapMasks."""
    from mmdet.structures.mask import BitmapMasks

    rng = np.random.RandomState(seed)
    masks = np.zeros((len(boxes), size, size))
    for i, box in enumerate(np.asarray(boxes, dtype=np.int32).reshape(-1, 4)):
        masks[i, box[1]:box[3], box[0]:box[2]] = rng.rand(box[3] - box[1], box[2] - box[0]) > 0.3
    return BitmapMasks(masks, height=size, width=size)


def head_inputs(head, seed=0, candidates=150, low=0.11, high=0.9):
    """One image's ``_predict_by_feat_single`` inputs: ``candidates`` (point, class) scores in
    ``(low, high)``, all others 0; random kernels and mask features (64 x 64, stride 4)."""
    gen = torch.Generator().manual_seed(seed)
    points = sum(g * g for g in head.num_grids)
    scores = torch.zeros(points * head.num_classes)
    picked = torch.randperm(points * head.num_classes, generator=gen)[:candidates]
    scores[picked] = low + (high - low) * torch.rand(candidates, generator=gen)
    kernels = torch.randn(points, head.kernel_out_channels, generator=gen) * 0.5
    mask_feats = torch.randn(1, head.kernel_out_channels // head.dynamic_conv_size ** 2,
                             HEAD_SIZE // 4, HEAD_SIZE // 4, generator=gen)
    return kernels, scores.reshape(points, head.num_classes), mask_feats


def assert_same_instances(ref, got, tol=1e-5):
    from mmengine.structures import InstanceData

    assert isinstance(ref, InstanceData) and isinstance(got, InstanceData)
    assert sorted(got.keys()) == sorted(ref.keys()) == ["bboxes", "labels", "masks", "scores"]
    for key in ref.keys():
        assert got[key].dtype == ref[key].dtype and got[key].shape == ref[key].shape, key
    assert torch.allclose(got.scores, ref.scores, atol=tol, rtol=tol)
    for key in ("labels", "masks", "bboxes"):
        assert torch.equal(got[key], ref[key]), key


def predict_both(head, *args, **kwargs):
    from detcore_solov2.patches import FixedMatrixNmsPatch

    with torch.no_grad():
        ref = head._predict_by_feat_single(*args, **kwargs)
        with FixedMatrixNmsPatch():
            got = head._predict_by_feat_single(*args, **kwargs)
    return ref, got


from detcore_solov2 import static  # noqa: E402  (used by the helpers above)


def test_fixed_matrix_nms_on_mmdets_empty_result_case():
    """mmdet's test verbatim: no points at all and a test_cfg of only score_thr, mask_thr."""
    from mmengine.config import ConfigDict

    ref, got = predict_both(bare_head(), kernel_preds=torch.empty(0, 128),
                            cls_scores=torch.empty(0, 80), mask_feats=torch.empty(0, 16, 16),
                            img_meta=image_meta(), cfg=ConfigDict(score_thr=0.1, mask_thr=0.5))
    assert len(ref) == len(got) == 0
    assert_same_instances(ref, got)


@pytest.mark.parametrize("cfg", [
    dict(score_thr=0.1, mask_thr=0.5),  # the keys mmdet reads before a score passes
    dict(FULL_TEST_CFG, score_thr=1.0),  # nothing passes score_thr
    dict(FULL_TEST_CFG, filter_thr=0.99),  # everything decays below filter_thr
    dict(FULL_TEST_CFG, kernel="unknown", score_thr=1.0),  # mmdet never reaches the kernel
], ids=["score_and_mask_thr_only", "nothing_above", "all_filtered", "unknown_kernel_unused"])
def test_fixed_matrix_nms_empty_results_equal_mmdets(cfg):
    """Each of mmdet's empty results, float labels and masks included."""
    from mmengine.config import ConfigDict

    head = bare_head()
    high = 0.9 if cfg.get("filter_thr", 0) > 0.9 else 0.09  # else nothing passes score_thr
    kernels, scores, mask_feats = head_inputs(head, low=0.01, high=high)
    ref, got = predict_both(head, kernels, scores, mask_feats, image_meta(), cfg=ConfigDict(cfg))
    assert len(ref) == len(got) == 0
    assert ref.labels.dtype == torch.float32 and ref.masks.dtype == torch.float32
    assert_same_instances(ref, got)


def test_fixed_matrix_nms_masks_too_small_is_empty_like_mmdet():
    """Scores pass but every mask is empty (kernels 0: sigmoid 0.5, not above mask_thr)."""
    head = bare_head()
    kernels, scores, mask_feats = head_inputs(head)
    ref, got = predict_both(head, torch.zeros_like(kernels), scores, mask_feats, image_meta())
    assert len(ref) == len(got) == 0
    assert_same_instances(ref, got)


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_fixed_matrix_nms_detections_equal_mmdets(kernel):
    head = bare_head()
    kernels, scores, mask_feats = head_inputs(head, seed=1)
    assert int((scores > 0.1).sum()) <= FULL_TEST_CFG["nms_pre"]  # the documented condition
    from mmengine.config import ConfigDict

    ref, got = predict_both(head, kernels, scores, mask_feats, image_meta(),
                            cfg=ConfigDict(FULL_TEST_CFG, kernel=kernel))
    assert len(ref) > 3, "the case needs detections"
    assert_same_instances(ref, got)


def test_fixed_matrix_nms_hands_dynamic_conv_size_2_to_mmdet():
    head = bare_head(dynamic_conv_size=2)
    kernels, scores, mask_feats = head_inputs(head)
    ref, got = predict_both(head, kernels, scores, mask_feats, image_meta())
    assert len(ref) > 0
    assert_same_instances(ref, got)


def _loss_both(head, mask_outs, gt_instances, patch_kwargs=None, **kwargs):
    from detcore_solov2.patches import StaticTargetsPatch

    ref = head.loss_by_feat(*mask_outs, batch_gt_instances=gt_instances,
                            batch_img_metas=[image_meta()] * len(gt_instances), **kwargs)
    with StaticTargetsPatch(**(patch_kwargs or {"max_instances": 8, "max_positives": 256})):
        got = head.loss_by_feat(*mask_outs, batch_gt_instances=gt_instances,
                                batch_img_metas=[image_meta()] * len(gt_instances), **kwargs)
    assert type(got) is type(ref) is dict and got.keys() == ref.keys() == {"loss_mask", "loss_cls"}
    for key in ref:
        assert got[key].shape == ref[key].shape == () and got[key].dtype == ref[key].dtype, key
        assert torch.allclose(got[key], ref[key], atol=1e-5, rtol=1e-5), (key, got[key], ref[key])
    return ref


def _mask_outs(head, batch=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = tuple(torch.rand(batch, 1, HEAD_SIZE // 2 ** (i + 2), HEAD_SIZE // 2 ** (i + 2),
                             generator=gen) for i in range(len(head.strides)))
    return head.forward(feats)


def _gt(boxes, labels, masks=None):
    from mmengine.structures import InstanceData

    gt = InstanceData()
    gt.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    gt.labels = torch.tensor(labels, dtype=torch.int64)
    gt.masks = rand_bitmap_masks(boxes) if masks is None else masks
    return gt


def test_static_targets_on_mmdets_loss_cases():
    """mmdet's test: empty ground truth (mask loss 0, class loss > 0), then one instance."""
    head = bare_head()
    outs = _mask_outs(head)
    empty = _loss_both(head, outs, [_gt([], [])])
    assert float(empty["loss_mask"]) == 0 and float(empty["loss_cls"]) > 0
    one = _loss_both(head, outs, [_gt([[23.6667, 23.8757, 238.6326, 151.8874]], [2])])
    assert float(one["loss_mask"]) > 0 and float(one["loss_cls"]) > 0


def test_static_targets_with_instances_no_level_takes():
    """An empty mask (mmdet skips it), a box below every scale range, kwargs passed through."""
    head = bare_head()
    outs = _mask_outs(head, batch=2, seed=1)
    boxes = [[10, 10, 12, 12], [40, 40, 120, 100], [30, 150, 200, 250]]
    masks = rand_bitmap_masks(boxes, seed=1)
    masks.masks[1] = 0  # a box whose mask is empty
    losses = _loss_both(head, outs, [_gt(boxes, [0, 1, 3], masks), _gt([[5, 5, 7, 6]], [2])],
                        positive_infos=None)
    assert float(losses["loss_mask"]) > 0


def test_static_targets_with_polygon_masks():
    """mmdet's head takes PolygonMasks too (``to_tensor``); so does the patch."""
    from mmdet.structures.mask import PolygonMasks

    head = bare_head()
    polygons = [[np.array([30, 30, 200, 40, 150, 180, 40, 160], dtype=np.float64)],
                [np.array([100, 120, 240, 130, 230, 250, 110, 240], dtype=np.float64)]]
    gt = _gt([[30, 30, 200, 180], [100, 120, 240, 250]], [1, 3],
             PolygonMasks(polygons, HEAD_SIZE, HEAD_SIZE))
    losses = _loss_both(head, _mask_outs(head, seed=2), [gt])
    assert float(losses["loss_mask"]) > 0


@pytest.mark.parametrize("method", ["loss_by_feat", "_predict_by_feat_single"])
def test_patches_have_mmdets_signatures(cfg, method):
    import inspect

    from mmdet.models.dense_heads.solov2_head import SOLOV2Head

    def params(fn):  # the first parameter is the head (``self``), whatever its name
        return [(p.name, p.kind, p.default) for p in
                list(inspect.signature(fn).parameters.values())[1:]]

    upstream = params(getattr(SOLOV2Head, method))
    patched = U.patched(cfg, lambda: params(getattr(SOLOV2Head, method)))
    assert patched == upstream


def test_patch_refuses_a_locally_edited_mmdet(cfg, tmp_path, monkeypatch):
    """mmdet's ``SOLOV2Head.loss_by_feat`` edited by one line (a temporary copy of its source
    in its place): ``static_targets`` refuses, naming it, and replaces nothing."""
    from mmdet.models.dense_heads.solov2_head import SOLOV2Head

    from detcore.errors import MissingDependency
    from detcore.testing.patch_checks import edited_copy
    from detcore_solov2.patches import apply_all

    edited = edited_copy(SOLOV2Head.loss_by_feat, "avg_factor=num_pos + 1", "avg_factor=num_pos",
                         tmp_path)
    monkeypatch.setattr(SOLOV2Head, "loss_by_feat", edited)
    before = dict(vars(SOLOV2Head))
    with pytest.raises(MissingDependency, match="SOLOV2Head.loss_by_feat differs from the upstream"):
        apply_all(cfg, torch.device("cpu"))
    assert dict(vars(SOLOV2Head)) == before
