"""Vendored patches: small, named, reversible changes to upstream code.

Each is a detcore.patching.Patch whose docstring names the limitation it works
around, whose `tolerance` is what its equivalence test allows and whose `replaces`
names what it replaces, with a fingerprint of that upstream source.
"""
from detcore.patching import Patch


class Float32FocalLoss(Patch):
    """Compute RetinaNet's sigmoid focal loss in float32, whatever the autocast dtype.

    Limitation: under fp16 mixed precision the focal term ``(1 - p) ** gamma * log(p)``
    underflows to zero for confident predictions on devices whose fp16 elementwise
    kernels do not upcast, so easy examples stop contributing gradient. Upcasting the
    two inputs makes the loss exact; in float32 it changes nothing (tolerance 1e-6).
    """

    name = "float32-focal-loss"
    tolerance = 1e-6
    #: what targets() sets, with the fingerprint of the torchvision source it replaces
    #: (detcore.patching.fingerprint; the conformance suite says when it goes stale)
    replaces = {"torchvision.models.detection.retinanet:sigmoid_focal_loss": "ffc3e6533bba7893"}

    def targets(self):
        from torchvision.ops import sigmoid_focal_loss

        def float32_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
            return sigmoid_focal_loss(inputs.float(), targets.float(), alpha, gamma, reduction)

        return [("torchvision.models.detection.retinanet", "sigmoid_focal_loss", float32_focal_loss)]


PATCHES = [Float32FocalLoss]
