"""Helpers shared by detcore-solov2's tests (imported by the test modules, never collected)."""
from __future__ import annotations

import numpy as np
import torch

#: ``--set`` overrides for a tiny SOLOv2-light (seconds per step on a CPU).
TINY = ("data.input_size=[96,96]", "data.batch_size=2", "data.workers=0",
        "model.base_channels=16", "model.fpn_channels=64", "model.feat_channels=64",
        "model.mask_feat_channels=32", "model.mask_out_channels=32",
        "model.num_grids=[12,10,8,6,4]", "eval.batch_size=4", "train.log_interval=1")

SIZE = (96, 96)


def config(model: str = "solov2-light", *sets: str, tiny: bool = True) -> dict:
    from detcore.config import resolve_config
    from detcore.plugins import Registry

    spec = Registry().get_model(model)
    return resolve_config(spec, None, [*(TINY if tiny else ()), *sets])[1]


def build(cfg: dict, num_classes: int = 3, seed: int = 0):
    from detcore_solov2.model import build as build_model

    torch.manual_seed(seed)
    return build_model(cfg, num_classes)


def images(n: int = 2, size=SIZE, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _shape_mask(rng, h: int, w: int):
    """A random rectangle, ellipse or ring mask and its tight box."""
    mask = np.zeros((h, w), np.uint8)
    bh, bw = int(rng.integers(6, h * 3 // 4)), int(rng.integers(6, w * 3 // 4))
    y0, x0 = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    kind = rng.integers(0, 3)
    yy, xx = np.mgrid[0:bh, 0:bw]
    if kind == 0:
        sub = np.ones((bh, bw), np.uint8)
    else:
        r = ((yy - (bh - 1) / 2) / (bh / 2)) ** 2 + ((xx - (bw - 1) / 2) / (bw / 2)) ** 2
        sub = (r <= 1).astype(np.uint8) if kind == 1 else ((r <= 1) & (r >= 0.3)).astype(np.uint8)
    mask[y0:y0 + bh, x0:x0 + bw] = sub
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return mask, box


def targets(n_images: int = 2, size=SIZE, seed: int = 0, max_objects: int = 5,
            num_classes: int = 3, empty_image: bool = False) -> list[dict]:
    """Random instances (rectangles, ellipses, rings; overlaps allowed) in detcore's format."""
    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for i in range(n_images):
        empty = max_objects == 0 or (empty_image and i == n_images - 1)
        n = 0 if empty else int(rng.integers(1, max_objects + 1))
        masks, boxes = [], []
        for _ in range(n):
            m, b = _shape_mask(rng, h, w)
            masks.append(m)
            boxes.append(b)
        out.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.from_numpy(rng.integers(0, num_classes, n)).to(torch.int64),
            "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)),
        })
    return out


def spread_scores(model, bias: float = -1.5, seed: int = 0):
    """Give an untrained model class scores spread around ``sigmoid(bias)`` (some pass 0.1).

    With mmdet's prior (0.01) nothing passes ``score_thr`` and inference returns nothing.
    """
    g = torch.Generator().manual_seed(seed)
    head = model.model.mask_head
    with torch.no_grad():
        head.conv_cls.bias.fill_(bias)
        head.conv_cls.weight.copy_(torch.randn(head.conv_cls.weight.shape, generator=g) * 0.05)
        # spread the dynamic kernels too, so masks differ between points
        head.conv_kernel.weight.copy_(torch.randn(head.conv_kernel.weight.shape, generator=g) * 0.05)
    return model


def patched(cfg, fn):
    """Run ``fn()`` with this plugin's patches applied; always revert."""
    from detcore_solov2.patches import apply_all

    applied = apply_all(cfg, torch.device("cpu"))
    try:
        return fn()
    finally:
        for p in reversed(applied):
            p.revert()


def solo_layout(state: dict) -> dict:
    """mmdet 3.x SOLOv2 keys -> the reference port's (WXinlong/SOLO on mmdet 1.x) layout."""
    back = (("mask_head.cls_convs.", "bbox_head.cate_convs."),
            ("mask_head.kernel_convs.", "bbox_head.kernel_convs."),
            ("mask_head.conv_cls.", "bbox_head.solo_cate."),
            ("mask_head.conv_kernel.", "bbox_head.solo_kernel."),
            ("mask_head.mask_feature_head.conv_pred.", "mask_feat_head.conv_pred.0."),
            ("mask_head.mask_feature_head.", "mask_feat_head."))
    out = {}
    for key, value in state.items():
        for old, new in back:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out
