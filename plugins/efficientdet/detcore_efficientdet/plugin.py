"""The ``detcore`` entry point of detcore-efficientdet.

Core calls these hooks only for the models this plugin registers (owner-only dispatch),
so they need no check of ``spec``.

Import-light on purpose: nothing here imports torch, timm or effdet at module level
(``detcore plugins`` imports this module and is budgeted at 0.5 s). Heavy imports
happen inside the hook bodies.
"""
from __future__ import annotations

import os

from detcore import hookimpl
from detcore.spec import ModelSpec

from . import configs
from .variants import UPSTREAM, VARIANTS

DETCORE_API_VERSION = 1

# Nothing may reach for the Hugging Face hub at run time (timm would for pretrained weights).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _effdet_importable() -> tuple[bool, str]:
    try:
        from importlib import metadata

        import effdet  # noqa: F401
        import timm  # noqa: F401

        return True, f"effdet {metadata.version('effdet')}, timm {metadata.version('timm')}"
    except Exception as exc:  # doctor checks must not raise
        return False, f"import failed: {exc} (pip install {' '.join(UPSTREAM)})"


@hookimpl
def register_models():
    return [ModelSpec(name=name, task_type="bbox", upstream=UPSTREAM,
                      configs=configs.configs_for(name), default_config="smoke",
                      config_keys=configs.MODEL_KEYS,
                      description=f"{variant.description} (effdet {variant.arch})",
                      needs={"effdet/timm import": _effdet_importable})
            for name, variant in VARIANTS.items()]


@hookimpl
def build_model(spec, config, num_classes):
    from .model import build

    return build(spec.name, config, num_classes)


@hookimpl
def apply_npu_patches(config, device):
    from .patches import apply_all

    return apply_all(config, device)


@hookimpl
def npu_patches():
    from .patches import PATCHES

    return list(PATCHES)


@hookimpl
def baseline_train_step(model, optimizer, config):
    from .model import baseline_train_step as step

    return step(model, optimizer, config)


@hookimpl
def build_optimizer(config, model, world_size):
    from .optim import build_optimizer as build

    return build(config, model, world_size)
