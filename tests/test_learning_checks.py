"""The learning checks' diagnoses (detcore.testing.learning) on hand-made outputs: each wrapper
mistake is named, and a model that learnt right passes."""
from __future__ import annotations

import torch
from torch import nn

from detcore.testing.learning import (CLASSES, largest_feature_scale, memorisable_batch,
                                      memorise, mistaught, resize_problem)

SIZE = (128, 128)


def taught():
    return memorisable_batch(SIZE, CLASSES)[1]


def predicted(targets, boxes=lambda b: b, labels=lambda l: l, score=0.9):
    return [{"boxes": boxes(t["boxes"].clone()), "labels": labels(t["labels"].clone()),
             "scores": torch.full((len(t["labels"]),), score)} for t in targets]


def test_the_batch_has_one_object_of_each_class_inside_the_canvas_mirrored():
    images, targets = memorisable_batch(SIZE, CLASSES, "segm")
    assert images.shape == (2, 3, *SIZE) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images[1], images[0].flip(-1))
    for t in targets:
        assert t["labels"].tolist() == list(range(CLASSES))
        x1, y1, x2, y2 = t["boxes"].unbind(1)
        assert bool(((x1 >= 0) & (y1 >= 0) & (x2 <= SIZE[1]) & (y2 <= SIZE[0])).all())
        for box, mask in zip(t["boxes"].int().tolist(), t["masks"]):  # each mask fills its box
            assert int(mask.sum()) == (box[2] - box[0]) * (box[3] - box[1])
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in targets[0]["boxes"].tolist()]
    assert len(set(areas)) == CLASSES  # sizes differ: a box of another class cannot pass


def test_what_was_taught_passes_and_a_confident_stray_box_is_not_held_against_it():
    targets = taught()
    outputs = predicted(targets, boxes=lambda b: b + 2.0)
    for out in outputs:
        out["boxes"] = torch.cat([out["boxes"], torch.tensor([[0.0, 0.0, 128.0, 0.0]])])
        out["labels"] = torch.cat([out["labels"], torch.tensor([1])])
        out["scores"] = torch.cat([out["scores"], torch.tensor([1.0])])
    assert mistaught(outputs, targets, CLASSES, tolerance=6.0) == []


def test_class_zero_trained_as_background_is_named():
    targets = taught()
    outputs = predicted(targets)
    for out in outputs:  # torchvision's two-stage postprocess drops its background class 0
        keep = out["labels"] != 0
        out.update({k: v[keep] for k, v in out.items()})
    problems = mistaught(outputs, targets, CLASSES, tolerance=6.0)
    assert problems == ["class 0 is never predicted: is class 0 reserved for background? "
                        "(torchvision's two-stage detectors use label 0 for background: train "
                        "with labels + 1, return labels - 1)"]


def test_labels_returned_one_based_are_named():
    targets = taught()
    problems = mistaught(predicted(targets, labels=lambda l: l + 1), targets, CLASSES, 6.0)
    assert problems[0].startswith(f"labels [{CLASSES}] are outside [0, {CLASSES})")
    assert any(p.startswith("class 0 is never predicted") for p in problems)


def test_boxes_left_in_a_resized_frame_give_the_factor():
    targets = taught()
    outputs = predicted(targets, boxes=lambda b: b * 800 / 256)
    (problem,) = mistaught(outputs, targets, CLASSES, tolerance=6.0)
    assert problem.startswith("boxes off by a factor ~3.1: does the model resize its input "
                              "internally?"), problem


def test_shifted_or_weak_boxes_are_misplaced_not_scaled():
    targets = taught()
    (problem,) = mistaught(predicted(targets, boxes=lambda b: b + 10), targets, CLASSES, 6.0)
    assert problem.startswith("boxes are not where they were taught: 6 taught object(s)"), problem
    (weak,) = mistaught(predicted(targets, score=0.1), targets, CLASSES, 6.0)
    assert weak.startswith("boxes are not where they were taught"), weak
    degenerate = predicted(targets, boxes=lambda b: torch.zeros_like(b))
    assert "factor" not in mistaught(degenerate, targets, CLASSES, 6.0)[0]


class Resizing(nn.Module):
    """A model that grows its input before its first convolution, as torchvision's
    GeneralizedRCNNTransform does with min_size=800."""

    def __init__(self, size):
        super().__init__()
        self.size, self.conv = size, nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, images):
        if self.size:
            images = nn.functional.interpolate(images, size=self.size)
        return self.conv(images)


def test_an_internal_resize_is_measured_and_named():
    images = torch.rand(1, 3, *SIZE)
    assert largest_feature_scale(Resizing(None), images) == 1.0
    assert resize_problem(Resizing(None), images) is None
    assert largest_feature_scale(Resizing((800, 800)), images) == 6.25
    problem = resize_problem(Resizing((800, 800)), images)
    assert problem.startswith("the model's convolutions see inputs up to 6.25x the 128 x 128 "
                              "canvas: does the model resize its input internally?"), problem


class Pooled(nn.Module):
    """A BatchNorm on a 1 x 1 map (EfficientDet's P7 on a small canvas) at momentum 0.01."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4, momentum=0.01)

    def forward(self, images, targets=None):
        out = self.norm(nn.functional.adaptive_avg_pool2d(self.conv(images), 1))
        return {"loss": (out - 1).pow(2).mean()} if self.training else out


def test_memorising_leaves_eval_mode_normalising_as_training_did():
    images, targets = memorisable_batch(SIZE, CLASSES)
    model = Pooled()
    losses = memorise(model, images, targets, steps=8, lr=1e-2)
    assert len(losses) == 8 and losses[-1] < losses[0]
    with torch.no_grad():
        trained = model.train()(images, targets)["loss"]
        evaluated = (model.eval()(images) - 1).pow(2).mean()
    assert torch.allclose(evaluated, trained, atol=1e-5), (evaluated, trained)
    assert model.norm.momentum == 0.01
