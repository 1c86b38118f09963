"""Catalogue, weights and checkpoints: nothing loads that is not what it claims to be."""
from __future__ import annotations

import os

import pytest
import torch

from .conftest import assert_user_error


def evaluate(run_cli, weights, tmp_path, model="tiny-fcos", *extra):
    return run_cli("run", "--model", model, "--task", "eval", "--weights", weights,
                   "--work-dir", tmp_path / "ev", *extra)


def test_missing_weights_file(run_cli, tmp_path):
    assert_user_error(evaluate(run_cli, tmp_path / "nope.pt", tmp_path), 2, "does not exist")


def test_truncated_checkpoint(run_cli, trained, tmp_path):
    data = (trained[0] / "checkpoints" / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    assert_user_error(evaluate(run_cli, tmp_path / "cut.pt", tmp_path), 2, "truncated")


def test_random_bytes_checkpoint(run_cli, tmp_path):
    (tmp_path / "noise.pt").write_bytes(os.urandom(4096))
    assert_user_error(evaluate(run_cli, tmp_path / "noise.pt", tmp_path), 2,
                      "truncated or not a PyTorch checkpoint")


def test_checkpoint_of_another_model(run_cli, trained, tmp_path):
    assert_user_error(evaluate(run_cli, trained[0] / "checkpoints" / "last.pt", tmp_path,
                               "tiny-fcos-wide"), 2, "checkpoint of model 'tiny-fcos'",
                      "not 'tiny-fcos-wide'")


def test_foreign_state_dict(run_cli, tmp_path):
    torch.save({"state_dict": {"layer.weight": torch.ones(2)}}, tmp_path / "other.pt")
    assert_user_error(evaluate(run_cli, tmp_path / "other.pt", tmp_path), 2,
                      "has no weights matching this model")


def test_class_count_mismatch_without_finetune(run_cli, trained, tmp_path, cache_dir):
    from detcore.data.synthetic import SynthSpec, ensure_synthetic

    five = ensure_synthetic(SynthSpec(num_train=8, num_val=4, num_classes=5, min_size=96,
                                      max_size=128), cache_dir)
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "eval", "--data", five, "--weights",
                   trained[0] / "checkpoints" / "last.pt", "--work-dir", tmp_path)
    assert_user_error(proc, 2, "trained for 3 classes but the data has 5", "--task finetune")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_checkpoint_is_refused(run_cli, tmp_path):
    torch.save({"format": "detcore-checkpoint", "model": Exploit()}, tmp_path / "evil.pt")
    proc = evaluate(run_cli, tmp_path / "evil.pt", tmp_path)
    assert_user_error(proc, 2, "was refused", "posix.system", "weights_only=True")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "ev" / "PWNED").exists()


def test_partial_checkpoint_fails_naming_the_keys(run_cli, trained, tmp_path):
    ckpt = torch.load(trained[0] / "checkpoints" / "last.pt", weights_only=True)
    keys = sorted(ckpt["model"])
    dropped = keys[: int(0.4 * len(keys))]  # 40% of the model missing: never a silent partial load
    for key in dropped:
        del ckpt["model"][key]
    ckpt["ema"] = None
    ckpt["model"]["head.not_in_the_model"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "partial.pt")
    line = assert_user_error(evaluate(run_cli, tmp_path / "partial.pt", tmp_path), 2,
                             f"{len(dropped)} of {len(keys)} tensors missing (first: ",
                             "1 unexpected (first: head.not_in_the_model)")
    assert line.split("(first: ")[1].split(",")[0] in dropped


def test_timm_checkpoint_saver_args_are_allowed_other_globals_refused(tmp_path):
    """effdet's train.py saves through timm's CheckpointSaver, which stores its argparse args."""
    import argparse

    from detcore.checkpoint import load_checkpoint
    from detcore.errors import UserError

    torch.save({"state_dict": {"w": torch.ones(1)}, "args": argparse.Namespace(lr=0.1)},
               tmp_path / "timm.pth.tar")
    assert load_checkpoint(tmp_path / "timm.pth.tar")["args"].lr == 0.1
    torch.save({"model": Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="was refused"):
        load_checkpoint(tmp_path / "evil.pt", ("argparse.Namespace",))
    assert not (tmp_path / "PWNED").exists()


def test_plain_state_dict_exports_with_the_data_class_count(run_cli, trained, tmp_path, tiny_data):
    """An upstream checkpoint records no class count: --data gives it (export, predict)."""
    plain = torch.load(trained[0] / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.save(plain, tmp_path / "plain.pt")
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "export", "--weights",
                   tmp_path / "plain.pt", "--work-dir", tmp_path / "ex")
    assert_user_error(proc, 2, "does not record its class count", "--data")
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "export", "--weights",
                   tmp_path / "plain.pt", "--data", tiny_data, "--work-dir", tmp_path / "ex")
    assert proc.returncode == 0, proc.stderr[-2000:]
