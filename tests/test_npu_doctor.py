"""``detcore doctor`` on a simulated NPU host: what a real one shows (slow; the npu_sim lane)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detcore.testing.npu_device import fake_cann_home, simulated_host_env

pytestmark = [pytest.mark.slow, pytest.mark.npu_sim]


def test_doctor_on_a_simulated_npu_host(tmp_path):
    """torch_npu's and CANN's versions, the NPUs, whether mmcv was built with NPU kernels (asked
    of mmcv's extension, not inferred from torch_npu being installed), the patches ``--patches
    auto`` applies to each plugin's models and the torch_npu ops they call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETCORE_")}
    env = simulated_host_env(fake_cann_home(tmp_path / "cann", version="8.0.RC3"), env)
    proc = subprocess.run([sys.executable, "-m", "detcore.cli", "doctor", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {row["name"].strip(): row for row in json.loads(proc.stdout)}
    assert rows["torch_npu"]["status"] == "ok"
    assert rows["torch_npu"]["detail"].startswith("0.0.0+detcore.npu_sim: torch_npu with CANN at")
    assert rows["CANN"]["detail"] == f"{tmp_path / 'cann'} (version 8.0.RC3)"
    assert rows["npu devices"]["detail"].startswith("8 x ")
    assert rows["auto device"]["detail"] == "npu"
    for plugin in ("fcos", "solov2"):  # mmcv here is a CPU build, whatever torch_npu says
        detail = rows[f"{plugin}: mmcv compiled ops"]["detail"]
        assert detail.startswith("mmcv 2.1.0 ops compiled for cpu;") and "no NPU kernels" in detail
    assert rows["efficientdet: auto patches on npu"]["detail"] == (
        "efficientdet-d0 (and 7 more): npu_one_hot, fixed_size_nms, fpn_combine_stack, fused_sgd")
    assert rows["efficientdet: torch_npu ops"]["detail"] == (
        "all present (npu_nms_v4, npu_one_hot, optim.NpuFusedSGD)")
    assert rows["fcos: auto patches on npu"]["detail"] == "fcos: fcos_static_postprocess"
    assert rows["fcos: torch_npu ops"]["detail"] == "all present (npu_batch_nms)"
    assert rows["solov2: auto patches on npu"]["detail"] == (
        "solov2 (and 1 more): static_targets, fixed_matrix_nms")
    assert rows["retinanet: auto patches on npu"]["detail"] == "retinanet: float32-focal-loss"
