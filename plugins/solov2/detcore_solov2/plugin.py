"""The ``detcore`` entry point of detcore-solov2.

Import-light on purpose: nothing here imports torch, mmcv or mmdet at module level
(``detcore plugins`` imports this module). Heavy imports happen inside the hooks.
"""
from __future__ import annotations

from detcore import hookimpl
from detcore.spec import ModelSpec

DETCORE_API_VERSION = 1

#: The upstream this plugin pins (also checked by ``detcore plugins``/``doctor``).
UPSTREAM = ("mmdet==3.3.0", "mmcv==2.1.0", "mmengine==0.10.7")

MODELS = {
    "solov2": "SOLOv2 R50-FPN instance segmentation (mmdet 3.3 solov2_r50_fpn_1x_coco)",
    "solov2-light": "SOLOv2-light R18-FPN instance segmentation (mmdet 3.3 "
                    "solov2-light_r18_fpn_ms-3x_coco)",
}


def _compiled_ops() -> tuple[bool, str]:
    try:
        from detcore.adapters.mmdet import compiled_ops
    except Exception as exc:  # doctor checks must not raise
        return False, f"detcore's mmdet adapter failed to import: {exc}"
    return compiled_ops()


@hookimpl
def register_models():
    from .configs import configs_for

    return [ModelSpec(name=name, task_type="segm", upstream=UPSTREAM, configs=configs_for(name),
                      default_config="smoke", description=description,
                      needs={"mmcv compiled ops": _compiled_ops})
            for name, description in MODELS.items()]


def _ours(spec) -> bool:
    return spec.name in MODELS


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
