"""Every registered variant builds from its config and runs (slow: D7 has 52M parameters)."""
from __future__ import annotations

import pytest
import torch
from effdet_helpers import images

from detcore.config import resolve_config
from detcore.plugins import Registry
from detcore_efficientdet.model import build
from detcore_efficientdet.variants import VARIANTS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_builds_and_runs(name):
    spec = Registry().get_model(name)
    _, cfg = resolve_config(spec, "tiny", [])
    _, coco = resolve_config(spec, "coco", [])
    assert coco["data"]["input_size"] == [VARIANTS[name].size] * 2
    model = build(name, cfg, 3).eval()
    assert model.config.name == VARIANTS[name].arch
    with torch.no_grad():
        dets, labels = model.export_forward(images(1))
        out = model(images(1))
    assert dets.shape == (1, 100, 5) and labels.shape == (1, 100) and len(out) == 1
    model.train()
    target = {"boxes": torch.tensor([[8.0, 8.0, 90.0, 70.0]]), "labels": torch.tensor([2])}
    loss = sum(model(images(2), [target, target]).values())  # BN needs > 1 value at P7 (1x1)
    assert torch.isfinite(loss)
