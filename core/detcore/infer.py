"""Offline inference on an exported model: preprocess, run the engine, decode, score.

Engines: ``onnxruntime`` (everywhere) and ``ais_bench`` (``.om`` files, hosts with CANN).
Preprocessing is the letterbox the model was exported with, read from the file's
input shape, so the reference's separate preprocess/.bin/postprocess steps are one run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .errors import MissingDependency, UserError


class OnnxRuntimeEngine:
    def __init__(self, path):
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"{path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3 or not all(isinstance(v, int) for v in shape[2:]):
            raise UserError(f"{path}: input {inp.name} has shape {shape}; detcore needs "
                            f"N x 3 x H x W with a fixed H and W")
        self.batch = shape[0] if isinstance(shape[0], int) else None
        self.input_size = (shape[2], shape[3])

    def __call__(self, images: np.ndarray) -> dict:
        return dict(zip(self.output_names, self.session.run(None, {self.input_name: images})))


class AisBenchEngine:
    """CANN's ais_bench ``InferSession`` on an ``.om`` model."""

    def __init__(self, path, device_id: int = 0):
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError:
            raise MissingDependency("--engine ais_bench needs the ais_bench package and CANN "
                                    "(see the CANN docs for the aclruntime/ais_bench wheels); "
                                    "use --engine onnxruntime with an .onnx file here") from None
        order = Path(str(path) + ".json")
        if not order.is_file():
            raise UserError(f"{order} is missing: it lists the .om's outputs in the order "
                            f"ais_bench returns them; convert with detcore run --task export "
                            f"--format om, which writes it")
        self.output_names = json.loads(order.read_text())["outputs"]
        self.session = InferSession(device_id, str(path))
        inp = self.session.get_inputs()[0]
        self.batch, self.input_size = inp.shape[0], (inp.shape[2], inp.shape[3])

    def __call__(self, images: np.ndarray) -> dict:
        """ais_bench returns a list in the .om's output order (ATC's --out_node), read by index."""
        return dict(zip(self.output_names, self.session.infer([images])))


def decode_outputs(outputs: dict) -> list[dict]:
    """Engine outputs (the export contract: ``dets`` B x K x 5, ``labels`` B x K [, ``masks``])
    -> per-image dicts (boxes, scores, labels[, masks])."""
    if "dets" not in outputs or "labels" not in outputs:
        raise UserError(f"model outputs {sorted(outputs)} are not a detcore export "
                        f"(expected dets and labels)")
    dets, labels = outputs["dets"], outputs["labels"]
    boxes, scores = dets[..., :4], dets[..., 4]
    masks = outputs.get("masks")
    per_image = []
    for i in range(len(boxes)):
        valid = (labels[i] >= 0) & (scores[i] > 0)
        out = {"boxes": torch.from_numpy(np.ascontiguousarray(boxes[i][valid])).float(),
               "scores": torch.from_numpy(np.ascontiguousarray(scores[i][valid])).float(),
               "labels": torch.from_numpy(np.ascontiguousarray(labels[i][valid])).long()}
        if masks is not None:
            out["masks"] = torch.from_numpy(np.ascontiguousarray(masks[i][valid])).float()
        per_image.append(out)
    return per_image


ENGINES = {"onnxruntime": OnnxRuntimeEngine, "ais_bench": AisBenchEngine}


def run_offline(engine, dataset, batch_size: int, progress: bool) -> tuple[list[dict], dict]:
    """Run ``engine`` over ``dataset``; return COCO results and throughput figures."""
    from tqdm import tqdm

    from .evaluate import to_coco_results

    if engine.batch is not None and engine.batch != batch_size:
        raise UserError(f"the model was exported for batch {engine.batch}, not --batch-size "
                        f"{batch_size}; pass --batch-size {engine.batch} or export with "
                        f"--set export.dynamic_batch=true")
    if tuple(dataset.input_size) != tuple(engine.input_size):
        raise UserError(f"model input is {engine.input_size}, data prepared at {dataset.input_size}")
    results, engine_s, images_done = [], 0.0, 0
    start = time.perf_counter()
    indices = list(range(len(dataset)))
    for lo in tqdm(range(0, len(indices), batch_size), disable=not progress, desc="infer", leave=False):
        samples = [s for s in (dataset[i] for i in indices[lo:lo + batch_size]) if s is not None]
        if not samples:
            continue
        batch = np.stack([s[0].numpy() for s in samples]).astype(np.float32) / 255.0
        real = len(batch)
        if real < batch_size and engine.batch is not None:  # a static batch: pad the last one
            batch = np.concatenate([batch, np.zeros((batch_size - real, *batch.shape[1:]), np.float32)])
        t0 = time.perf_counter()
        outputs = engine(batch)
        engine_s += time.perf_counter() - t0
        images_done += real
        for out, (_, target) in zip(decode_outputs(outputs)[:real], samples):
            results.extend(to_coco_results(out, target, dataset.label_to_cat, dataset.letterbox))
    total_s = time.perf_counter() - start
    perf = {"fps": round(images_done / engine_s, 3) if engine_s else None,
            "end_to_end_fps": round(images_done / total_s, 3) if total_s else None,
            "images": images_done, "batch_size": batch_size}
    return results, perf
