"""A tiny real detector plugin for core's tests: torchvision FCOS on a 3-stage conv backbone.

Loaded in tests through ``DETCORE_PLUGIN_MODULES=tests.plugins.tiny``.
"""
from detcore import hookimpl
from detcore.config_schema import integer
from detcore.spec import ModelSpec

DETCORE_API_VERSION = 1

SMOKE = {
    "model": {"width": 32, "nan_at_step": 0},
    "data": {"input_size": [96, 96], "batch_size": 4, "workers": 0,
             "synthetic": {"num_train": 24, "num_val": 8, "min_size": 96, "max_size": 128}},
    "train": {"epochs": 2, "log_interval": 2, "warmup_fps_steps": 1},
    "optimizer": {"lr": 2e-3},
    "scheduler": {"warmup_steps": 2},
    "eval": {"batch_size": 4},
}

#: ``model.nan_at_step`` is left undeclared: tests see how an undeclared key behaves.
MODEL_KEYS = {"model.width": integer("conv channels of the backbone and head", ge=1)}


@hookimpl
def register_models():
    wide = {**SMOKE, "model": {**SMOKE["model"], "width": 64}}
    return [ModelSpec(name="tiny-fcos", task_type="bbox", upstream=("torchvision>=0.19",),
                      configs={"smoke": SMOKE}, default_config="smoke", config_keys=MODEL_KEYS,
                      description="torchvision FCOS, 3-stage conv backbone (tests only)"),
            ModelSpec(name="tiny-fcos-wide", task_type="bbox", upstream=("torchvision>=0.19",),
                      configs={"smoke": wide}, default_config="smoke", config_keys=MODEL_KEYS,
                      description="the same, wider (tests: a checkpoint of another model)")]


@hookimpl
def build_model(spec, config, num_classes):
    from tests.plugins.tiny_model import TinyFCOS

    return TinyFCOS(num_classes, config["data"]["input_size"], int(config["model"]["width"]),
                    nan_at_step=int(config["model"]["nan_at_step"]))
