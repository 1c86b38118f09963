"""Which classes a checkpoint records: detcore's own, mmengine's and mmcv 1.x's layouts."""
from __future__ import annotations

import pytest

from detcore.checkpoint import FORMAT, recorded_classes


@pytest.mark.parametrize("ckpt, expected", [
    ({"format": FORMAT, "classes": ["a", "b"], "num_classes": 2}, ["a", "b"]),
    ({"format": FORMAT, "num_classes": 4}, 4),
    # mmengine (mmdet 3.x tools/train.py): Runner writes the dataset's metainfo
    ({"meta": {"dataset_meta": {"classes": ("cat", "dog", "bird")}}, "state_dict": {}},
     ["cat", "dog", "bird"]),
    # mmcv 1.x (mmdet 2.x): CLASSES in meta; a single-class dataset may store a string
    ({"meta": {"CLASSES": ("person", "car")}, "state_dict": {}}, ["person", "car"]),
    ({"meta": {"CLASSES": "balloon"}, "state_dict": {}}, ["balloon"]),
    # plain state dicts and timm/effdet train.py checkpoints record no classes
    ({"conv.weight": 0}, None),
    ({"state_dict": {}, "args": None, "epoch": 3}, None),
    ({"meta": {"epoch": 1}, "state_dict": {}}, None),
])
def test_recorded_classes(ckpt, expected):
    assert recorded_classes(ckpt) == expected
