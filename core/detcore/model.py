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

    **The export contract** (checked by core at export time and by the conformance suite):
    ``export_forward(images)`` is what ONNX export traces, and returns, in this order,

    * ``dets`` ``B x K x 5`` float32: x1, y1, x2, y2, score (empty slots all 0),
    * ``labels`` ``B x K`` int64, 0-based (``-1`` for empty slots),
    * ``masks`` ``B x K x H x W`` float32 probabilities, ``segm`` models only,

    with ``K = max_detections``. The ONNX outputs carry these names
    (:attr:`export_output_names`); :attr:`atc_out_nodes` is the order CANN's ``atc
    --out_node`` lists them in the ``.om`` file (``None``: the same order).
    """

    task_type = "bbox"
    max_detections = 100
    atc_out_nodes: tuple[str, ...] | None = None
    #: Largest |PyTorch - onnxruntime| difference (pixels, scores, mask probabilities) on
    #: matched detections that ``--task export`` accepts; beyond it the export fails.
    export_tolerance = 1e-3

    @property
    def export_output_names(self) -> tuple[str, ...]:
        return ("dets", "labels", "masks") if self.task_type == "segm" else ("dets", "labels")

    def export_forward(self, images: torch.Tensor):
        raise NotImplementedError(f"{type(self).__name__} does not implement export_forward")

    def class_parameter_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes whose shape depends on the class count (re-initialised on finetune)."""
        return ()

    def convert_state_dict(self, state: dict) -> dict:
        """An upstream checkpoint's state dict -> this model's keys (core calls it on every
        ``--weights`` file before loading strictly). The default takes the keys as they are."""
        return state
