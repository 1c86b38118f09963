"""The CLI: fast start (no torch), exit codes, one-line errors, result.json."""
from __future__ import annotations

import json
import subprocess
import sys

from detcore.result import validate_result

from .conftest import REPO, cli_env


def test_help_and_plugins_do_not_import_torch(cache_dir):
    code = ("import sys; from detcore.cli import main\n"
            "for args in (['--help'], ['plugins'], ['plugins', '--json'], ['run', '--help']):\n"
            "    try: main(args)\n"
            "    except SystemExit as e: assert e.code == 0, (args, e.code)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(cache_dir), cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def assert_one_line_error(proc, code: int, *needles: str):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_unknown_model_lists_installed_and_suggests(run_cli):
    proc = run_cli("run", "--model", "tiny-focs", "--task", "train")
    assert_one_line_error(proc, 2, "unknown model 'tiny-focs'", "Did you mean 'tiny-fcos'", "tiny-fcos")


def test_unknown_task_is_a_usage_error(run_cli):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "dance")
    assert proc.returncode == 2 and "Invalid value for '--task'" in proc.stderr


def test_unknown_config_key_suggests_closest(run_cli):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--set", "train.epoch=3")
    assert_one_line_error(proc, 2, "unknown config key 'epoch'", "train.epochs")


def test_unknown_named_config(run_cli):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--config", "huge")
    assert_one_line_error(proc, 2, "unknown config 'huge'", "smoke")


def test_cuda_without_gpu_names_what_is_missing(run_cli):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--device", "cuda")
    assert_one_line_error(proc, 3, "--device cuda", "no CUDA GPU")


def test_npu_without_torch_npu_names_what_to_install(run_cli):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--device", "npu")
    assert_one_line_error(proc, 3, "--device npu", "torch_npu")


def test_eval_without_weights_says_train_first(run_cli):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "eval")
    assert_one_line_error(proc, 2, "no weights", "--task train")


def test_unwritable_work_dir(run_cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = run_cli("run", "--model", "tiny-fcos", "--task", "train", "--work-dir", locked / "sub")
    finally:
        locked.chmod(0o700)
    if proc.returncode == 0:  # running as root: permissions are not enforced
        return
    assert_one_line_error(proc, 2, "work dir", "--work-dir")


def test_data_synth_writes_coco_layout(run_cli, tmp_path):
    proc = run_cli("data", "synth", tmp_path / "s", "--train", 3, "--val", 2, "--classes", 2)
    assert proc.returncode == 0, proc.stderr
    ann = json.loads((tmp_path / "s" / "annotations" / "instances_train2017.json").read_text())
    assert len(ann["images"]) == 3 and len(ann["categories"]) == 2
    again = run_cli("data", "synth", tmp_path / "s")
    assert_one_line_error(again, 2, "not empty")


def test_doctor_reports_environment(run_cli):
    proc = run_cli("doctor", "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["torch"]["status"] == "ok" and rows["auto device"]["detail"] == "cpu"
    assert rows["torch_npu"]["status"] == "info"
    assert proc.returncode == (1 if any(r["status"] == "missing" for r in rows.values()) else 0)


def test_train_writes_valid_result_json(trained):
    work, result = trained
    assert validate_result(result) == []
    assert result["model"] == "tiny-fcos" and result["task"] == "train" and result["device"] == "cpu"
    assert result["fps"] > 0 and "bbox_mAP_50" in result["metrics"]
    assert (work / "checkpoints" / "last.pt").is_file()
    lines = (work / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == result["metrics"]["steps"]
