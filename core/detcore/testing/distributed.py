"""Multi-worker checks a plugin's tests can call: ``--nproc 2`` and two loopback "nodes".

Each helper runs the real CLI under torchrun (gloo on CPU) and returns rank 0's
``result.json``; a failed run fails the test with the command and its stderr tail::

    from detcore.testing.distributed import train_two_workers, train_two_loopback_nodes

    @pytest.mark.slow
    def test_two_workers(tmp_path):
        assert train_two_workers("my-model", tmp_path, "--config", "tiny")["world_size"] == 2
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(model: str, work: Path, args, device: str = "cpu") -> list[str]:
    return [sys.executable, "-m", "detcore.cli", "run", "--model", model, "--task", "train",
            "--device", device, "--no-progress", "--work-dir", str(work), *map(str, args)]


def _env(base=None) -> dict:
    # one intra-op thread per worker: two workers share this machine's cores
    return {**(os.environ if base is None else base), "OMP_NUM_THREADS": "1",
            "DETCORE_LOG": "WARNING"}


def _result(work: Path) -> dict:
    return json.loads((work / "result.json").read_text())


def train_two_workers(model: str, work: Path, *args, timeout: float = 900, env=None,
                      device: str = "cpu") -> dict:
    """``detcore run --nproc 2``: two workers on this machine (on ``device``; ``env`` for the
    CLI, e.g. :func:`detcore.testing.npu_device.simulated_host_env` with ``device="npu"``)."""
    cmd = _command(model, work, ["--nproc", 2, "--master-port", free_port(), *args], device)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(env), timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    return _result(work)


def train_two_loopback_nodes(model: str, work: Path, *args, timeout: float = 900) -> dict:
    """Two launcher invocations with ``--nnodes 2`` on 127.0.0.1, one worker each, as two
    machines would run them; returns node 0's result (node 1 writes none)."""
    port = free_port()
    cmds = [_command(model, work / f"node{rank}",
                     ["--nnodes", 2, "--node-rank", rank, "--master-addr", "127.0.0.1",
                      "--master-port", port, *args]) for rank in (0, 1)]
    nodes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for c in cmds]
    try:
        outs = [n.communicate(timeout=timeout) for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    for cmd, node, (_, err) in zip(cmds, nodes, outs):
        assert node.returncode == 0, f"{' '.join(cmd)}\n{err[-3000:]}"
    assert not (work / "node1" / "result.json").exists(), "only rank 0 writes result.json"
    return _result(work / "node0")
