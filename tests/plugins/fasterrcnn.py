"""A test-only plugin: torchvision's Faster R-CNN, as a newcomer would wrap it from the guide
(``fasterrcnn-naive``) and as it must be wrapped (``fasterrcnn``); see fasterrcnn_model.

Loaded in tests through ``DETCORE_PLUGIN_MODULES=tests.plugins.fasterrcnn``.
"""
from detcore import hookimpl
from detcore.spec import ModelSpec

DETCORE_API_VERSION = 1

SMOKE = {
    "model": {},
    "data": {"input_size": [192, 192], "batch_size": 2, "workers": 0},
    "train": {"epochs": 2, "log_interval": 2, "warmup_fps_steps": 1},
    "optimizer": {"lr": 1e-3},
    "scheduler": {"warmup_steps": 2},
    "eval": {"batch_size": 4},
}
#: The naive wrapper passes torchvision's resize bounds as they are (its defaults, 800 and
#: 1333); tests set them to the canvas to see the background-class mistake alone.
NAIVE = {**SMOKE, "model": {"min_size": 800, "max_size": 1333}}


@hookimpl
def register_models():
    common = dict(task_type="bbox", upstream=("torchvision>=0.19",), default_config="smoke")
    return [ModelSpec(name="fasterrcnn", configs={"smoke": SMOKE}, description="torchvision "
                      "Faster R-CNN MobileNetV3-Large FPN, wrapped right (tests only)", **common),
            ModelSpec(name="fasterrcnn-naive", configs={"smoke": NAIVE}, description="the same, "
                      "wrapped as the guide's RetinaNet (tests only: fails the conformance "
                      "suite)", **common)]


@hookimpl
def build_model(spec, config, num_classes):
    from tests.plugins.fasterrcnn_model import build

    return build(num_classes, config, naive=spec.name == "fasterrcnn-naive")
