"""Helpers shared by detcore-fcos's tests (a uniquely named module: pytest collects tests/ and
plugins/ in one run, so no conftest.py or __init__.py here)."""
from __future__ import annotations

#: Small settings for unit tests: 128x128 canvas, a thin head.
SMALL = ("data.input_size=[128,128]", "data.batch_size=2", "data.workers=0", "model.width=64",
         "model.stacked_convs=1", "eval.batch_size=4")


def fcos_spec():
    from detcore.plugins import Registry

    registry = Registry()
    return registry, registry.get_model("fcos")


def fcos_config(*sets, name=None):
    from detcore.config import resolve_config

    _, spec = fcos_spec()
    return resolve_config(spec, name, list(sets))[1]


def build_fcos(*sets, num_classes=3, seed=0, name=None):
    import torch

    from detcore_fcos.model import build

    torch.manual_seed(seed)
    return build(fcos_config(*sets, name=name), num_classes)


def spread_scores(model, seed=0, std=1.5):
    """Give a fresh model's classifier spread-out scores, so post-processing has work to do.

    Freshly initialised, every class score sits at the 0.01 focal-loss prior, below the 0.05
    threshold: nothing would reach NMS.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    bias = model.model.bbox_head.conv_cls.bias
    with torch.no_grad():
        bias.copy_(torch.randn(bias.shape, generator=gen) * std)
    return model


def sorted_rows(boxes, scores, labels):
    """Detections as rows sorted by (score desc, label, box) for order-insensitive comparison."""
    import torch

    rows = torch.cat([boxes.float(), scores.float()[:, None], labels.float()[:, None]], 1)
    if len(rows) == 0:
        return rows
    keys = [rows[:, i] for i in (3, 2, 1, 0, 5)] + [-rows[:, 4]]
    order = torch.arange(len(rows))
    for key in keys:  # lexsort: last key is the primary one
        order = order[torch.sort(key[order], stable=True).indices]
    return rows[order]


def patch_test_model():
    """The model the patch tests compare on: small, 160x224, scores spread over the threshold."""
    return spread_scores(build_fcos(*SMALL, "data.input_size=[160,224]"), seed=3).eval()


def images(batch=2, h=160, w=224, seed=1):
    import torch

    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def detections(model, x):
    """The model's eval detections per image, as sorted rows (order-free comparison)."""
    import torch

    with torch.no_grad():
        return [sorted_rows(o["boxes"], o["scores"], o["labels"]) for o in model(x)]
