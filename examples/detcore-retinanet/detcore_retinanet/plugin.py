"""detcore plugin entry point for retinanet.

Keep this module import-light (no torch at module level): `detcore plugins`
imports it and must stay fast. Heavy imports go inside the hooks.
"""
from detcore import hookimpl
from detcore.spec import ModelSpec

DETCORE_API_VERSION = 1
MODEL = "retinanet"


@hookimpl
def register_models():
    from .configs import CONFIGS

    return [ModelSpec(name=MODEL, task_type="bbox", upstream=("torchvision>=0.19",),
                      configs=CONFIGS, default_config="smoke",
                      description="torchvision RetinaNet, ResNet-18 FPN backbone")]


@hookimpl
def build_model(spec, config, num_classes):
    if spec.name != MODEL:
        return None  # not ours: let the plugin that owns it answer
    from .model import build

    return build(num_classes, config)


@hookimpl
def apply_npu_patches(spec, config, device):
    if spec.name != MODEL:
        return None
    from .patches import PATCHES

    return [patch(device).apply() for patch in PATCHES]
