"""End to end through the real CLI: train -> eval -> finetune -> predict -> export -> infer (slow lane)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detcore.result import validate_result

SMALL = ("--set", "data.input_size=[128,128]", "--set", "data.batch_size=4",
         "--set", "data.workers=0", "--set", "model.width=64", "--set", "model.stacked_convs=1",
         "--set", "eval.batch_size=4", "--set", "data.synthetic.num_train=16",
         "--set", "data.synthetic.num_val=8", "--set", "data.synthetic.min_size=96",
         "--set", "data.synthetic.max_size=160")


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fcos-cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETCORE_")}
    env.update(DETCORE_CACHE=str(cache), DETCORE_LOG="WARNING", PYTHONWARNINGS="ignore")

    def run(task, work, *args, expect=0):
        proc = subprocess.run([sys.executable, "-m", "detcore.cli", "run", "--model", "fcos",
                               "--task", task, "--work-dir", str(work), "--device", "cpu",
                               "--no-progress", *SMALL, *map(str, args)],
                              capture_output=True, text=True, timeout=900, env=env, cwd=work.parent)
        assert proc.returncode == expect, proc.stderr[-3000:]
        if expect:
            return proc
        result = json.loads((work / "result.json").read_text())
        assert validate_result(result) == [] and result["model"] == "fcos" and result["task"] == task
        return result

    return run


@pytest.mark.slow
def test_fcos_cli_end_to_end(cli, tmp_path):
    bbox_keys = {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l"}

    train = cli("train", tmp_path / "train", "--set", "train.max_steps=8",
                "--set", "train.log_interval=1", "--set", "train.warmup_fps_steps=2")
    ckpt = Path(train["artifacts"]["checkpoint"])
    assert ckpt.is_file() and train["metrics"]["steps"] == 8 and train["fps"] > 0
    assert bbox_keys <= set(train["metrics"])
    losses = [json.loads(line)["loss"] for line in
              Path(train["artifacts"]["metrics_log"]).read_text().splitlines()]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3])

    evaluated = cli("eval", tmp_path / "eval", "--weights", ckpt)
    assert {k: evaluated["metrics"][k] for k in bbox_keys} == \
        {k: train["metrics"][k] for k in bbox_keys}
    patched = cli("eval", tmp_path / "eval_patched", "--weights", ckpt, "--patches", "on")
    assert patched["artifacts"]["patches"] == ["fcos_static_postprocess"]
    assert patched["metrics"] == evaluated["metrics"]

    finetune = cli("finetune", tmp_path / "finetune", "--weights", ckpt,
                   "--set", "data.synthetic.num_classes=2", "--set", "train.max_steps=2")
    assert finetune["artifacts"]["init_weights"] == str(ckpt)
    assert bbox_keys <= set(finetune["metrics"])

    predicted = cli("predict", tmp_path / "predict", "--weights", ckpt,
                    "--set", "predict.max_images=3", "--set", "predict.score_threshold=0.0")
    assert predicted["metrics"]["images"] == 3
    assert len(list((tmp_path / "predict" / "images").glob("*.png"))) == 3

    exported = cli("export", tmp_path / "export", "--weights", ckpt,
                   "--set", "export.dynamic_batch=true")
    onnx_path = Path(exported["artifacts"]["onnx"])
    assert onnx_path.is_file() and exported["artifacts"]["onnx_outputs"] == ["dets", "labels"]
    assert exported["artifacts"]["onnx_inputs"] == {"input": [None, 3, 128, 128]}
    parity = {k: v for k, v in exported["metrics"].items() if k.startswith("parity_max_abs_diff")}
    assert set(parity) == {"parity_max_abs_diff_dets"}  # labels: matched, not subtracted
    assert all(v <= 1e-3 for v in parity.values()), parity
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [(o.name, o.shape, o.type) for o in sess.get_outputs()] == [
        ("dets", ["batch", 100, 5], "tensor(float)"), ("labels", ["batch", 100], "tensor(int64)")]

    if shutil.which("atc") is None:  # the .om step fails in one line without CANN
        proc = cli("export", tmp_path / "export_om", "--weights", ckpt, "--format", "om", expect=3)
        assert len(proc.stderr.strip().splitlines()) == 1 and "atc" in proc.stderr

    for batch in (1, 2):
        infer = cli("infer", tmp_path / f"infer_bs{batch}", "--weights", onnx_path,
                    "--batch-size", batch)
        assert infer["artifacts"]["batch_size"] == batch and infer["fps"] > 0
        for key in bbox_keys:  # the exported graph scores as the PyTorch model does
            assert infer["metrics"][key] == pytest.approx(evaluated["metrics"][key], abs=2e-3), key
