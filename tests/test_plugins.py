"""Plugin discovery: entry points, the allow-list, broken and clashing plugins, --json."""
from __future__ import annotations

import json
import textwrap

import pytest

from detcore.errors import UserError
from detcore.plugins import Registry


def write_module(root, name, body):
    (root / f"{name}.py").write_text(textwrap.dedent(body))


def write_entry_point(root, dist, ep_name, target):
    """A real installed distribution (a .dist-info on the path), without pip."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[detcore]\n{ep_name} = {target}\n")


PLUGIN = """
from detcore import hookimpl
from detcore.spec import ModelSpec
DETCORE_API_VERSION = {api}

@hookimpl
def register_models():
    return [ModelSpec(name="{model}", upstream=("pluggy>=1.0", "no-such-dist==1.0"))]
"""


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DETCORE_PLUGINS", raising=False)
    monkeypatch.delenv("DETCORE_PLUGIN_MODULES", raising=False)
    return tmp_path


def test_entry_point_plugin_is_discovered_with_pins(plugin_dir):
    write_module(plugin_dir, "ep_plugin", PLUGIN.format(api=1, model="ep-model"))
    write_entry_point(plugin_dir, "detcore-ep", "ep", "ep_plugin")
    reg = Registry()
    info = reg.plugins["ep"]
    assert info.status == "ok" and info.distribution == "detcore-ep" and info.version == "0.1"
    assert info.models == ["ep-model"] and "register_models" in info.hooks
    pins = {p["requirement"]: p["ok"] for p in info.upstream}
    assert pins == {"pluggy>=1.0": True, "no-such-dist==1.0": False}
    assert reg.get_model("ep-model").plugin == "ep"


def test_allow_list_restricts_loading(plugin_dir, monkeypatch):
    write_module(plugin_dir, "ep_a", PLUGIN.format(api=1, model="model-a"))
    write_module(plugin_dir, "ep_b", PLUGIN.format(api=1, model="model-b"))
    write_entry_point(plugin_dir, "detcore-a", "a", "ep_a")
    write_entry_point(plugin_dir, "detcore-b", "b", "ep_b")
    monkeypatch.setenv("DETCORE_PLUGINS", "b")
    reg = Registry()
    assert reg.plugins["a"].status == "disabled" and "model-a" not in reg.models
    assert "model-b" in reg.models


def test_broken_plugin_is_listed_not_raised(plugin_dir):
    write_module(plugin_dir, "bad_plugin", "raise ImportError('needs libfoo')\n")
    write_entry_point(plugin_dir, "detcore-bad", "bad", "bad_plugin")
    info = Registry().plugins["bad"]
    assert info.status == "broken" and "needs libfoo" in info.reason


def test_incompatible_api_version_is_listed(plugin_dir):
    write_module(plugin_dir, "old_plugin", PLUGIN.format(api=0, model="old-model"))
    write_entry_point(plugin_dir, "detcore-old", "old", "old_plugin")
    reg = Registry()
    assert reg.plugins["old"].status == "incompatible"
    assert "hook API 0" in reg.plugins["old"].reason and "old-model" not in reg.models


def test_model_name_clash_names_both_plugins(plugin_dir):
    write_module(plugin_dir, "clash_one", PLUGIN.format(api=1, model="same"))
    write_module(plugin_dir, "clash_two", PLUGIN.format(api=1, model="same"))
    write_entry_point(plugin_dir, "detcore-one", "one", "clash_one")
    write_entry_point(plugin_dir, "detcore-two", "two", "clash_two")
    with pytest.raises(UserError, match=r"'same'.*'one'.*'two'"):
        Registry()


def test_unknown_model_suggests_closest(registry):
    with pytest.raises(UserError, match=r"Did you mean 'tiny-fcos'.*Installed models: .*tiny-fcos"):
        registry.get_model("tiny-fcs")


def test_cli_plugins_json_and_broken_plugin(run_cli, plugin_dir):
    write_module(plugin_dir, "bad_plugin2", "import not_a_module_anywhere\n")
    proc = run_cli("plugins", "--json", DETCORE_PLUGIN_MODULES="tests.plugins.tiny,bad_plugin2",
                   PYTHONPATH=f"{plugin_dir}:{__import__('tests.conftest').conftest.REPO}")
    assert proc.returncode == 0, proc.stderr
    rows = {p["name"]: p for p in json.loads(proc.stdout)["plugins"]}
    assert rows["tests.plugins.tiny"]["models"] == ["tiny-fcos", "tiny-fcos-wide"]
    assert rows["tests.plugins.tiny"]["upstream"][0]["ok"] is True
    assert rows["bad_plugin2"]["status"] == "broken" and "not_a_module_anywhere" in rows["bad_plugin2"]["reason"]


GREEDY = """
from detcore import hookimpl
from detcore.spec import ModelSpec
DETCORE_API_VERSION = 1

@hookimpl
def register_models():
    return [ModelSpec(name="{model}")]

@hookimpl
def build_model(spec, config, num_classes):  # no ownership check: it answers every call it gets
    return "{model} built by {plugin}"

@hookimpl
def apply_npu_patches(spec, config, device):
    return ["{plugin}"]
"""


def test_a_plugin_without_guards_cannot_take_another_plugins_model(plugin_dir):
    """pluggy calls the last registered plugin first: without owner-only dispatch "second"
    would build model-1 and both plugins would patch both models."""
    for plugin, model in (("first", "model-1"), ("second", "model-2")):
        write_module(plugin_dir, f"greedy_{plugin}", GREEDY.format(model=model, plugin=plugin))
        write_entry_point(plugin_dir, f"detcore-{plugin}", plugin, f"greedy_{plugin}")
    reg = Registry()
    for model, owner in (("model-1", "first"), ("model-2", "second")):
        spec = reg.get_model(model)
        hooks = reg.hooks_for(spec)
        assert spec.plugin == owner
        assert hooks.build_model(spec=spec, config={}, num_classes=1) == f"{model} built by {owner}"
        assert hooks.apply_npu_patches(spec=spec, config={}, device=None) == [[owner]]
