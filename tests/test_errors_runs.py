"""Catalogue, runs: nothing written is lost, whatever stops the run."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from .conftest import REPO, assert_user_error, cli_env

LONG = ("--set", "train.epochs=500", "--set", "train.eval_after=false", "--set",
        "train.log_interval=1")


def start(work, cache_dir, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "detcore.cli", "run", "--model", "tiny-fcos",
                             "--task", "train", "--work-dir", str(work), *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or cli_env(cache_dir))


def wait_for(path, timeout=120, lines=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear")


def test_output_dir_not_writable(run_cli, tmp_path):
    (tmp_path / "a-file").write_text("x")
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir",
                              tmp_path / "a-file" / "work"), 2, "cannot create work dir",
                      "--work-dir")


def test_disk_full_while_writing_checkpoint(run_cli, tmp_path, cache_dir):
    work = tmp_path / "work"
    first = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir", work,
                    "--set", "train.max_steps=3", "--set", "train.eval_after=false")
    assert first.returncode == 0, first.stderr
    before = (work / "checkpoints" / "last.pt").read_bytes()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "def _full(fd):\n    raise OSError(28, 'No space left on device')\n"
        "os.fsync = _full\n")
    env = cli_env(cache_dir)
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir", work, "--resume",
                   "--set", "train.max_steps=6", "--set", "train.eval_after=false", env=env)
    assert_user_error(proc, 2, "No space left on device", "previous last.pt is intact")
    assert (work / "checkpoints" / "last.pt").read_bytes() == before
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["last.pt"]


def test_sigint_stops_cleanly_and_resumes(tmp_path, cache_dir, run_cli):
    work = tmp_path / "work"
    job = start(work, cache_dir, *LONG)
    wait_for(work / "metrics.jsonl", lines=3)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted at step" in err and "--resume" in err
    step = torch.load(work / "checkpoints" / "last.pt", weights_only=True)["global_step"]
    assert step >= 3
    resumed = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir", work,
                      "--resume", "--set", f"train.max_steps={step + 2}", *LONG[2:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((work / "result.json").read_text())["metrics"]["steps"] == step + 2


def test_sigkill_keeps_last_checkpoint_and_resume_works(tmp_path, cache_dir, run_cli):
    work = tmp_path / "work"
    job = start(work, cache_dir, *LONG)  # 6 steps an epoch, a checkpoint each epoch
    wait_for(work / "metrics.jsonl", lines=8)
    job.kill()
    job.communicate(timeout=60)
    ckpt = torch.load(work / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["global_step"] % 6 == 0 and ckpt["global_step"] >= 6
    resumed = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir", work,
                      "--resume", "--set", f"train.max_steps={ckpt['global_step'] + 1}", *LONG[2:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(run_cli, tmp_path):
    work = tmp_path / "work"
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir", work,
                   "--set", "model.nan_at_step=8", "--set", "train.epochs=3")
    assert_user_error(proc, 2, "non-finite loss", "at step 8", "last good checkpoint")
    assert torch.load(work / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 6
    assert not (work / "result.json").exists()


def test_report_on_a_folder_without_result_json(run_cli, tmp_path):
    (tmp_path / "not-a-run").mkdir()
    assert_user_error(run_cli("report", tmp_path / "not-a-run", "--out", tmp_path / "r.html"), 2,
                      "not-a-run has no result.json", "--work-dir of a finished detcore run")
    assert not (tmp_path / "r.html").exists()
