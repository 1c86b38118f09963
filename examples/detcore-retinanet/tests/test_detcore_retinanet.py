"""retinanet passes detcore's conformance suite."""
from detcore.testing import ConformanceSuite


class TestRetinanetConformance(ConformanceSuite):
    model = "retinanet"
    overrides = ("data.input_size=[128,128]", "data.batch_size=4", "data.workers=0")
    # The learning check: an untrained ResNet under torchvision's frozen BatchNorm (no
    # normalisation at all) diverges at the default 1e-3; at 3e-4 it memorises in 40 steps.
    learn_lr = 3e-4
