"""The ``detcore`` entry point of detcore-fcos (model ``fcos``).

Import-light on purpose: nothing here imports torch, mmcv or mmdet at module level
(``detcore plugins`` imports this module and is budgeted at 0.5 s). Heavy imports
happen inside the hook bodies.
"""
from __future__ import annotations

from detcore import hookimpl
from detcore.spec import ModelSpec

from . import MODEL_NAME, UPSTREAM, configs

DETCORE_API_VERSION = 1


def _compiled_ops() -> tuple[bool, str]:
    """mmcv's compiled ops (``detcore doctor``); never raises."""
    try:
        from detcore.adapters.mmdet import compiled_ops

        return compiled_ops()
    except Exception as exc:  # e.g. torch or mmcv missing altogether
        return False, f"check failed: {exc} (build mmcv with plugins/fcos/build_mmcv.py)"


@hookimpl
def register_models():
    return [ModelSpec(
        name=MODEL_NAME, task_type="bbox", upstream=UPSTREAM, configs=dict(configs.CONFIGS),
        default_config="smoke",
        description="FCOS (mmdet 3.3.0): smoke = R18 256x256, coco = R50-caffe 800x1333 reference",
        needs={"mmcv compiled ops": _compiled_ops})]


def _ours(spec) -> bool:
    return spec.name == MODEL_NAME


@hookimpl
def build_model(spec, config, num_classes):
    if not _ours(spec):
        return None
    from .model import build

    return build(config, num_classes)


@hookimpl
def apply_npu_patches(spec, config, device):
    if not _ours(spec):
        return None
    from .patches import apply_all

    return apply_all(config, device)


@hookimpl
def build_optimizer(spec, config, model):
    if not _ours(spec):
        return None
    from detcore import distributed

    from .optim import build_optimizer as build

    return build(config, model, distributed.world()[2])
