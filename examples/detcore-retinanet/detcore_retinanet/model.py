"""retinanet: torchvision's RetinaNet as a detcore Detector."""
import torch
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detcore.model import Detector
from detcore.ops import pad_detections


class TorchvisionRetinaNet(Detector):
    """Core gives [0, 1] letterboxed images; torchvision normalises them itself."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images, targets=None):
        if self.training:
            targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            return self.net(list(images), targets)
        return self.net(list(images))

    def export_forward(self, images):
        """Fixed-shape outputs for ONNX: dets [B, 100, 5], labels [B, 100]."""
        outs = self.net(list(images))
        dets, labels = zip(*(pad_detections(o["boxes"], o["scores"], o["labels"],
                                            self.max_detections) for o in outs))
        return torch.stack(dets), torch.stack(labels)

    def class_parameter_prefixes(self):
        return ("net.head.classification_head.cls_logits",)


def build(num_classes: int, config: dict) -> TorchvisionRetinaNet:
    mcfg, (h, w) = config["model"], config["data"]["input_size"]
    backbone = resnet_fpn_backbone(
        backbone_name=mcfg["backbone"], weights=None,  # nothing is downloaded
        trainable_layers=int(mcfg["trainable_layers"]), returned_layers=[2, 3, 4],
        extra_blocks=LastLevelP6P7(256, 256))
    base = max(8, min(h, w) // 16)  # anchors sized for the input, not for 800px COCO
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3)))
                  for s in (base, base * 2, base * 4, base * 8, base * 16))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    net = RetinaNet(backbone, num_classes=num_classes, min_size=min(h, w), max_size=max(h, w),
                    anchor_generator=anchors, detections_per_img=100)
    return TorchvisionRetinaNet(net)
