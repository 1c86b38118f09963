"""retinanet passes detcore's conformance suite."""
from detcore.testing import ConformanceSuite


class TestRetinanetConformance(ConformanceSuite):
    model = "retinanet"
    overrides = ("data.input_size=[128,128]", "data.batch_size=4", "data.workers=0")
