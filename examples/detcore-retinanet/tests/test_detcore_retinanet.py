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


def test_baseline_step_follows_the_configs_clip_and_ema():
    """``baseline_train_step`` (torchvision's own loss call) makes the update the config asks
    for: with ``train.clip_grad`` the same parameters as clipping by hand, with ``train.ema``
    an EMA copy of the weights."""
    import copy

    import torch

    from detcore.config import resolve_config
    from detcore.plugins import Registry
    from detcore_retinanet.model import build

    registry = Registry()
    spec = registry.get_model("retinanet")
    _, cfg = resolve_config(spec, None, ["data.input_size=[128,128]", "train.clip_grad=0.01",
                                         "train.ema=0.5"])
    torch.manual_seed(0)
    ours = build(3, cfg).train()
    theirs = copy.deepcopy(ours)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    t = [{"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0]]), "labels": torch.tensor([1]),
          "image_id": i} for i in range(2)]
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.1)
    step = registry.hooks_for(spec).baseline_train_step(spec=spec, config=cfg, model=theirs,
                                                         optimizer=opt_b)
    loss_a = sum(ours.net(list(x), [{k: d[k] for k in ("boxes", "labels")} for d in t]).values())
    opt_a.zero_grad()
    loss_a.backward()
    torch.nn.utils.clip_grad_norm_(ours.parameters(), 0.01)
    opt_a.step()
    loss_b = step(x, t)
    assert float(loss_b) == float(loss_a.detach())
    assert max(float((a - b).detach().abs().max()) for a, b in zip(ours.parameters(),
                                                           theirs.parameters())) < 1e-6
    assert step.ema is not None and int(step.ema.n_averaged) == 1
