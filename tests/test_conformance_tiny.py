"""Core's own conformance suite, run against the tiny test plugin."""
import pytest

from detcore.testing import ConformanceSuite


@pytest.fixture(autouse=True, scope="module")
def _tiny_plugin(request):
    mp = pytest.MonkeyPatch()
    mp.setenv("DETCORE_PLUGIN_MODULES", "tests.plugins.tiny")
    yield
    mp.undo()


class TestTinyConformance(ConformanceSuite):
    model = "tiny-fcos"
    overrides = ("data.workers=0",)
    synthetic = {"num_train": 16, "num_val": 4, "min_size": 96, "max_size": 128}
    # tests.plugins.tiny leaves it undeclared on purpose: core's tests see how such a key behaves
    undeclared_keys = ("model.nan_at_step",)
