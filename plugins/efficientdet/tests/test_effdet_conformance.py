"""detcore's conformance suite against efficientdet-d0 (small settings)."""
from detcore.testing import ConformanceSuite


class TestEfficientDetD0Conformance(ConformanceSuite):
    model = "efficientdet-d0"
    overrides = ("data.input_size=[128,128]", "data.batch_size=2", "data.workers=0",
                 "scheduler.warmup_steps=2", "eval.batch_size=4")
    synthetic = {"num_train": 16, "num_val": 4, "min_size": 96, "max_size": 160}
