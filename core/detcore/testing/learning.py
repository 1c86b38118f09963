"""The conformance suite's learning checks: a set any detector can memorise, the loop that
memorises it, and diagnoses that name the usual wrapper mistakes.

Why: a wrapper can pass every structural check (it builds, its losses are finite and fall, its
export has the right shapes) and still be wrong in ways only a trained model shows. Two are
easy to make with an upstream detector and invisible without training:

* class 0 trained as the upstream's background (torchvision's two-stage detectors reserve label
  0), so it is never predicted and every other label still looks plausible;
* the input resized inside the model (torchvision's ``GeneralizedRCNNTransform`` grows a
  128-pixel canvas to ``min_size=800``): the model runs at a size the config does not say, and a
  wrapper that does not undo the resize returns boxes in the wrong coordinates.

So the suite trains on two images it draws itself (one object of each class, the class being
the colour) until the model has memorised them, then compares what it predicts with what it
was taught: 0-based labels, boxes in canvas pixels.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

#: Classes in the learning check's images (the suite builds its models with this many).
CLASSES = 3
#: Largest input a convolution may see, as a multiple of the canvas side: room for padding
#: to a stride multiple (torchvision's ``size_divisible``), none for a resize.
MAX_SCALE = 1.5
#: The score a memorised object's detection must reach (``predict.score_threshold``'s default).
MIN_SCORE = 0.3
#: Object colours (RGB in [0, 1]), one per class: the only thing telling the classes apart.
PALETTE = ((0.95, 0.15, 0.15), (0.15, 0.9, 0.15), (0.2, 0.35, 0.95), (0.95, 0.9, 0.1),
           (0.9, 0.2, 0.9), (0.1, 0.9, 0.9))
#: (width, height) of class k's box as fractions of its grid cell: sizes and aspect ratios
#: differ, so a box of the wrong class or a scaled box cannot match by accident.
SHAPES = ((0.75, 0.5), (0.5, 0.8), (0.8, 0.8))


class Memorised(NamedTuple):
    """A model after :func:`memorise`, with what it was taught and what it predicts (eval)."""

    model: Any
    config: dict
    images: Any
    targets: list
    losses: list
    outputs: list


def memorisable_batch(input_size, num_classes: int, task_type: str = "bbox"):
    """Two canvas-sized images, each with one object per class: ``(images, targets)``.

    Objects are filled rectangles in their class's colour on dim noise, one per cell of a grid
    over the canvas; the second image is the first mirrored left to right. Targets are in core's
    format (xyxy canvas pixels, 0-based labels, masks for ``segm``), as the data loader gives.
    """
    import torch

    if not 1 <= num_classes <= len(PALETTE):
        raise ValueError(f"num_classes must be 1..{len(PALETTE)}")
    h, w = (int(v) for v in input_size)
    cols = math.ceil(math.sqrt(num_classes))
    rows = math.ceil(num_classes / cols)
    cell_h, cell_w = h / rows, w / cols
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 0.2
    boxes, masks = [], torch.zeros(num_classes, h, w, dtype=torch.uint8)
    for k in range(num_classes):
        fw, fh = SHAPES[k % len(SHAPES)]
        bw, bh = round(cell_w * fw), round(cell_h * fh)
        x1 = round((k % cols) * cell_w + (cell_w - bw) / 2)
        y1 = round((k // cols) * cell_h + (cell_h - bh) / 2)
        boxes.append([x1, y1, x1 + bw, y1 + bh])
        image[:, y1:y1 + bh, x1:x1 + bw] = torch.tensor(PALETTE[k])[:, None, None]
        masks[k, y1:y1 + bh, x1:x1 + bw] = 1
    boxes = torch.tensor(boxes, dtype=torch.float32)
    mirrored = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    images = torch.stack([image, image.flip(-1)])
    targets = []
    for i, (b, m) in enumerate(((boxes, masks), (mirrored, masks.flip(-1)))):
        target = {"boxes": b, "labels": torch.arange(num_classes, dtype=torch.int64),
                  "image_id": i + 1, "scale": 1.0, "orig_size": (h, w)}
        if task_type == "segm":
            target["masks"] = m.contiguous()
        targets.append(target)
    return images, targets


def memorise(model, images, targets, steps: int, lr: float) -> list[float]:
    """Train ``model`` on the one batch for ``steps`` steps; return the summed loss of each.

    The check is about the model's contract, not its training recipe, so it uses one recipe
    that memorises quickly: AdamW peaking at ``lr`` after a linear warm-up over the first
    quarter of the steps (full-size first steps can throw an untrained model off), then a
    cosine decay to zero that settles the weights (a two-stage detector samples its proposals
    at random, so its loss stays noisy at a constant rate), gradients clipped to norm 10.
    """
    import torch

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 4)

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    losses = []
    for _ in range(steps):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    _settle_batch_norm(model, images, targets)
    return losses


def _settle_batch_norm(model, images, targets) -> None:
    """Make every BatchNorm's running statistics exactly those of the memorised batch.

    Training normalises with the batch's own statistics, eval with running averages, which a
    few dozen steps at a small momentum (EfficientDet's 0.01) leave near their initial values:
    the memorised model would predict nothing in eval mode for a reason that is not the
    wrapper's. A cumulative average over one more pass is not enough either: its variance is
    unbiased, twice the batch's on EfficientDet's 1 x 1 P7 map with two images. So one more
    training-mode pass (no weight changes) records each BatchNorm's inputs, and their mean and
    biased variance (over every call of the module) become its running statistics.
    """
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    sums = {}

    def record(module, args):
        x = args[0].detach().double().transpose(0, 1).reshape(args[0].shape[1], -1)
        total, squares, count = sums.get(module, (0.0, 0.0, 0))
        sums[module] = (total + x.sum(1), squares + (x * x).sum(1), count + x.shape[1])

    handles = [m.register_forward_pre_hook(record) for m in norms]
    try:
        with torch.no_grad():
            model.train()(images, targets)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for norm, (total, squares, count) in sums.items():
            mean = total / count
            norm.running_mean.copy_(mean)
            norm.running_var.copy_((squares / count - mean * mean).clamp(min=0))


def mistaught(outputs, targets, num_classes: int, tolerance: float) -> list[str]:
    """What the memorised model gets wrong, each as a sentence naming the likely cause.

    Each taught object must come back: a prediction of its class within ``tolerance`` canvas
    pixels of its box (every coordinate) scoring at least :data:`MIN_SCORE`. Extra boxes are
    not held against the model (a detector memorising two images in a few dozen steps may also
    give a confident stray box, e.g. from an anchor its loss ignores); the labels and
    coordinates of what it finds are what the check is about.
    """
    import torch

    problems = []
    predicted = torch.cat([o["labels"].reshape(-1) for o in outputs]).unique().tolist()
    outside = [int(v) for v in predicted if not 0 <= v < num_classes]
    if outside:
        problems.append(f"labels {outside} are outside [0, {num_classes}): labels must be the "
                        f"0-based ids trained (an upstream counting from 1 needs labels - 1)")
    for k in range(num_classes):
        if k not in predicted:
            hint = (": is class 0 reserved for background? (torchvision's two-stage detectors "
                    "use label 0 for background: train with labels + 1, return labels - 1)"
                    if k == 0 else "")
            problems.append(f"class {k} is never predicted{hint}")
    missed = []  # (taught box, the class's best-scoring box) for each object not found
    for out, target in zip(outputs, targets):
        for k, box in zip(target["labels"].tolist(), target["boxes"].float()):
            mine = out["labels"] == k
            if not mine.any():
                continue
            boxes, scores = out["boxes"][mine].float(), out["scores"][mine].float()
            error = (boxes - box).abs().amax(1)
            if not bool(((error <= tolerance) & (scores >= MIN_SCORE)).any()):
                missed.append((box, boxes[scores.argmax()]))
    if missed:
        taught, found = (torch.stack(b) for b in zip(*missed))
        # least-squares factor through the origin: ~1 for a misplaced box, ~s for a scaled one
        factor = float((found * taught).sum() / (taught * taught).sum())
        error = (found - taught).abs().amax(1)
        worst = int(error.argmax())
        where = (f"{len(missed)} taught object(s) not found within {tolerance:g} px, e.g. a box "
                 f"taught at {_fmt(taught[worst])} comes back at {_fmt(found[worst])}")
        scaled = factor > 0.1 and bool(((found - factor * taught).abs() <= tolerance * factor).all())
        if scaled and abs(math.log(factor)) > math.log(1.25):
            problems.append(f"boxes off by a factor ~{factor:.2g}: does the model resize its "
                            f"input internally? Boxes must be in canvas pixels; {where}")
        else:
            problems.append(f"boxes are not where they were taught: {where}")
    return problems


def largest_feature_scale(model, images) -> float:
    """How much larger than the canvas the largest input a convolution sees is (eval forward).

    A detector's convolutions see the canvas or less (its stem, then strided features); a
    factor well above 1 means the model resizes its input internally, so it runs at a size the
    config does not state (and exports that resize).
    """
    import torch
    from torch import nn

    seen = []

    def record(_module, args):
        if args and torch.is_tensor(args[0]) and args[0].dim() == 4:
            seen.append(tuple(args[0].shape[-2:]))

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_pre_hook(record) for m in convs]
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()
    h, w = images.shape[-2:]
    return max((max(sh / h, sw / w) for sh, sw in seen), default=1.0)


def resize_problem(model, images) -> str | None:
    """The sentence saying the model resizes its input internally, or ``None``."""
    scale = largest_feature_scale(model, images)
    if scale <= MAX_SCALE:
        return None
    h, w = images.shape[-2:]
    return (f"the model's convolutions see inputs up to {scale:.3g}x the {h} x {w} canvas: does "
            f"the model resize its input internally? It must run at config data.input_size "
            f"(torchvision's detectors resize to min_size=800 unless built with min_size and "
            f"max_size set to the canvas)")


def _fmt(box) -> str:
    return "[" + ", ".join(f"{float(v):.0f}" for v in box) + "]"
