"""Vendored patches through the CLI: one whose upstream code was edited refuses to apply."""
from __future__ import annotations

from .conftest import REPO, assert_user_error

UPSTREAM = "def scale(x):\n    return x * 2\n"

PLUGIN = '''
from detcore import hookimpl
from detcore.patching import Patch, apply_patches
from detcore.spec import ModelSpec

import tests.plugins.tiny as tiny

DETCORE_API_VERSION = 1


class DoublePatch(Patch):
    """NPU limitation: none (a test). Tolerance: 0."""

    name = "double"
    replaces = {"edited_upstream:scale": "FINGERPRINT"}

    def targets(self):
        import edited_upstream

        return [(edited_upstream, "scale", lambda x: x + x)]


@hookimpl
def register_models():
    return [ModelSpec(name="edited-upstream", upstream=("torchvision>=0.19",),
                      configs={"smoke": tiny.SMOKE})]


@hookimpl
def build_model(spec, config, num_classes):
    return tiny.build_model(spec, config, num_classes)


@hookimpl
def apply_npu_patches(config, device):
    return apply_patches([DoublePatch(device)])


@hookimpl
def npu_patches():
    return [DoublePatch]
'''


def test_patch_refuses_an_edited_upstream(run_cli, tmp_path):
    """The patch was written against ``return x * 2``; the installed upstream was edited to
    ``x * 3``: the run stops before anything is replaced, naming the patch and the target."""
    from detcore.patching import fingerprint_source

    (tmp_path / "edited_upstream.py").write_text(UPSTREAM.replace("x * 2", "x * 3"))
    (tmp_path / "edited_plugin.py").write_text(
        PLUGIN.replace("FINGERPRINT", fingerprint_source(UPSTREAM)))
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "DETCORE_PLUGIN_MODULES": "edited_plugin"}
    proc = run_cli("run", "--model", "edited-upstream", "--task", "train", "--patches", "on",
                   "--work-dir", tmp_path / "work", **env)
    assert_user_error(proc, 3, "patch double: edited_upstream:scale differs from the upstream "
                               "source the patch was written for", "--patches off")
    assert not (tmp_path / "work" / "result.json").exists()
    listed = run_cli("patches", "--model", "edited-upstream", **env)
    assert listed.returncode == 1 and "DIFFERS from the installed source" in listed.stdout
