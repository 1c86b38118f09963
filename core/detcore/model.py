"""The model contract between a plugin and core.

``build_model`` returns a :class:`Detector`. Core feeds it letterboxed float
images in ``[0, 1]`` (``B x 3 x H x W``, H and W from ``config.data.input_size``);
normalisation belongs to the model, so an exported ONNX file takes the same input.
"""
from __future__ import annotations

import torch
from torch import nn


class Detector(nn.Module):
    """Base class for plugin models.

    ``forward(images, targets)`` in training mode returns a dict of scalar losses
    (core sums them all). In eval mode,
    ``forward(images)`` returns one dict per image with ``boxes`` (``N x 4`` xyxy,
    input-canvas pixels), ``scores`` (``N``), ``labels`` (``N``, 0-based) and, for
    ``segm`` models, ``masks`` (``N x H x W`` probabilities or booleans).

    ``export_forward(images)`` is what ONNX export traces: fixed-shape outputs named
    by ``export_output_names``. The core contract is ``dets`` (``B x K x 5``: x1, y1,
    x2, y2, score), ``labels`` (``B x K`` int64, ``-1`` for empty slots) and, for
    ``segm``, ``masks`` (``B x K x H x W``), with ``K = max_detections``.
    """

    task_type = "bbox"
    max_detections = 100
    export_output_names: tuple[str, ...] = ("dets", "labels")

    def export_forward(self, images: torch.Tensor):
        raise NotImplementedError(f"{type(self).__name__} does not implement export_forward")

    def class_parameter_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes whose shape depends on the class count (re-initialised on finetune)."""
        return ()
