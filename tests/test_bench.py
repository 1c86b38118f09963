"""`detcore bench --quick` produces every figure of the table, for a real model."""
from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_quick_reports_every_figure(run_cli, tmp_path):
    trained = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir", tmp_path / "t",
                      "--set", "train.max_steps=2", "--set", "train.eval_after=false")
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt = tmp_path / "t" / "checkpoints" / "last.pt"
    proc = run_cli("bench", "--models", "tiny-fcos", "--quick", "--out", tmp_path / "b",
                   "--weights", f"tiny-fcos={ckpt}", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert set(report["cli_startup_s"]) == {"detcore --help", "detcore plugins"}
    train = report["train"][0]
    assert train["detcore_fps"] > 0 and train["upstream_fps"] > 0 and train["peak_rss_mib"] > 0
    assert train["device"] == "cpu" and train["input_size"] == [128, 128] and train["batch_size"] == 2
    rows = report["infer"][0]["rows"]
    assert [r["batch"] for r in rows] == [1, 4]
    assert all(r["parity_max_abs_diff"] < 1e-3 for r in rows)
    assert train["baseline"] == "bare loop (no upstream)"  # the tiny test plugin has no upstream step
    assert report["infer"][0]["weights"] == str(ckpt)  # the formats rows score the given weights
    formats = {f["format"]: f for f in report["infer"][0]["formats"]}
    assert set(formats) == {"pytorch eager", "onnx (onnxruntime)", "om (ais_bench)"}
    assert formats["onnx (onnxruntime)"]["status"] == "verified"
    assert abs(formats["onnx (onnxruntime)"]["bbox_delta_mAP"]) <= 0.002
    assert report["coco_eval"]["pycocotools_s"] > 0
    assert "| tiny-fcos |" in (tmp_path / "b" / "bench.md").read_text()


def test_unknown_bench_model_is_one_line(run_cli, tmp_path):
    proc = run_cli("bench", "--models", "nope", "--out", tmp_path)
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr


def test_bench_weights_must_name_a_benched_model_and_a_file(run_cli, tmp_path):
    proc = run_cli("bench", "--models", "tiny-fcos", "--weights", f"tiny-fcos={tmp_path / 'no.pt'}",
                   "--out", tmp_path)
    assert proc.returncode == 2 and "expected MODEL=FILE" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
