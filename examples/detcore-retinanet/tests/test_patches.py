"""Each vendored patch: equivalent to the upstream code within its tolerance, and reversible."""
import torch
import torchvision.models.detection.retinanet as upstream

from detcore.config import resolve_config
from detcore.plugins import Registry
from detcore_retinanet.model import build
from detcore_retinanet.patches import Float32FocalLoss


def losses(seed=0):
    spec = Registry().get_model("retinanet")
    _, config = resolve_config(spec, None, ["data.input_size=[128,128]"])
    torch.manual_seed(seed)
    model = build(3, config).train()
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    target = {"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0]]), "labels": torch.tensor([1])}
    return model(images, [target, target])


def test_float32_focal_loss_is_equivalent_and_reverts():
    original = upstream.sigmoid_focal_loss
    reference = losses()
    with Float32FocalLoss() as patch:
        assert upstream.sigmoid_focal_loss is not original
        patched = losses()
    assert upstream.sigmoid_focal_loss is original and not patch.applied
    for key, value in reference.items():
        assert torch.allclose(value, patched[key], atol=patch.tolerance), key
