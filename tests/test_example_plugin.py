"""The guide's worked example, driven the way docs/writing-a-plugin.md section 9 says."""
from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.slow

SMALL = ("--set", "data.input_size=[128,128]", "--set", "data.batch_size=4", "--set",
         "train.max_steps=6", "--set", "data.synthetic.num_train=16", "--set",
         "data.synthetic.num_val=4", "--set", "data.synthetic.min_size=96", "--set",
         "data.synthetic.max_size=128")


def test_retinanet_example_train_eval_export_infer(run_cli, tmp_path, cache_dir):
    pytest.importorskip("detcore_retinanet", reason="pip install -e examples/detcore-retinanet")
    env_mod = dict(DETCORE_PLUGIN_MODULES="")
    listed = run_cli("plugins", **env_mod)
    assert "retinanet  detcore-retinanet" in listed.stdout
    for task in ("train", "eval", "export"):
        proc = run_cli("run", "--model", "retinanet", "--task", task, *SMALL, cwd=tmp_path, **env_mod)
        assert proc.returncode == 0, proc.stderr[-2000:]
    onnx = tmp_path / "work_dirs" / "retinanet" / "export" / "retinanet.onnx"
    proc = run_cli("run", "--model", "retinanet", "--task", "infer", "--weights", onnx, *SMALL,
                   cwd=tmp_path, **env_mod)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for task in ("train", "eval", "export", "infer"):
        result = json.loads((tmp_path / "work_dirs" / "retinanet" / task / "result.json").read_text())
        assert result["status"] == "ok" and result["model"] == "retinanet"
