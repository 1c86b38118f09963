"""Helpers shared by detcore-efficientdet's tests (a uniquely named module, not conftest,
so that several plugins' test folders can run in one pytest session)."""
from __future__ import annotations

import torch

SIZE = (128, 128)
NUM_CLASSES = 3


def calibrate_bn(model, images):
    """Set every BN's running stats from one batch, so an untrained model gives spread scores.

    With freshly initialised running stats (mean 0, var 1) EfficientDet's class scores
    all sit at the 0.01 prior and detections are ordered by rounding noise.
    """
    was_training = model.training
    for mod in model.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average: one batch -> its statistics
    model.train()
    with torch.no_grad():
        model.raw_outputs(images)
    model.train(was_training)
    return model


def make_model(seed: int = 0, size=SIZE, num_classes: int = NUM_CLASSES):
    """An untrained d0 whose detections have spread, distinct scores (~0.05..0.5).

    BN statistics from one batch of 8 noise images, class-logit weights x3: without
    this every score is ~0.01 (or, with too small a batch, saturated at 1.0) and the
    order of detections is rounding noise, which makes comparisons meaningless.
    """
    from detcore_efficientdet.model import EfficientDetDetector

    torch.manual_seed(seed)
    model = EfficientDetDetector("tf_efficientdet_d0", num_classes, size)
    calibrate_bn(model, images(8, size, seed=seed))
    with torch.no_grad():
        model.class_net.predict.conv_pw.weight.mul_(3.0)
    return model.eval()


def images(n: int = 2, size=SIZE, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=g)


def targets(n: int = 2) -> list[dict]:
    base = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.tensor([[5.0, 5.0, 100.0, 50.0], [60.0, 60.0, 120.0, 120.0]]),
             "labels": torch.tensor([0, 2])},
            {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}]
    return [base[i % len(base)] for i in range(n)]


def stable_slots(ref_dets, ref_labels, got_dets, got_labels, min_score: float = 0.0,
                 gap: float = 1e-4) -> dict:
    """Compare two score-sorted detection lists slot by slot where the order is stable.

    ``*_dets``: B x K x 5 (x1, y1, x2, y2, score), ``*_labels``: B x K (-1 empty), both
    sorted by score within an image (the fixed-size NMS's ``topk`` order). A slot is
    compared when ``ref`` has a detection there scoring above ``min_score`` whose score is
    more than ``gap`` away from both neighbours' (rounding noise cannot swap it with them).
    Returns ``compared`` (slot count), ``max_abs_diff`` (dets, over compared slots) and
    ``label_mismatches``. A graph that computes other boxes, scores or labels, or drops or
    adds a detection (shifting the slots after it), shows up in the last two.
    """
    import numpy as np

    rd, rl = np.asarray(ref_dets, np.float64), np.asarray(ref_labels)
    gd, gl = np.asarray(got_dets, np.float64), np.asarray(got_labels)
    if rd.shape != gd.shape or rl.shape != gl.shape:
        raise ValueError(f"shapes differ: {rd.shape}/{rl.shape} vs {gd.shape}/{gl.shape}")
    scores = rd[..., 4]
    prev = np.abs(np.diff(scores, axis=1, prepend=np.inf))
    nxt = np.abs(np.diff(scores, axis=1, append=-np.inf))
    mask = (rl >= 0) & (scores > min_score) & (prev > gap) & (nxt > gap)
    compared = int(mask.sum())
    return {"compared": compared,
            "max_abs_diff": float(np.abs(rd - gd)[mask].max()) if compared else 0.0,
            "label_mismatches": int((rl != gl)[mask].sum())}


#: Momentum SGD as the ``coco`` config builds it, for the fused-SGD patch tests.
SGD_CONFIG = {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 4e-5,
                            "scale_lr_by_world_size": True, "base_world_size": 1}}


def sgd_steps(model, data, patch=None, steps: int = 2):
    """A copy of ``model`` after ``steps`` SGD steps with the plugin's ``build_optimizer`` (under
    ``patch``, applied and reverted around it, if given): ``(trained copy, optimizer)``."""
    import copy

    from detcore_efficientdet import optim

    x, t = data
    net = copy.deepcopy(model).train()
    if patch is not None:
        patch.apply()
    try:
        opt = optim.build_optimizer(SGD_CONFIG, net, 1)
        for step in range(steps):
            torch.manual_seed(step)  # drop-path draws
            loss = sum(net(x, t).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        if patch is not None:
            patch.revert()
    return net, opt


def outputs(model, x, t):
    """Head outputs, losses and detections of ``model`` (eval-mode BN, fixed seed)."""
    from detcore_efficientdet.model import effdet_targets

    model.eval()
    with torch.no_grad():
        cls_out, box_out = model.raw_outputs(x)
        losses = model.losses(cls_out, box_out, *effdet_targets(t, model.max_targets, x.device))
        dets = model.detect(cls_out, box_out)
    return list(cls_out) + list(box_out), losses, dets


def max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))
