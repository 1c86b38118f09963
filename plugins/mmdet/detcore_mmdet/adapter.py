"""mmdet 3.x models behind detcore's :class:`~detcore.model.Detector` contract.

Shared by the FCOS and SOLOv2 plugins. Core's loop replaces mmengine's runner
(AMP, DDP, checkpoints and FPS are core's), so the reference's replaced
runner/hook/parallel files are not needed; this adapter only translates
batches: letterboxed ``[0, 1]`` images -> the model's normalisation, detcore
targets -> ``DetDataSample``, and predictions back. :func:`baseline_train_step`
is the other way through the same model: mmengine's own ``train_step`` (for
``detcore bench``).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.resources
import logging
from pathlib import Path

import torch

from detcore.model import Detector

from . import BUILD_MMCV

log = logging.getLogger("detcore.mmdet")


def config_path(relpath: str) -> Path:
    """A config shipped inside the mmdet wheel (``mmdet/.mim/configs/...``)."""
    root = Path(str(importlib.resources.files("mmdet"))) / ".mim" / "configs"
    return root / relpath


def load_config(relpath: str):
    """mmdet's config ``relpath`` (relative to its config folder), read by mmengine."""
    from mmengine.config import Config

    return Config.fromfile(str(config_path(relpath)))


def model_config(relpath: str, mcfg: dict):
    """The ``model`` section of mmdet config ``relpath`` with the ResNet keys every mmdet-family
    plugin has (``frozen_stages``, ``norm_eval`` of ``mcfg``) applied.

    Returns ``(model_cfg, data_preprocessor)``: the preprocessor section is taken out (core
    feeds the model; the wrapper normalises) and handed to :class:`MMDetDetector`. Nothing is
    downloaded: the backbone's ``init_cfg`` (ImageNet weights) is dropped, local weights come
    through ``model.backbone_weights`` (:func:`init_backbone`).
    """
    cfg = copy.deepcopy(load_config(relpath).model)
    preprocessor = cfg.pop("data_preprocessor")
    backbone = cfg.backbone
    backbone.init_cfg = None
    backbone.frozen_stages = int(mcfg["frozen_stages"])
    backbone.norm_eval = bool(mcfg["norm_eval"])
    if not backbone.norm_eval:  # BN statistics learn, so its affine parameters do too
        backbone.norm_cfg = dict(backbone.get("norm_cfg", {"type": "BN"}), requires_grad=True)
    return cfg, preprocessor


def _mmdet_registry():
    """mmdet's registries, initialised (idempotent) with mmdet as the default scope."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return MODELS


def build_model(model_cfg, init_weights: bool = True):
    """Build an mmdet model from its ``model`` config dict (registries initialised).

    ``init_weights``: run mmdet's own initialisation (e.g. the focal-loss prior bias of a
    classifier), which ``MODELS.build`` alone does not; mmengine's per-parameter log is muted.
    """
    model = _mmdet_registry().build(model_cfg)
    if init_weights:
        with quiet_mmengine():
            model.init_weights()
    return model


def build_detector(cls, model_cfg, preprocessor, backbone_weights: str, name: str, **kwargs):
    """``cls`` (an :class:`MMDetDetector`) around the mmdet model of ``model_cfg``, built with
    mmdet's ``init_weights`` and then ``backbone_weights`` (a local file, or ``""``)."""
    model = build_model(model_cfg)
    init_backbone(model.backbone, str(backbone_weights or ""), name)
    return cls(model, preprocessor, **kwargs)


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
    from detcore.checkpoint import load_checkpoint, model_state
    from detcore.errors import UserError

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
        return False, f"mmcv ops not compiled: {exc} (run {BUILD_MMCV})"
    from .mmcv_ext import npu_summary

    devices = ["cpu"]
    cuda = get_compiling_cuda_version()
    if cuda and cuda != "not available":
        devices.append(f"cuda {cuda}")
    npu, detail = npu_summary()  # asked of mmcv's extension, whatever torch_npu is installed
    if npu:
        devices.append("npu")
    return True, f"mmcv {mmcv.__version__} ops compiled for {', '.join(devices)}; {detail}"


class MMDetDetector(Detector):
    """Wraps an mmdet detector; normalisation is in the wrapper so ONNX takes [0, 1] input.

    ``preprocessor`` is the mmdet config's ``data_preprocessor`` section: its mean/std (and
    channel order: ``bgr_to_rgb`` false means the network wants BGR, so the wrapper flips
    core's RGB) normalise here; :func:`baseline_train_step` builds mmdet's own
    ``DetDataPreprocessor`` from it.
    """

    def __init__(self, model, preprocessor, task_type: str = "bbox"):
        super().__init__()
        self.model = model
        self.task_type = task_type
        self.data_preprocessor_cfg = dict(preprocessor)
        self.bgr = not preprocessor.get("bgr_to_rgb", False)
        self.register_buffer("mean", torch.tensor(list(preprocessor["mean"]),
                                                  dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(list(preprocessor["std"]),
                                                 dtype=torch.float32).view(1, 3, 1, 1))

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
                    gt.masks = bitmap_masks(t["masks"], h, w)
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

    #: Key prefixes of older upstream layouts -> mmdet 3.x's, ``(old, new)`` pairs tried in order
    #: (first match wins) on mmdet-native keys: a plugin lists the renames its upstream made
    #: (early mmdet 2.x's ``bbox_head.fcos_cls`` -> ``bbox_head.conv_cls``, ...).
    legacy_key_prefixes: tuple[tuple[str, str], ...] = ()

    def convert_state_dict(self, state: dict) -> dict:
        """An mmdet-native state dict -> this wrapper's keys (core calls it before strict loading).

        mmdet 3.x (mmengine) and mmdet 2.x (mmcv 1.x) checkpoints hold the detector's own
        children (``backbone.*``, ``neck.*``, ``bbox_head.*``, ``mask_head.*``); keys of an
        older layout are first renamed by :attr:`legacy_key_prefixes`. They become this
        wrapper's ``model.*`` keys, plus the wrapper's normalisation buffers, which an mmdet
        checkpoint does not carry (mmdet takes them from the config too). Anything that is
        neither stays as it is, so strict loading names it. A detcore state dict is returned
        as it is.
        """
        if any(rename_prefix(k, self.legacy_key_prefixes) != k for k in state):
            state = {rename_prefix(k, self.legacy_key_prefixes): v for k, v in state.items()}
        children = {name for name, _ in self.model.named_children()}
        if not any(k.split(".", 1)[0] in children for k in state):
            return state
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        return {**own, **{(f"model.{k}" if k.split(".", 1)[0] in children else k): v
                          for k, v in state.items()}}


def rename_prefix(key: str, renames) -> str:
    """``key`` with the first matching ``(old, new)`` prefix of ``renames`` replaced."""
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def bitmap_masks(masks: torch.Tensor, h: int, w: int):
    """Instance masks ``N x H x W`` as mmdet's ``BitmapMasks`` (in host memory, as mmdet's)."""
    from mmdet.structures.mask import BitmapMasks

    return BitmapMasks(masks.cpu().numpy(), h, w)


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


# -- the upstream's own training step (detcore bench's baseline) --------------------------
def packed_samples(images: torch.Tensor, targets: list[dict]) -> list:
    """Data samples as mmdet's ``PackDetInputs`` gives them for a letterboxed image.

    mmdet's ``Resize(keep_ratio)`` + ``Pad`` to the canvas: ``img_shape`` is the canvas,
    ``ori_shape`` the original image, ``scale_factor`` the letterbox scale (w, h); boxes as
    ``HorizontalBoxes``, masks as ``BitmapMasks``, no ignored instances (core drops crowds).
    Targets without ``orig_size``/``scale``/``image_id`` (hand-made ones) count as unscaled.
    """
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmengine.structures import InstanceData

    h, w = images.shape[-2:]
    samples = []
    for i, t in enumerate(targets):
        scale = float(t.get("scale", 1.0))
        sample = DetDataSample(metainfo={
            "img_id": t.get("image_id", i), "ori_shape": tuple(t.get("orig_size", (h, w))),
            "img_shape": (h, w), "scale_factor": (scale, scale)})
        gt = InstanceData(bboxes=HorizontalBoxes(t["boxes"]), labels=t["labels"])
        if "masks" in t:
            gt.masks = bitmap_masks(t["masks"], h, w)
        sample.gt_instances = gt
        sample.ignored_instances = InstanceData(
            bboxes=HorizontalBoxes(t["boxes"].new_zeros((0, 4))), labels=t["labels"][:0])
        samples.append(sample)
    return samples


def optim_wrapper(optimizer, config: dict):
    """mmengine's ``OptimWrapper`` around ``optimizer`` as the detcore config says: gradient
    clipping at ``train.clip_grad`` (if > 0); with ``train.amp`` fp16/bf16 its
    ``AmpOptimWrapper`` (autocast, ``train.loss_scale``: dynamic or a static number)."""
    from mmengine.optim import AmpOptimWrapper, OptimWrapper

    train = config["train"]
    clip = float(train.get("clip_grad") or 0.0)
    kwargs = {"clip_grad": {"max_norm": clip}} if clip > 0 else {}
    amp = str(train.get("amp", "off"))
    if amp in ("fp16", "bf16"):
        scale = str(train.get("loss_scale", "dynamic"))
        return AmpOptimWrapper(loss_scale=scale if scale == "dynamic" else float(scale),
                               dtype=torch.float16 if amp == "fp16" else torch.bfloat16,
                               optimizer=optimizer, **kwargs)
    return OptimWrapper(optimizer, **kwargs)


def baseline_train_step(model: MMDetDetector, optimizer, config: dict):
    """``step(images, targets)``: one training step of the mmdet detector done mmengine's way.

    The wrapped detector gets mmdet's ``DetDataPreprocessor`` built from the mmdet config's
    ``data_preprocessor`` (its mean/std; ``batch_augments`` dropped, core's canvas is fixed;
    core's images are RGB already, so ``bgr_to_rgb`` is off and ``rgb_to_bgr`` on for a BGR
    network), then each step packs the batch as mmdet's ``PackDetInputs`` does and runs
    ``model.model.train_step(data, optim_wrapper)``: preprocessing, ``loss``,
    ``parse_losses``, and the :func:`optim_wrapper`'s backward, clipping and step.

    ``images``: ``[0, 1]`` floats ``B x 3 x H x W`` on the model's device; ``targets``: detcore
    target dicts (``boxes`` xyxy canvas pixels, ``labels`` 0-based, ``masks`` for segm).
    Returns mmengine's log variables (``loss`` and each term).
    """
    preprocessor = dict(model.data_preprocessor_cfg)
    preprocessor.pop("batch_augments", None)
    preprocessor.update(bgr_to_rgb=False, rgb_to_bgr=model.bgr)
    device = next(model.parameters()).device
    model.model.data_preprocessor = _mmdet_registry().build(preprocessor).to(device)
    wrapper = optim_wrapper(optimizer, config)

    def step(images: torch.Tensor, targets: list[dict]) -> dict:
        data = {"inputs": list(images * 255.0), "data_samples": packed_samples(images, targets)}
        return model.model.train_step(data, wrapper)

    return step
