"""Letterbox resizing shared by training, evaluation, export and offline inference.

Images are scaled to fit ``(H, W)`` keeping their aspect ratio and placed at the
top-left of a canvas, so mapping a prediction back to the original image is one
division per axis (:func:`to_original`). The exported ONNX model sees exactly this input.

Three details differ between upstreams and change the figures they report (the
efficientdet and fcos READMEs measure each), so they are config keys (``data.letterbox``):
how the resized side is rounded (core ``round(side * scale)``; effdet's ``ResizePad``
truncates, ``int(side * scale)``), the colour of the padding (core black; effdet the
ImageNet mean colour), and how boxes go back to the original image (core and effdet divide
by the one letterbox scale; mmdet by its per-axis ``scale_factor``, resized / original side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import UserError

ROUNDINGS = ("round", "floor")
RESCALES = ("uniform", "per_axis")


@dataclass(frozen=True)
class LetterboxPolicy:
    """``rounding``: ``round`` or ``floor`` the resized sides; ``fill``: the padding's RGB;
    ``rescale``: boxes back to the original by the letterbox scale (``uniform``) or by each
    axis's resized / original ratio (``per_axis``, exact for the pixels the model saw)."""

    rounding: str = "round"
    fill: tuple[int, int, int] = (0, 0, 0)
    rescale: str = "uniform"

    @classmethod
    def from_config(cls, data_cfg: dict) -> "LetterboxPolicy":
        """``data.letterbox`` of a run's config: ``{"rounding": ..., "fill": int | [r, g, b],
        "rescale": ...}``, each key optional (core's defaults: ``round``, black, ``uniform``)."""
        cfg = data_cfg.get("letterbox") or {}
        fill = cfg.get("fill", 0)
        try:
            fill = (int(fill),) * 3 if isinstance(fill, (int, float)) else tuple(int(v) for v in fill)
        except (TypeError, ValueError):
            raise UserError(f"config key data.letterbox.fill={fill!r}: one value or three "
                            f"[r, g, b], each 0..255") from None
        try:
            return cls(str(cfg.get("rounding", "round")), fill, str(cfg.get("rescale", "uniform")))
        except (TypeError, ValueError) as exc:
            raise UserError(f"config key data.letterbox: {exc}") from None

    def __post_init__(self):
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"letterbox rounding {self.rounding!r}: use one of {ROUNDINGS}")
        if len(self.fill) != 3 or not all(0 <= v <= 255 for v in self.fill):
            raise ValueError(f"letterbox fill {self.fill!r}: one value or three, each 0..255")
        if self.rescale not in RESCALES:
            raise ValueError(f"letterbox rescale {self.rescale!r}: use one of {RESCALES}")

    def resized_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """``(h, w)`` of the image on the canvas."""
        fit = round if self.rounding == "round" else math.floor
        return max(1, int(fit(height * scale))), max(1, int(fit(width * scale)))

    def canvas_per_original_pixel(self, orig_size: tuple[int, int], scale: float):
        """``(fx, fy)``: canvas pixels per original pixel along x and y."""
        if self.rescale == "uniform":
            return scale, scale
        (h, w), (nh, nw) = orig_size, self.resized_size(*orig_size, scale)
        return nw / w, nh / h

    def to_canvas(self, boxes: np.ndarray, orig_size: tuple[int, int], scale: float) -> np.ndarray:
        """Original-image ``xyxy`` boxes (N x 4 float numpy) -> canvas pixels."""
        fx, fy = self.canvas_per_original_pixel(orig_size, scale)
        return boxes * fx if fx == fy else boxes * np.asarray([fx, fy, fx, fy], dtype=boxes.dtype)

    def to_original(self, boxes, orig_size: tuple[int, int], scale: float):
        """Canvas-pixel ``xyxy`` boxes (numpy or torch, N x 4) -> original-image pixels, clipped."""
        h, w = orig_size
        fx, fy = self.canvas_per_original_pixel(orig_size, scale)
        if fx == fy:
            out = boxes / fx
        else:
            factors = [fx, fy, fx, fy]
            out = boxes / (boxes.new_tensor(factors) if hasattr(boxes, "new_tensor")
                           else np.asarray(factors, dtype=boxes.dtype))
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
        return out


DEFAULT = LetterboxPolicy()


def letterbox_scale(height: int, width: int, size: tuple[int, int]) -> float:
    return min(size[0] / height, size[1] / width)


def letterbox(image: np.ndarray, size: tuple[int, int],
              policy: LetterboxPolicy = DEFAULT) -> tuple[np.ndarray, float]:
    """HWC uint8 image -> (H, W, 3) uint8 canvas and the scale applied."""
    h, w = image.shape[:2]
    scale = letterbox_scale(h, w, size)
    nh, nw = policy.resized_size(h, w, scale)
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    canvas = np.empty((size[0], size[1], 3), dtype=np.uint8)
    canvas[...] = np.asarray(policy.fill, dtype=np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, scale


def letterbox_masks(masks: np.ndarray, scale: float, size: tuple[int, int],
                    policy: LetterboxPolicy = DEFAULT) -> np.ndarray:
    """(N, h, w) uint8 masks -> (N, H, W) on the same canvas as the image."""
    out = np.zeros((len(masks), size[0], size[1]), dtype=np.uint8)
    for i, mask in enumerate(masks):
        nh, nw = policy.resized_size(*mask.shape, scale)
        out[i, :nh, :nw] = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.NEAREST))
    return out


def hflip(canvas: np.ndarray, boxes: np.ndarray, masks: np.ndarray | None):
    width = canvas.shape[1]
    canvas = canvas[:, ::-1].copy()
    boxes = boxes.copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    if masks is not None:
        masks = masks[:, :, ::-1].copy()
    return canvas, boxes, masks


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode (grayscale, CMYK, palette, 16-bit) -> HWC uint8 RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or data.max() > 255 else 255.0
        gray = np.clip(data / peak * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        data = np.asarray(image, dtype=np.float64)
        gray = np.clip(data * (255.0 if data.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))
