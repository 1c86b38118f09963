"""``detcore run`` as a user runs it, for a plugin's end-to-end tests::

    from detcore.testing.cli import run_task

    result = run_task("my-model", "train", tmp_path / "train", "--set", "train.epochs=1")
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run_task(model: str, task: str, work: Path, *args, timeout: float = 900, env=None,
             device: str = "cpu") -> dict:
    """Run the CLI on ``device`` (CPU by default; ``npu`` with
    :func:`detcore.testing.npu_device.simulated_host_env` as ``env`` on a simulated NPU) in a
    subprocess; return its checked ``result.json`` (a failure shows the command and the end of
    its stderr)."""
    from ..result import validate_result

    cmd = [sys.executable, "-m", "detcore.cli", "run", "--model", model, "--task", task,
           "--work-dir", str(work), "--device", device, "--no-progress", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    result = json.loads((Path(work) / "result.json").read_text())
    assert validate_result(result) == [], result
    assert result["status"] == "ok" and result["model"] == model and result["task"] == task
    return result
