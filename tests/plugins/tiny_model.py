"""torchvision FCOS wrapped as a :class:`detcore.model.Detector`."""
from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator

from detcore.model import Detector
from detcore.ops import pad_detections


class TinyBackbone(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.out_channels = width

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(stage(3, width), stage(width, width), stage(width, width))
        self.c4, self.c5 = stage(width, width), stage(width, width)

    def forward(self, x):
        p3 = self.stem(x)
        p4 = self.c4(p3)
        return OrderedDict([("p3", p3), ("p4", p4), ("p5", self.c5(p4))])


class TinyFCOS(Detector):
    atc_out_nodes = ("labels", "dets")  # as the FCOS reference converts: the .om lists labels first

    def __init__(self, num_classes: int, input_size, width: int = 16, nan_at_step: int = 0):
        super().__init__()
        self.nan_at_step, self.calls = nan_at_step, 0  # test hook: a real non-finite loss
        side = min(input_size)
        anchors = AnchorGenerator(sizes=((8,), (16,), (32,)), aspect_ratios=((1.0,),) * 3)
        self.net = FCOS(TinyBackbone(width), num_classes=num_classes, min_size=side,
                        max_size=max(input_size), anchor_generator=anchors,
                        score_thresh=0.05, detections_per_img=self.max_detections)

    def forward(self, images, targets=None):
        if self.training:
            targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            self.calls += 1
            losses = self.net(list(images), targets)
            if self.calls == self.nan_at_step:
                losses["classification"] = losses["classification"] * float("nan")
            return losses
        return self.net(list(images))

    def export_forward(self, images):
        outs = self.net(list(images))
        dets, labels = zip(*(pad_detections(o["boxes"], o["scores"], o["labels"], self.max_detections)
                             for o in outs))
        return torch.stack(dets), torch.stack(labels)
