"""Catalogue, models and plugins."""
from __future__ import annotations

import json

from .conftest import REPO, assert_user_error

CLASH = """
from detcore import hookimpl
from detcore.spec import ModelSpec
DETCORE_API_VERSION = 1
@hookimpl
def register_models():
    return [ModelSpec(name="tiny-fcos", upstream=("torchvision>=0.19",))]
"""
PINNED = """
from detcore import hookimpl
from detcore.spec import ModelSpec
DETCORE_API_VERSION = 1
@hookimpl
def register_models():
    return [ModelSpec(name="old-pin", upstream=("pluggy==0.0.1",), configs={"smoke": {}})]
"""


def with_modules(tmp_path, **modules):
    for name, body in modules.items():
        (tmp_path / f"{name}.py").write_text(body)
    return {"PYTHONPATH": f"{tmp_path}:{REPO}",
            "DETCORE_PLUGIN_MODULES": ",".join(["tests.plugins.tiny", *modules])}


def test_unknown_model_hints_closest(run_cli):
    assert_user_error(run_cli("run", "--model", "tiny_fcos", "--task", "train"), 2,
                      "unknown model 'tiny_fcos'", "Did you mean 'tiny-fcos'")


def test_unknown_task(run_cli):
    proc = run_cli("run", "--model", "tiny-fcos", "--task", "trian")
    assert proc.returncode == 2 and "Invalid value for '--task'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_key_typo(run_cli):
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--set",
                              "optimizer.lrr=0.1"), 2, "unknown config key 'lrr'", "optimizer.lr")


def test_config_value_of_wrong_type(run_cli):
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--set",
                              "train.epochs=many"), 2, "takes a number")


def test_plugin_whose_import_fails(run_cli, tmp_path):
    env = with_modules(tmp_path, broken_plugin="import torch_missing_thing\n")
    listed = run_cli("plugins", **env)
    assert listed.returncode == 0 and "[broken]" in listed.stdout
    assert "torch_missing_thing" in listed.stdout
    assert "models: tiny-fcos" in listed.stdout  # the others still load


def test_upstream_outside_pin(run_cli, tmp_path):
    env = with_modules(tmp_path, pinned_plugin=PINNED)
    listed = run_cli("plugins", **env)
    assert "pin pluggy==0.0.1" in listed.stdout and "NOT SATISFIED" in listed.stdout
    assert run_cli("doctor", **env).returncode == 1
    assert_user_error(run_cli("run", "--model", "old-pin", "--task", "train", **env), 3,
                      "pins pluggy==0.0.1", "pip install")


def test_two_plugins_same_model(run_cli, tmp_path):
    env = with_modules(tmp_path, clash_plugin=CLASH)
    assert_user_error(run_cli("plugins", **env), 2, "model name clash", "tests.plugins.tiny",
                      "clash_plugin")


def test_allow_list_is_honoured(run_cli, tmp_path):
    env = with_modules(tmp_path, clash_plugin=CLASH)
    env["DETCORE_PLUGINS"] = "tests.plugins.tiny"
    proc = run_cli("plugins", "--json", **env)
    rows = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert rows["clash_plugin"]["status"] == "disabled"
    assert rows["tests.plugins.tiny"]["status"] == "ok"


def test_config_value_the_model_cannot_build(run_cli):
    assert_user_error(run_cli("run", "--model", "tiny-fcos", "--task", "train", "--set",
                              "model.width=48"), 1, "failed to build 'tiny-fcos'",
                      "divisible", "DETCORE_DEBUG=1")
