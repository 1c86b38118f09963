"""mmdet 3.x models behind detcore's :class:`~detcore.model.Detector` contract.

Shared by the FCOS and SOLOv2 plugins. Core's loop replaces mmengine's runner
(AMP, DDP, checkpoints and FPS are core's), so the reference's replaced
runner/hook/parallel files are not needed; this adapter only translates
batches: letterboxed ``[0, 1]`` images -> the model's normalisation, detcore
targets -> ``DetDataSample``, and predictions back.
"""
from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import logging
from pathlib import Path

import torch

from ..model import Detector

log = logging.getLogger("detcore.mmdet")


def config_path(relpath: str) -> Path:
    """A config shipped inside the mmdet wheel (``mmdet/.mim/configs/...``)."""
    root = Path(str(importlib.resources.files("mmdet"))) / ".mim" / "configs"
    return root / relpath


def load_config(relpath: str):
    from mmengine.config import Config

    return Config.fromfile(str(config_path(relpath)))


def build_model(model_cfg, init_weights: bool = True):
    """Build an mmdet model from its ``model`` config dict (registries initialised).

    ``init_weights``: run mmdet's own initialisation (e.g. the focal-loss prior bias of a
    classifier), which ``MODELS.build`` alone does not; mmengine's per-parameter log is muted.
    """
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    model = MODELS.build(model_cfg)
    if init_weights:
        with quiet_mmengine():
            model.init_weights()
    return model


@contextlib.contextmanager
def quiet_mmengine():
    """mmengine logs one line per parameter on ``init_weights``: keep it to warnings."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_backbone_weights(backbone: torch.nn.Module, path: str) -> int:
    """Load local ResNet weights into an mmdet ResNet; returns the number of tensors loaded.

    Takes a torchvision/plain state dict or an mmdet/detcore checkpoint (``backbone.*``,
    ``model.backbone.*``, ``module.*`` prefixes are stripped, other parts ignored).
    Nothing is downloaded: this is how pretrained backbones reach a detcore run.
    """
    from ..checkpoint import load_checkpoint, model_state
    from ..errors import UserError

    file = Path(path).expanduser()
    state = model_state(load_checkpoint(file), prefer_ema=False)
    if any(".backbone." in f".{k}" for k in state):  # a whole detector: keep its backbone
        state = {k.split("backbone.", 1)[1]: v for k, v in state.items() if "backbone." in k}
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = backbone.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if len(usable) < 0.5 * len(own):
        raise UserError(f"model.backbone_weights {file}: only {len(usable)} of {len(own)} tensors "
                        f"fit this ResNet-{getattr(backbone, 'depth', '?')}; pass a checkpoint of "
                        f"that backbone (torchvision layout, e.g. resnet50-19c8e357.pth)")
    backbone.load_state_dict(usable, strict=False)
    log.info("loaded %d/%d backbone tensors from %s", len(usable), len(own), file)
    return len(usable)


def init_backbone(backbone: torch.nn.Module, weights: str | None, model_name: str) -> None:
    """Load ``model.backbone_weights`` if given; otherwise warn when the config freezes
    stages or BN statistics, which only makes sense for pretrained weights."""
    if weights:
        load_backbone_weights(backbone, weights)
    elif getattr(backbone, "frozen_stages", -1) >= 0 or getattr(backbone, "norm_eval", False):
        log.warning("%s: the ResNet freezes stages/BN statistics (frozen_stages=%s, norm_eval=%s) "
                    "as for pretrained weights, but no model.backbone_weights were given: from "
                    "scratch it will hardly learn; pass --set model.backbone_weights=FILE or "
                    "--set model.frozen_stages=-1 --set model.norm_eval=false", model_name,
                    backbone.frozen_stages, backbone.norm_eval)


def compiled_ops() -> tuple[bool, str]:
    """Are mmcv's compiled ops importable, and for which devices? (for ``detcore doctor``)"""
    try:
        import mmcv
        from mmcv.ops import batched_nms  # noqa: F401
        from mmcv.ops import get_compiling_cuda_version
    except Exception as exc:
        return False, f"mmcv ops not compiled: {exc} (run plugins/fcos/build_mmcv.py)"
    devices = ["cpu"]
    cuda = get_compiling_cuda_version()
    if cuda and cuda != "not available":
        devices.append(f"cuda {cuda}")
    if importlib.util.find_spec("torch_npu") is not None:
        devices.append("npu if built with FORCE_NPU=1")
    return True, f"mmcv {mmcv.__version__} ops compiled for {', '.join(devices)}"


class MMDetDetector(Detector):
    """Wraps an mmdet detector; normalisation is in the wrapper so ONNX takes [0, 1] input."""

    def __init__(self, model, mean, std, bgr: bool, task_type: str = "bbox"):
        super().__init__()
        self.model = model
        self.task_type = task_type
        self.bgr = bgr
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images * 255.0
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean) / self.std

    def data_samples(self, images: torch.Tensor, targets=None) -> list:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        h, w = images.shape[-2:]
        samples = []
        for i in range(images.shape[0]):
            sample = DetDataSample(metainfo={
                "img_shape": (h, w), "ori_shape": (h, w), "pad_shape": (h, w),
                "batch_input_shape": (h, w), "scale_factor": (1.0, 1.0), "img_id": i})
            if targets is not None:
                t = targets[i]
                gt = InstanceData(bboxes=t["boxes"], labels=t["labels"])
                if "masks" in t:
                    from mmdet.structures.mask import BitmapMasks

                    gt.masks = BitmapMasks(t["masks"].cpu().numpy(), h, w)
                sample.gt_instances = gt
            samples.append(sample)
        return samples

    def forward(self, images, targets=None):
        inputs = self.normalise(images)
        if self.training:
            losses = self.model.loss(inputs, self.data_samples(images, targets))
            return reduce_losses(losses)
        results = self.model.predict(inputs, self.data_samples(images), rescale=False)
        return [to_detcore(r.pred_instances) for r in results]


def reduce_losses(losses: dict) -> dict:
    """mmdet loss dicts hold tensors or lists of tensors; keep only the ``loss*`` terms."""
    out = {}
    for name, value in losses.items():
        if "loss" not in name:
            continue  # accuracies and other logged values are not optimised
        out[name] = sum(v.mean() for v in value) if isinstance(value, (list, tuple)) else value.mean()
    return out


def to_detcore(pred) -> dict:
    out = {"boxes": pred.bboxes, "scores": pred.scores, "labels": pred.labels}
    if "masks" in pred:
        out["masks"] = pred.masks
    return out
