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
    ``RetinaNet`` module called with a list of images and target dicts returns its losses;
    with ``train.amp`` under ``torch.autocast`` and (fp16) ``torch.amp.GradScaler``, as
    ``references/detection/engine.py`` does. ``train.clip_grad`` and ``train.ema``, which the
    reference script lacks, are applied as core's trainer applies them, so both sides do the
    same work."""
    import torch
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    tcfg = config["train"]
    device = next(model.parameters()).device
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(str(tcfg["amp"]))
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    clip = float(tcfg["clip_grad"])
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(tcfg["ema"])))
           if float(tcfg["ema"]) > 0 else None)

    def step(images, targets):
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = sum(model.net(list(images), targets).values())
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        return loss.detach()

    step.ema = ema
    return step
