"""The ``detcore`` entry point of detcore-fcos (model ``fcos``).

``build_model`` (:func:`detcore_fcos.model.build`), ``apply_npu_patches``
(:func:`detcore_fcos.patches.apply_all`), ``npu_patches`` (its ``PATCHES``) and
``baseline_train_step`` (mmengine's own
``train_step``) are the mmdet family's, from :func:`detcore_mmdet.hooks.family_hooks`;
``build_optimizer`` is FCOS's own (the reference's bias lr/decay multipliers).

Core calls these hooks only for the model this plugin registers (owner-only dispatch), so
they need no check of ``spec``. Import-light on purpose: nothing here imports torch, mmcv or
mmdet at module level (``detcore plugins`` imports this module and is budgeted at 0.5 s).
Heavy imports happen inside the hook bodies.
"""
from __future__ import annotations

from detcore import hookimpl
from detcore.spec import ModelSpec
from detcore_mmdet import CHECKPOINT_GLOBALS, UPSTREAM, compiled_ops_check
from detcore_mmdet.hooks import family_hooks

from . import MODEL_NAME, configs

DETCORE_API_VERSION = 1

build_model, apply_npu_patches, npu_patches, baseline_train_step = family_hooks(__package__)


@hookimpl
def register_models():
    return [ModelSpec(
        name=MODEL_NAME, task_type="bbox", upstream=UPSTREAM, configs=dict(configs.CONFIGS),
        default_config="smoke", config_keys=configs.MODEL_KEYS,
        description="FCOS (mmdet 3.3.0): smoke = R18 192x192, coco = R50-caffe 800x1333 reference",
        needs={"mmcv compiled ops": compiled_ops_check}, checkpoint_globals=CHECKPOINT_GLOBALS)]


@hookimpl
def build_optimizer(config, model, world_size):
    from .optim import build_optimizer as build

    return build(config, model, world_size)
