"""retinanet passes detcore's conformance suite, and a run checks the keys it declares."""
import subprocess
import sys

from detcore.testing import ConformanceSuite


class TestRetinanetConformance(ConformanceSuite):
    model = "retinanet"
    overrides = ("data.input_size=[128,128]", "data.batch_size=4", "data.workers=0")
    # The learning check: an untrained ResNet under torchvision's frozen BatchNorm (no
    # normalisation at all) diverges at the default 1e-3; at 3e-4 it memorises in 40 steps.
    learn_lr = 3e-4


def test_a_bad_model_key_is_a_one_line_error(tmp_path):
    """configs.MODEL_KEYS is checked when a run starts: a value outside its range stops the run
    before any work, with one line naming the key and the range."""
    proc = subprocess.run([sys.executable, "-m", "detcore.cli", "run", "--model", "retinanet",
                           "--task", "train", "--set", "model.trainable_layers=9"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "detcore: error: config key model.trainable_layers=9: expected an integer in [0, 5]"]
