"""torchvision's two-stage Faster R-CNN (MobileNetV3-Large FPN), wrapped twice.

:class:`NaiveFasterRCNN` is docs/writing-a-plugin.md section 4's wrapper applied as written,
which is right for RetinaNet and wrong here in two ways the conformance suite must catch:
torchvision's two-stage detectors reserve label 0 for background (so detcore's class 0 is
trained as background and never predicted), and their ``GeneralizedRCNNTransform`` resizes the
input to ``min_size=800`` (a 128-pixel canvas runs at 800). :class:`FasterRCNN` is the guide's
two-line fix: labels + 1 going in and - 1 coming out, ``min_size``/``max_size`` set to the canvas.
"""
import torch
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

from detcore.model import Detector
from detcore.ops import pad_detections


class NaiveFasterRCNN(Detector):
    """Section 4's wrapper, verbatim."""

    def __init__(self, net):
        super().__init__()
        self.net = net                       # torchvision normalises inside its transform

    def forward(self, images, targets=None):
        if self.training:
            targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            return self.net(list(images), targets)
        return self.net(list(images))

    def export_forward(self, images):
        outs = self.net(list(images))
        dets, labels = zip(*(pad_detections(o["boxes"], o["scores"], o["labels"], 100) for o in outs))
        return torch.stack(dets), torch.stack(labels)


class FasterRCNN(Detector):
    """The same with torchvision's background class shifted out: its label 0 is background,
    so detcore's label k is its k + 1 (built with ``num_classes + 1`` outputs)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images, targets=None):
        if self.training:
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
            return self.net(list(images), targets)
        return [{**o, "labels": o["labels"] - 1} for o in self.net(list(images))]

    def export_forward(self, images):
        outs = self.net(list(images))
        dets, labels = zip(*(pad_detections(o["boxes"], o["scores"], o["labels"] - 1,
                                            self.max_detections) for o in outs))
        return torch.stack(dets), torch.stack(labels)


def build(num_classes: int, config: dict, naive: bool = False) -> Detector:
    """Nothing downloaded (``weights=None, weights_backbone=None``)."""
    if naive:
        mcfg = config["model"]
        return NaiveFasterRCNN(fasterrcnn_mobilenet_v3_large_fpn(
            weights=None, weights_backbone=None, num_classes=num_classes,
            min_size=int(mcfg["min_size"]), max_size=int(mcfg["max_size"])))
    h, w = config["data"]["input_size"]
    return FasterRCNN(fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes + 1,
        min_size=min(h, w), max_size=max(h, w)))
