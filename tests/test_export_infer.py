"""Export to ONNX, parity with onnxruntime, offline inference, predict: through the real CLI."""
from __future__ import annotations

import json

import onnx
import pytest

from detcore.result import validate_result


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory, cache_dir):
    import subprocess
    import sys

    from .conftest import cli_env

    work, _ = trained
    out = tmp_path_factory.mktemp("export")
    proc = subprocess.run([sys.executable, "-m", "detcore.cli", "run", "--model", "tiny-fcos",
                           "--task", "export", "--weights", str(work / "checkpoints" / "last.pt"),
                           "--work-dir", str(out), "--batch-size", "2"],
                          capture_output=True, text=True, env=cli_env(cache_dir), cwd=out)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "result.json").read_text())


def test_export_contract_and_parity(exported):
    out, result = exported
    assert validate_result(result) == []
    model = onnx.load(result["artifacts"]["onnx"])
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert outputs == {"dets": [2, 100, 5], "labels": [2, 100]}
    assert result["metrics"]["parity_max_abs_diff_dets"] < 1e-3
    assert "parity_max_abs_diff_labels" not in result["metrics"]  # labels match by construction
    assert result["metrics"]["parity_unmatched_above_floor"] == 0


def test_infer_onnxruntime_matches_pytorch_eval(exported, trained, run_cli, tmp_path):
    out, result = exported
    work, _ = trained
    infer = run_cli("run", "--model", "tiny-fcos", "--task", "infer", "--weights",
                    result["artifacts"]["onnx"], "--batch-size", 2, "--work-dir", tmp_path / "i")
    assert infer.returncode == 0, infer.stderr
    ev = run_cli("run", "--model", "tiny-fcos", "--task", "eval", "--weights",
                 work / "checkpoints" / "last.pt", "--work-dir", tmp_path / "e")
    assert ev.returncode == 0, ev.stderr
    got = json.loads((tmp_path / "i" / "result.json").read_text())
    ref = json.loads((tmp_path / "e" / "result.json").read_text())
    assert got["fps"] > 0
    assert got["metrics"]["bbox_mAP"] == pytest.approx(ref["metrics"]["bbox_mAP"], abs=2e-3)


def test_infer_with_wrong_batch_is_one_line(exported, run_cli, tmp_path):
    _, result = exported
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "infer", "--weights",
                   result["artifacts"]["onnx"], "--batch-size", 3, "--work-dir", tmp_path)
    assert proc.returncode == 2 and "exported for batch 2" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_infer_with_missing_engine_tools(exported, run_cli, tmp_path):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "infer", "--engine", "ais_bench",
                   "--weights", exported[1]["artifacts"]["onnx"], "--work-dir", tmp_path)
    assert proc.returncode == 3 and "ais_bench" in proc.stderr and "Traceback" not in proc.stderr


def test_export_om_without_atc_keeps_onnx(trained, run_cli, tmp_path):
    work, _ = trained
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "export", "--format", "om",
                   "--weights", work / "checkpoints" / "last.pt", "--work-dir", tmp_path)
    assert proc.returncode == 3 and "atc" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "tiny-fcos.onnx").is_file()


def test_predict_writes_pngs(trained, run_cli, tmp_path):
    work, _ = trained
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "predict", "--weights",
                   work / "checkpoints" / "last.pt", "--work-dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    pngs = list((tmp_path / "images").glob("*.png"))
    assert len(pngs) == result["metrics"]["images"] > 0


def test_predict_draws_images_without_detections(tmp_path):
    """A segm model with nothing above the threshold still writes its PNG."""
    import numpy as np
    import torch

    from detcore.predict import Predictor, predict_images

    class Empty(torch.nn.Module):
        def forward(self, images):
            h, w = images.shape[-2:]
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
                     "labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, h, w)}]

    from PIL import Image

    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.png")
    predictor = Predictor(Empty(), ["x"], (64, 64), torch.device("cpu"), 0.3)
    out = predict_images(predictor, [tmp_path / "a.png"], tmp_path / "out")
    assert out[0]["detections"] == 0 and (tmp_path / "out" / "a.png").is_file()


def test_parity_matching_ignores_order_and_counts_detections_without_counterpart():
    import numpy as np

    from detcore.export import match_detections

    ref = np.array([[[0, 0, 10, 10, 0.9], [5, 5, 20, 20, 0.5], [1, 1, 4, 4, 0.1]]], np.float32)
    got = ref[:, [1, 0, 2]].copy()  # the two best swapped: not a difference
    got[0, 2] = [50, 50, 60, 60, 0.1]  # the last one crossed the cut-off: another box took its slot
    labels = np.array([[1, 2, 0]])
    order, matched = match_detections({"dets": ref, "labels": labels},
                                      {"dets": got, "labels": labels[:, [1, 0, 2]]})
    assert order[0, :2].tolist() == [1, 0]
    assert matched.tolist() == [[True, True, False]]


def test_export_contract_is_checked_names_shapes_dtypes():
    import pytest
    import torch

    from detcore.errors import UserError
    from detcore.export import check_contract
    from detcore.model import Detector

    class Model(Detector):
        max_detections = 4

    model, images = Model(), torch.zeros(2, 3, 8, 8)
    assert model.export_output_names == ("dets", "labels") and model.atc_out_nodes is None
    good = (torch.zeros(2, 4, 5), torch.full((2, 4), -1, dtype=torch.int64))
    check_contract(model, images, good)
    for bad, needle in [((good[0],), "returned 1 outputs"),
                        ((torch.zeros(2, 4, 6), good[1]), "output dets is (2, 4, 6)"),
                        ((good[0], good[1].float()), "output labels is (2, 4) torch.float32")]:
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            check_contract(model, images, bad)
    model.task_type = "segm"
    assert model.export_output_names == ("dets", "labels", "masks")


def test_export_fails_when_onnxruntime_disagrees_and_keeps_the_file_aside(tmp_path):
    """A graph that computes other numbers than eager PyTorch: the export is refused."""
    import pytest
    import torch

    from detcore.errors import UserError
    from detcore.export import export_onnx, verify
    from detcore.model import Detector

    class Drifting(Detector):
        max_detections = 3
        calls = 0

        def export_forward(self, images):
            Drifting.calls += 1  # traced as a constant; eager calls later see another value
            dets = images.mean(dim=(1, 2, 3))[:, None, None].expand(-1, 3, 5) * 0 + 0.5
            dets = dets + torch.tensor([10.0 * Drifting.calls] * 4 + [0.0])
            return dets.contiguous(), torch.zeros(images.shape[0], 3, dtype=torch.int64)

    path = tmp_path / "m.onnx"
    info = export_onnx(Drifting(), path, (8, 8), 1, 17, False)
    assert info["parity_unmatched_above_floor"] == 3  # every box moved by >= 10 px
    with pytest.raises(UserError, match=r"export check failed.*3 detections scoring >= 0.05"):
        verify(path, info, 1e-3)
    assert not path.exists() and (tmp_path / "m.onnx.unverified").is_file()
    verify(path, {"parity_max_abs_diff": {"dets": 1e-4}, "parity_unmatched_above_floor": 0}, 1e-3)


def test_om_export_and_ais_bench_infer_read_outputs_by_index(trained, run_cli, tmp_path, monkeypatch):
    """Fake ``atc`` and ``ais_bench`` (tests/fakes): the atc command line is pasteable (quoted
    ``--out_node``), the .om lists outputs in ATC's order, and infer decodes them by index."""
    import os
    import shlex

    from .conftest import REPO

    fakes = REPO / "tests" / "fakes"
    env_path = f"{fakes / 'bin'}{os.pathsep}{os.environ['PATH']}"
    weights = trained[0] / "checkpoints" / "last.pt"
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "export", "--format", "om", "--weights",
                   weights, "--work-dir", tmp_path / "om", "--set", "export.soc_version=Ascend310P3",
                   PATH=env_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "om" / "result.json").read_text())
    cmd = shlex.split(result["artifacts"]["atc_command"])
    assert cmd[0] == "atc" and "--out_node=labels;dets" in cmd  # the model's atc_out_nodes order
    om = result["artifacts"]["om"]
    assert json.loads(open(om + ".json").read()) == {"outputs": ["labels", "dets"]}
    runs = {}
    for engine, model_file in (("onnxruntime", result["artifacts"]["onnx"]), ("ais_bench", om)):
        proc = run_cli("run", "--model", "tiny-fcos", "--task", "infer", "--engine", engine,
                       "--weights", model_file, "--work-dir", tmp_path / engine,
                       PYTHONPATH=f"{fakes}{os.pathsep}{REPO}")
        assert proc.returncode == 0, proc.stderr
        runs[engine] = json.loads((tmp_path / engine / "result.json").read_text())["metrics"]
    assert runs["ais_bench"]["bbox_mAP"] == runs["onnxruntime"]["bbox_mAP"]


def test_om_exports_use_an_opset_the_references_atc_accepts(exported, trained, run_cli, tmp_path):
    """``--format om`` converts an ONNX file of ``export.om_opset`` (11, as the reference's
    CANN 6.0 atc took; that atc documents opsets 9-13), plain exports keep ``export.opset``
    (17); each result.json names the opset, which is the one written in the file."""
    import os

    from .conftest import REPO

    def file_opset(path):
        return {o.domain: o.version for o in onnx.load(path).opset_import}[""]

    _, plain = exported
    assert plain["artifacts"]["onnx_opset"] == 17 == file_opset(plain["artifacts"]["onnx"])
    fake_atc = f"{REPO / 'tests' / 'fakes' / 'bin'}{os.pathsep}{os.environ['PATH']}"
    weights = trained[0] / "checkpoints" / "last.pt"
    for sets, want in (((), 11), (("--set", "export.om_opset=13"), 13)):
        work = tmp_path / f"om{want}"
        proc = run_cli("run", "--model", "tiny-fcos", "--task", "export", "--format", "om",
                       "--weights", weights, "--work-dir", work,
                       "--set", "export.soc_version=Ascend310P3", *sets, PATH=fake_atc)
        assert proc.returncode == 0, proc.stderr[-2000:]
        result = json.loads((work / "result.json").read_text())
        assert result["artifacts"]["onnx_opset"] == want == file_opset(result["artifacts"]["onnx"])
        assert result["metrics"]["parity_unmatched_above_floor"] == 0
