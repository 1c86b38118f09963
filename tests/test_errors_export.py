"""Catalogue, export and offline inference."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .conftest import assert_user_error


def export(run_cli, trained, tmp_path, *extra):
    return run_cli("run", "--model", "tiny-fcos", "--task", "export", "--weights",
                   trained[0] / "checkpoints" / "last.pt", "--work-dir", tmp_path, *extra)


def identity_model(path, shape):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("dets", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["dets"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def infer(run_cli, model, tmp_path, *extra):
    return run_cli("run", "--model", "tiny-fcos", "--task", "infer", "--weights", model,
                   "--work-dir", tmp_path / "inf", *extra)


def test_unsupported_opset(run_cli, trained, tmp_path):
    # above torch's newest opset (opsets below 7 stop at the config check, test_errors_config.py)
    assert_user_error(export(run_cli, trained, tmp_path, "--set", "export.opset=99"), 2,
                      "opset 99", "export.opset=17")
    assert not list(tmp_path.glob("*.onnx*"))  # no half-written file left behind


def test_om_without_atc_keeps_the_onnx(run_cli, trained, tmp_path):
    assert_user_error(export(run_cli, trained, tmp_path, "--format", "om"), 3, "atc", "CANN")
    assert (tmp_path / "tiny-fcos.onnx").is_file()


def test_ais_bench_missing(run_cli, tmp_path):
    model = identity_model(tmp_path / "m.onnx", [1, 3, 96, 96])
    assert_user_error(infer(run_cli, model, tmp_path, "--engine", "ais_bench"), 3, "ais_bench")


def test_onnx_with_dynamic_spatial_input(run_cli, tmp_path):
    model = identity_model(tmp_path / "m.onnx", [1, 3, "h", "w"])
    assert_user_error(infer(run_cli, model, tmp_path), 2, "fixed H and W")


def test_onnx_with_wrong_channel_count(run_cli, tmp_path):
    model = identity_model(tmp_path / "m.onnx", [1, 1, 96, 96])
    assert_user_error(infer(run_cli, model, tmp_path), 2, "N x 3 x H x W")


def test_onnx_batch_differs_from_batch_size(run_cli, tmp_path):
    model = identity_model(tmp_path / "m.onnx", [2, 3, 96, 96])
    assert_user_error(infer(run_cli, model, tmp_path, "--batch-size", 4), 2,
                      "exported for batch 2", "--batch-size 2")


def test_onnx_outputs_not_a_detector(run_cli, tmp_path):
    model = identity_model(tmp_path / "m.onnx", [1, 3, 96, 96])
    proc = infer(run_cli, model, tmp_path)
    # an identity graph has an output named dets but no labels
    assert_user_error(proc, 2, "not a detcore export")


def test_not_an_onnx_file(run_cli, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    assert_user_error(infer(run_cli, tmp_path / "junk.onnx", tmp_path), 2,
                      "not a loadable ONNX model")
