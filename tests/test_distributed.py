"""torchrun on CPU with gloo: 2 workers, 2 loopback nodes, sharded eval, a killed worker."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from detcore.testing.distributed import free_port

from .conftest import cli_env


def detcore(*args):
    return [sys.executable, "-m", "detcore.cli", *map(str, args)]


def worker_pids(session: int) -> list[int]:
    """The workers of a job started in its own session: the children of its torchrun
    process (torchrun starts each worker in a session of its own)."""
    agents = subprocess.run(["pgrep", "-s", str(session), "-f", "torch.distributed.run"],
                            capture_output=True, text=True).stdout.split()
    children = [subprocess.run(["pgrep", "-P", a], capture_output=True, text=True).stdout.split()
                for a in agents]
    return [int(p) for group in children for p in group]


def read(path):
    return json.loads((path / "result.json").read_text())


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, cache_dir):
    work = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run(detcore("run", "--model", "tiny-fcos", "--task", "train", "--nproc", 2,
                                  "--master-port", free_port(), "--work-dir", work, "--no-progress",
                                  "--set", "train.precise_bn=8"),
                          capture_output=True, text=True, timeout=600,
                          env={**cli_env(cache_dir), "DETCORE_LOG": "INFO"}, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # PreciseBN with 2 ranks: 4 images each, then the ranks' statistics averaged (all_reduce)
    assert "recomputed over 8 training images" in proc.stderr + proc.stdout
    return work


def test_two_workers_train(two_workers):
    result = read(two_workers)
    # 24 images, batch 4 per worker, 2 workers: 3 steps an epoch, each sample once per epoch
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 6
    log = [json.loads(l) for l in (two_workers / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6]  # rank 0 logs alone
    assert log[0]["lr"] == pytest.approx(2 * 2e-3, rel=0.05)  # lr scaled by world size


def test_two_worker_eval_equals_one_worker(two_workers, tmp_path, cache_dir):
    ckpt = two_workers / "checkpoints" / "last.pt"
    runs = {}
    for n in (1, 2):
        work = tmp_path / f"eval{n}"
        proc = subprocess.run(detcore("run", "--model", "tiny-fcos", "--task", "eval", "--weights",
                                      ckpt, "--nproc", n, "--master-port", free_port(),
                                      "--work-dir", work),
                              capture_output=True, text=True, timeout=600, env=cli_env(cache_dir))
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[n] = read(work)["metrics"]
    for key, value in runs[1].items():
        assert runs[2][key] == pytest.approx(value, abs=1e-4), key


@pytest.mark.slow
def test_two_loopback_nodes(tmp_path, cache_dir):
    port = free_port()
    env = cli_env(cache_dir)
    nodes = [subprocess.Popen(detcore("run", "--model", "tiny-fcos", "--task", "train",
                                      "--set", "train.epochs=1", "--set", "train.eval_after=false",
                                      "--nnodes", 2, "--node-rank", rank, "--master-addr",
                                      "127.0.0.1", "--master-port", port,
                                      "--work-dir", tmp_path / f"node{rank}"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for rank in (0, 1)]
    outs = [n.communicate(timeout=600) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outs]
    result = read(tmp_path / "node0")
    assert result["world_size"] == 2 and result["metrics"]["steps"] == 3
    assert not (tmp_path / "node1" / "result.json").exists()  # rank 0 writes results


@pytest.mark.slow
def test_killed_worker_ends_the_job_without_hanging(tmp_path, cache_dir):
    env = cli_env(cache_dir)
    job = subprocess.Popen(detcore("run", "--model", "tiny-fcos", "--task", "train", "--nproc", 2,
                                   "--master-port", free_port(), "--set", "train.epochs=200",
                                   "--set", "train.dist_timeout_s=30", "--work-dir", tmp_path),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           start_new_session=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline:
        time.sleep(0.5)
    victims = worker_pids(job.pid)
    assert victims, "no worker processes found"
    os.kill(victims[-1], signal.SIGKILL)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "worker job stopped" in err.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_workers_killed_then_resumed_equal_uninterrupted(tmp_path, cache_dir):
    """SIGKILL a worker mid-run, ``--resume`` with 2 workers: the same final weights."""
    import torch

    from detcore.checkpoint import load_checkpoint

    env = cli_env(cache_dir)
    args = ("--model", "tiny-fcos", "--task", "train", "--nproc", 2, "--set", "train.epochs=40",
            "--set", "train.deterministic=true", "--set", "train.eval_after=false",
            "--set", "train.dist_timeout_s=30", "--no-progress")
    straight = tmp_path / "straight"
    proc = subprocess.run(detcore("run", *args, "--master-port", free_port(), "--work-dir", straight),
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    cut = tmp_path / "cut"
    job = subprocess.Popen(detcore("run", *args, "--master-port", free_port(), "--work-dir", cut),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           start_new_session=True)
    ckpt = cut / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline:  # the epoch-1 checkpoint
        time.sleep(0.05)
    victims = worker_pids(job.pid)
    assert victims, "no worker processes found"
    os.kill(victims[-1], signal.SIGKILL)
    job.communicate(timeout=120)
    assert job.returncode != 0, "the job ended before a worker could be killed"
    killed_at = load_checkpoint(ckpt)["global_step"]
    assert 0 < killed_at < 120

    proc = subprocess.run(detcore("run", *args, "--master-port", free_port(), "--work-dir", cut,
                                  "--resume"), capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read(cut)["metrics"]["steps"] == 120
    reference = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(ckpt)["model"]
    for key, value in reference.items():
        assert torch.equal(value, resumed[key]), key
