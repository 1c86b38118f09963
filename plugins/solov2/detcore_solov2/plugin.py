"""The ``detcore`` entry point of detcore-solov2 (models ``solov2``, ``solov2-light``).

``build_model`` (:func:`detcore_solov2.model.build`), ``apply_npu_patches``
(:func:`detcore_solov2.patches.apply_all`), ``npu_patches`` (its ``PATCHES``) and
``baseline_train_step`` (mmengine's own
``train_step``) are the mmdet family's, from :func:`detcore_mmdet.hooks.family_hooks`; the
optimizer is core's default (``config["optimizer"]``).

Core calls these hooks only for the models this plugin registers (owner-only dispatch), so
they need no check of ``spec``. Import-light on purpose: nothing here imports torch, mmcv or
mmdet at module level (``detcore plugins`` imports this module).
"""
from __future__ import annotations

from detcore import hookimpl
from detcore.spec import ModelSpec
from detcore_mmdet import CHECKPOINT_GLOBALS, UPSTREAM, compiled_ops_check
from detcore_mmdet.hooks import family_hooks

DETCORE_API_VERSION = 1

MODELS = {
    "solov2": "SOLOv2 R50-FPN instance segmentation (mmdet 3.3 solov2_r50_fpn_1x_coco)",
    "solov2-light": "SOLOv2-light R18-FPN instance segmentation (mmdet 3.3 "
                    "solov2-light_r18_fpn_ms-3x_coco)",
}

build_model, apply_npu_patches, npu_patches, baseline_train_step = family_hooks(__package__)


@hookimpl
def register_models():
    from .configs import MODEL_KEYS, configs_for

    return [ModelSpec(name=name, task_type="segm", upstream=UPSTREAM, configs=configs_for(name),
                      default_config="smoke", description=description, config_keys=MODEL_KEYS,
                      needs={"mmcv compiled ops": compiled_ops_check},
                      checkpoint_globals=CHECKPOINT_GLOBALS)
            for name, description in MODELS.items()]
