"""Core's trainer on a tiny real detector: learning, resume, AMP, loss scale, NaN, checkpoints."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch

from detcore.checkpoint import load_checkpoint, save_checkpoint
from detcore.errors import UserError
from detcore.runner import RunOptions, run
from detcore.train.trainer import Trainer, TrainingStopped, to_device

from .conftest import REPO


def train(registry, tiny_data, work, *sets, task="train", **kw):
    opts = RunOptions(model="tiny-fcos", task=task, data=str(tiny_data), device="cpu",
                      work_dir=str(work), sets=("train.deterministic=true", *sets),
                      progress=False, **kw)
    return run(registry, opts)


def weights(work):
    return load_checkpoint(work / "checkpoints" / "last.pt")["model"]


def log_losses(work):
    return [json.loads(l)["loss"] for l in (work / "metrics.jsonl").read_text().splitlines()]


def test_loss_goes_down(registry, tiny_data, tmp_path):
    result = train(registry, tiny_data, tmp_path, "train.epochs=4", "train.log_interval=1",
                   "train.eval_after=false")
    losses = log_losses(tmp_path)
    assert result["metrics"]["steps"] == 24 == len(losses)
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4


def test_interrupt_then_resume_equals_uninterrupted(registry, tiny_data, tmp_path, monkeypatch):
    common = ("train.epochs=2", "train.eval_after=false")
    train(registry, tiny_data, tmp_path / "straight", *common)
    reference = weights(tmp_path / "straight")

    original = Trainer.step

    def interrupt_at_8(self, batch):
        out = original(self, batch)
        if self.global_step == 7:  # becomes step 8 after this call: mid-epoch 2
            self.stop_requested = True
        return out

    monkeypatch.setattr(Trainer, "step", interrupt_at_8)
    with pytest.raises(TrainingStopped, match="interrupted at step 8.*--resume"):
        train(registry, tiny_data, tmp_path / "cut", *common)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]) == (1, 2, 8)
    monkeypatch.setattr(Trainer, "step", original)
    result = train(registry, tiny_data, tmp_path / "cut", *common, resume=True)
    assert result["metrics"]["steps"] == 12
    resumed = weights(tmp_path / "cut")
    for key, value in reference.items():
        assert torch.equal(value, resumed[key]), key


def test_resume_without_checkpoint_is_clear(registry, tiny_data, tmp_path):
    with pytest.raises(UserError, match="--resume: no checkpoint"):
        train(registry, tiny_data, tmp_path, resume=True)


@pytest.mark.parametrize("amp, scale", [("bf16", "dynamic"), ("fp16", "dynamic"), ("fp16", "128")])
def test_amp_paths_train(registry, tiny_data, tmp_path, amp, scale):
    result = train(registry, tiny_data, tmp_path, "train.max_steps=3", "train.eval_after=false",
                   amp=amp, loss_scale=scale)
    assert result["metrics"]["steps"] == 3
    assert all(l == l for l in log_losses(tmp_path))  # finite, not NaN


def test_nan_with_dynamic_scale_skips_the_step(registry, tiny_data, tmp_path):
    result = train(registry, tiny_data, tmp_path, "train.max_steps=5", "train.eval_after=false",
                   "model.nan_at_step=3", amp="fp16", loss_scale="dynamic")
    assert result["metrics"]["steps"] == 5 and result["metrics"]["skipped_steps"] == 1


def test_precise_bn_recomputes_the_statistics_of_the_final_weights(registry, tiny_data, tmp_path):
    """train.precise_bn: the saved BatchNorm statistics are those of the final weights over the
    first training images (torch's update_bn), not training's lagging running averages."""
    from torch.optim.swa_utils import update_bn

    from detcore.config import resolve_config
    from detcore.data.coco import CocoDetection, collate

    sets = ("train.max_steps=3", "train.eval_after=false", "train.precise_bn_batch=4")
    train(registry, tiny_data, tmp_path / "plain", *sets)
    plain = weights(tmp_path / "plain")
    train(registry, tiny_data, tmp_path / "pbn", *sets, "train.precise_bn=8")
    saved = weights(tmp_path / "pbn")
    spec = registry.get_model("tiny-fcos")
    _, cfg = resolve_config(spec, spec.default_config, [])
    model = registry.hooks_for(spec).build_model(spec=spec, config=cfg, num_classes=3)
    model.load_state_dict(saved)
    data = CocoDetection(tiny_data, "train", cfg["data"]["input_size"])
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(8)), batch_size=4,
                                         collate_fn=collate)

    class Forward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            with torch.no_grad():
                self.model(*to_device(batch, torch.device("cpu")))

    update_bn(([b] for b in loader), Forward())
    stats = [k for k in saved if k.endswith(("running_mean", "running_var"))]
    assert stats
    for key in stats:
        assert torch.allclose(model.state_dict()[key], saved[key], atol=1e-5), key
        assert not torch.allclose(plain[key], saved[key], atol=1e-5), key  # recomputed, not kept


def test_a_skipped_first_amp_step_raises_no_scheduler_warning(registry, tiny_data, tmp_path):
    """GradScaler skipping step 1 (as on a GPU while it finds its scale) is normal: the run's
    output carries no torch warning about the schedule stepping before the optimizer."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(registry, tiny_data, tmp_path, "train.max_steps=2", "train.eval_after=false",
                       "model.nan_at_step=1", amp="fp16", loss_scale="dynamic")
    assert result["metrics"]["skipped_steps"] == 1
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


@pytest.mark.parametrize("amp, scale", [("fp16", "64"), ("off", None)])
def test_nan_without_dynamic_scale_stops_and_keeps_checkpoint(registry, tiny_data, tmp_path, amp, scale):
    with pytest.raises(TrainingStopped, match=r"non-finite .* at step 8 .*last good checkpoint"):
        train(registry, tiny_data, tmp_path, "train.epochs=2", "model.nan_at_step=8",
              amp=amp, loss_scale=scale)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["global_step"] == 6


def test_finetune_to_another_class_count_and_mismatch_errors(registry, tiny_data, tmp_path, cache_dir):
    from detcore.data.synthetic import SynthSpec, ensure_synthetic

    train(registry, tiny_data, tmp_path / "base", "train.max_steps=2", "train.eval_after=false")
    ckpt = tmp_path / "base" / "checkpoints" / "last.pt"
    five = ensure_synthetic(SynthSpec(num_train=24, num_val=8, num_classes=5, min_size=96,
                                      max_size=128), cache_dir)
    opts = dict(model="tiny-fcos", device="cpu", data=str(five), weights=str(ckpt), progress=False)
    with pytest.raises(UserError, match="3 classes but the data has 5.*finetune"):
        run(registry, RunOptions(task="eval", work_dir=str(tmp_path / "ev"), **opts))
    result = run(registry, RunOptions(task="finetune", work_dir=str(tmp_path / "ft"),
                                      sets=("train.max_steps=2",), **opts))
    assert result["metrics"]["steps"] == 2
    assert load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")["num_classes"] == 5


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def disk_full(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device.*previous last.pt is intact"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_sigkill_while_writing_keeps_previous_checkpoint(tmp_path):
    code = f"""
import os, signal, torch, sys
sys.path.insert(0, {str(REPO)!r})
from detcore.checkpoint import save_checkpoint
save_checkpoint({{"step": 1}}, {str(tmp_path / 'last.pt')!r})
real = torch.save
def dying(obj, fh, *a, **k):
    fh.write(b"x" * 4096); fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying
save_checkpoint({{"step": 2}}, {str(tmp_path / 'last.pt')!r})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_checkpoint_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_foreign_checkpoints(tmp_path):
    save_checkpoint({"w": torch.ones(100)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "text.pt")
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / "pickle.pt")


def test_no_loader_workers_when_cpu_ranks_fill_the_cores(registry, tiny_data, tmp_path, monkeypatch):
    from detcore.runner import prepare

    opts = RunOptions(model="tiny-fcos", task="train", data=str(tiny_data), device="cpu",
                      work_dir=str(tmp_path), sets=("data.workers=2",), progress=False)
    ctx = prepare(registry, opts)
    data = ctx.dataset("train", train=True)
    model = ctx.build_model(data.num_classes)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert Trainer(ctx, model, data).loader.num_workers == 2  # one rank: loader workers help
    ctx.local_world_size = 2  # two ranks on two cores
    assert Trainer(ctx, model, data).loader.num_workers == 0


def test_optimizer_that_refuses_set_to_none_trains(registry, tiny_data, tmp_path, monkeypatch):
    """torch_npu's fused optimizers (NpuFusedSGD) raise on ``zero_grad(set_to_none=True)``;
    core's step must not pass it (the first NPU step with ``--patches auto`` crashed)."""
    class FusedLike(torch.optim.SGD):
        def zero_grad(self, set_to_none: bool = False):
            if set_to_none:
                raise ValueError("set_to_none is not supported in fused optimizers")
            super().zero_grad(set_to_none=False)

    monkeypatch.setattr("detcore.train.trainer.default_optimizer",
                        lambda model, cfg, world_size: FusedLike(model.parameters(), lr=1e-3))
    result = train(registry, tiny_data, tmp_path, "train.max_steps=2", "train.eval_after=false")
    assert result["metrics"]["steps"] == 2


def test_clock_reads_wait_for_npu_and_cuda_kernels(monkeypatch):
    from types import SimpleNamespace

    from detcore.devices import synchronize

    calls = []
    monkeypatch.setattr(torch, "npu", SimpleNamespace(synchronize=calls.append), raising=False)
    monkeypatch.setattr(torch.cuda, "synchronize", calls.append)
    for kind in ("npu", "cuda", "cpu"):
        synchronize(SimpleNamespace(type=kind))
    assert [d.type for d in calls] == ["npu", "cuda"]


def test_time_cap_says_the_schedule_was_cut(registry, tiny_data, tmp_path, caplog):
    result = train(registry, tiny_data, tmp_path, "train.epochs=50", "train.max_minutes=0.0001",
                   "train.eval_after=false")
    cut = result["artifacts"]["schedule_cut"]
    assert cut["reason"] == "train.max_minutes" and cut["at_step"] == result["metrics"]["steps"]
    assert cut["planned_steps"] == 50 * 6 > cut["at_step"]
    assert any("schedule, sized for 300 steps, was cut" in r.getMessage() for r in caplog.records)


def test_scheduler_keys_are_core_keys_and_settable(registry, tiny_data, tmp_path):
    result = train(registry, tiny_data, tmp_path, "scheduler.name=step", "scheduler.milestones=[0.5]",
                   "scheduler.gamma=0.5", "scheduler.warmup_ratio=0.1", "train.max_steps=2",
                   "train.eval_after=false")
    assert result["metrics"]["steps"] == 2
