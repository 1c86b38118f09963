"""The letterbox policy (``data.letterbox``): rounding, fill colour, and mapping boxes back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detcore.data.transforms import LetterboxPolicy, letterbox
from detcore.errors import UserError

IMAGE = (np.random.default_rng(0).random((100, 203, 3)) * 255).astype(np.uint8)
SIZE = (128, 128)


def test_core_default_rounds_pads_black_and_divides_by_the_scale():
    canvas, scale = letterbox(IMAGE, SIZE)
    assert scale == pytest.approx(128 / 203)
    assert LetterboxPolicy().resized_size(100, 203, scale) == (63, 128)  # round(63.05)
    assert canvas[63:].max() == 0
    boxes = torch.tensor([[10.0, 20.0, 100.0, 60.0]])
    back = LetterboxPolicy().to_original(boxes.clone(), (100, 203), scale)
    expected = boxes / scale  # exactly as core mapped boxes back before the policy existed
    expected[:, [0, 2]] = expected[:, [0, 2]].clamp(0, 203)
    expected[:, [1, 3]] = expected[:, [1, 3]].clamp(0, 100)
    assert torch.equal(back, expected)


def test_effdet_policy_truncates_and_pads_the_mean_colour():
    """effdet's ``ResizePad``: ``int(side * scale)`` and ``Image.new(..., fill_color)``."""
    policy = LetterboxPolicy.from_config({"letterbox": {"rounding": "floor", "fill": [124, 116, 104]}})
    image = IMAGE[:, :201]  # 100 x 201 -> 63.68 rows: round gives 64, floor 63
    canvas, scale = letterbox(image, SIZE, policy)
    assert policy.resized_size(100, 201, scale) == (63, 128)
    assert LetterboxPolicy().resized_size(100, 201, scale) == (64, 128)
    assert (canvas[63:] == np.array([124, 116, 104], np.uint8)).all()
    assert (canvas[:63] != np.array([124, 116, 104], np.uint8)).any()


def test_per_axis_rescale_maps_the_resized_image_onto_the_original_exactly():
    """mmdet's ``scale_factor`` = resized / original side per axis: the image's corners map to
    the original's corners, where the one letterbox scale is off by the rounding."""
    policy = LetterboxPolicy(rescale="per_axis")
    canvas, scale = letterbox(IMAGE, SIZE, policy)
    nh, nw = policy.resized_size(100, 203, scale)
    corner = np.array([[0.0, 0.0, nw, nh]], np.float32)
    assert np.allclose(policy.to_original(corner.copy(), (100, 203), scale), [[0, 0, 203, 100]])
    uniform = LetterboxPolicy().to_original(corner.copy(), (100, 203), scale)
    assert abs(uniform[0, 3] - 100) > 0.05  # 63 / (128/203) = 99.9
    original = np.array([[10.0, 20.0, 150.0, 90.0]], np.float32)
    roundtrip = policy.to_original(policy.to_canvas(original, (100, 203), scale), (100, 203), scale)
    assert np.allclose(roundtrip, original, atol=1e-4)


@pytest.mark.parametrize("cfg, message", [
    ({"rounding": "ceil"}, "rounding 'ceil'"),
    ({"fill": [0, 300, 0]}, "fill"),
    ({"fill": "grey"}, "fill"),
    ({"rescale": "stretch"}, "rescale 'stretch'"),
])
def test_bad_policy_is_a_user_error_naming_the_key(cfg, message):
    with pytest.raises(UserError, match=f"data.letterbox.*{message}"):
        LetterboxPolicy.from_config({"letterbox": cfg})
