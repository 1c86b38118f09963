"""The EfficientDet variants this plugin registers: one line each (no torch import).

``name``: the ``--model`` name; ``arch``: the effdet model config it builds
(``effdet.get_efficientdet_config``); ``size``: that config's native input size,
used by the ``coco`` config. Adding a variant is one more line here.
"""
from __future__ import annotations

from typing import NamedTuple

#: The verified pair this plugin is written and tested against.
UPSTREAM = ("effdet==0.4.1", "timm==1.0.31")


class Variant(NamedTuple):
    arch: str
    size: int
    description: str


VARIANTS: dict[str, Variant] = {
    "efficientdet-d0": Variant("tf_efficientdet_d0", 512, "EfficientDet-D0, tf_efficientnet_b0 backbone, BiFPN x3"),
    "efficientdet-d1": Variant("tf_efficientdet_d1", 640, "EfficientDet-D1, tf_efficientnet_b1 backbone, BiFPN x4"),
    "efficientdet-d2": Variant("tf_efficientdet_d2", 768, "EfficientDet-D2, tf_efficientnet_b2 backbone, BiFPN x5"),
    "efficientdet-d3": Variant("tf_efficientdet_d3", 896, "EfficientDet-D3, tf_efficientnet_b3 backbone, BiFPN x6"),
    "efficientdet-d4": Variant("tf_efficientdet_d4", 1024, "EfficientDet-D4, tf_efficientnet_b4 backbone, BiFPN x7"),
    "efficientdet-d5": Variant("tf_efficientdet_d5", 1280, "EfficientDet-D5, tf_efficientnet_b5 backbone, BiFPN x7"),
    "efficientdet-d6": Variant("tf_efficientdet_d6", 1280, "EfficientDet-D6, tf_efficientnet_b6 backbone, BiFPN x8"),
    "efficientdet-d7": Variant("tf_efficientdet_d7", 1536, "EfficientDet-D7, tf_efficientnet_b6 backbone, BiFPN x8"),
}
