"""solov2-light passes detcore's conformance suite (a tiny width, 96 x 96, CPU)."""
from __future__ import annotations

import solov2_util as U
from detcore.testing import ConformanceSuite


class TestSolov2LightConformance(ConformanceSuite):
    model = "solov2-light"
    overrides = U.TINY
    synthetic = {"num_train": 16, "num_val": 4, "min_size": 96, "max_size": 128}
    train_steps = 12
