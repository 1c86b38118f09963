"""The conformance suite against the naive Faster R-CNN wrapper (tests.plugins.fasterrcnn).

Not collected by default (no ``test_`` prefix): tests/test_conformance_fasterrcnn.py runs it
in a subprocess and checks that it fails, and how.
"""
from detcore.testing import ConformanceSuite


class TestNaiveFasterRCNN(ConformanceSuite):
    """As written from the guide: torchvision's resize to 800 and its background class 0."""

    model = "fasterrcnn-naive"
    overrides = ("data.workers=0",)


class TestNaiveFasterRCNNAtCanvasSize(TestNaiveFasterRCNN):
    """The resize fixed, the background class not: the learning check must still fail."""

    overrides = ("data.workers=0", "model.min_size=192", "model.max_size=192")
