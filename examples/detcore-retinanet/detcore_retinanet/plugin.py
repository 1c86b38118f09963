"""detcore plugin entry point for retinanet.

Keep this module import-light (no torch at module level): `detcore plugins`
imports it and must stay fast. Heavy imports go inside the hooks. detcore calls
these hooks only for the models this plugin registers, so they need no check.
"""
from detcore import hookimpl
from detcore.spec import ModelSpec

DETCORE_API_VERSION = 1
MODEL = "retinanet"


@hookimpl
def register_models():
    from .configs import CONFIGS, MODEL_KEYS

    return [ModelSpec(name=MODEL, task_type="bbox", upstream=("torchvision>=0.19",),
                      configs=CONFIGS, default_config="smoke", config_keys=MODEL_KEYS,
                      description="torchvision RetinaNet, ResNet-18 FPN backbone")]


@hookimpl
def build_model(spec, config, num_classes):
    from .model import build

    return build(num_classes, config)


@hookimpl
def apply_npu_patches(spec, config, device):
    from detcore.patching import apply_patches

    from .patches import PATCHES

    return apply_patches(patch(device) for patch in PATCHES)


@hookimpl
def npu_patches(spec):
    from .patches import PATCHES

    return list(PATCHES)


@hookimpl
def baseline_train_step(spec, config, model, optimizer):
    """torchvision's own training step, as its detection reference scripts run it: the
    ``RetinaNet`` module called with a list of images and target dicts returns its losses."""
    def step(images, targets):
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        loss = sum(model.net(list(images), targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step
