"""Letterbox resizing shared by training, evaluation, export and offline inference.

Images are scaled to fit ``(H, W)`` keeping their aspect ratio and placed at the
top-left of a zero canvas, so mapping a prediction back to the original image is
a single division by ``scale``. The exported ONNX model sees exactly this input.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def letterbox_scale(height: int, width: int, size: tuple[int, int]) -> float:
    return min(size[0] / height, size[1] / width)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """HWC uint8 image -> (H, W, 3) uint8 canvas and the scale applied."""
    h, w = image.shape[:2]
    scale = letterbox_scale(h, w, size)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    canvas = np.zeros((size[0], size[1], 3), dtype=np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, scale


def letterbox_masks(masks: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) uint8 masks -> (N, H, W) on the same canvas as the image."""
    out = np.zeros((len(masks), size[0], size[1]), dtype=np.uint8)
    for i, mask in enumerate(masks):
        h, w = mask.shape
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
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
