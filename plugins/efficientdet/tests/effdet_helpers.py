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
