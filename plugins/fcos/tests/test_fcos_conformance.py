"""Core's conformance suite against model ``fcos`` (small canvas, thin head, 2 images a batch)."""
from fcos_testlib import SMALL

from detcore.testing import ConformanceSuite


class TestFcosConformance(ConformanceSuite):
    model = "fcos"
    overrides = SMALL
    train_steps = 12
    synthetic = {"num_train": 16, "num_val": 4, "min_size": 96, "max_size": 160}
