"""Patches prove what they replace: declared targets, source fingerprints checked at apply time,
``detcore patches`` listing and diffs, and the checks plugins' tests use (detcore.patching,
detcore.patch_report, detcore.testing.patch_checks)."""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from detcore.errors import MissingDependency, PluginError
from detcore.patching import Patch, fingerprint, fingerprint_source, normalised_source, resolve
from detcore.testing.patch_checks import edited_copy, recording_torch_npu_calls, stale_fingerprints

UPSTREAM = '''
def scale(x, factor=2):
    """Upstream's scale."""
    return x * factor


class Head:
    def predict(self, x):
        return scale(x) + 1


class SubHead(Head):
    pass
'''


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    """A fresh upstream module, ``fake_upstream_<n>``, on disk in ``tmp_path``."""
    name = f"fake_upstream_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(UPSTREAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def make_patch(module, replaces, reproduces=None, targets=None):
    """A Patch class replacing ``module.scale`` (or ``targets``)."""

    def triple(x, factor=2):
        return x * 3

    attrs = {"name": "triple", "replaces": replaces, "reproduces": reproduces or {},
             "targets": lambda self: targets or [(module, "scale", triple)],
             "__doc__": "NPU limitation: none, a test. Tolerance: 0."}
    return type("TriplePatch", (Patch,), attrs)


def test_fingerprint_ignores_formatting_but_not_code():
    base = "def f(x):\n    return x + 1\n"
    assert fingerprint_source(base) == fingerprint_source("    def f(x):  \n\n        return x + 1")
    assert fingerprint_source(base) != fingerprint_source(base.replace("+ 1", "+ 2"))
    assert fingerprint_source(base) != fingerprint_source(base.replace("return", "# note\n    return"))
    assert normalised_source("  a\n\n  b  \n") == "a\nb"
    assert len(fingerprint_source(base)) == 16


def test_fingerprint_of_a_scripted_function_is_its_python_source():
    import torch

    def add_one(x: torch.Tensor) -> torch.Tensor:
        return x + 1

    with pytest.warns(FutureWarning) if torch.__version__ >= "2.9" else _nothing():
        scripted = torch.jit.script(add_one)
    assert fingerprint(scripted) == fingerprint(add_one)
    with pytest.raises(TypeError, match="no Python source"):
        fingerprint(3)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_patch_applies_when_the_upstream_source_matches(upstream):
    cls = make_patch(upstream, {f"{upstream.__name__}:scale": fingerprint(upstream.scale)})
    original = upstream.scale
    assert [r["status"] for r in cls().upstream_status()] == ["matches"]
    with cls() as patch:
        assert upstream.scale(1) == 3 and patch.applied
    assert upstream.scale is original


def test_patch_refuses_an_edited_upstream_naming_the_target(upstream, tmp_path, monkeypatch):
    """A one-line local edit of the upstream function (a temporary copy of its source): the
    patch refuses, naming the target, and replaces nothing."""
    target = f"{upstream.__name__}:scale"
    cls = make_patch(upstream, {target: fingerprint(upstream.scale)})
    edited = edited_copy(upstream.scale, "return x * factor", "return x * factor + 0", tmp_path)
    monkeypatch.setattr(upstream, "scale", edited)
    with pytest.raises(MissingDependency) as err:
        cls().apply()
    message = str(err.value)
    assert target in message and "differs from the upstream source" in message
    assert "--patches off" in message and "\n" not in message and err.value.exit_code == 3
    assert upstream.scale is edited  # nothing replaced
    assert cls().upstream_status()[0]["status"] == "differs"


def test_a_change_in_reproduced_code_also_refuses(upstream, tmp_path, monkeypatch):
    cls = make_patch(upstream, {f"{upstream.__name__}:scale": fingerprint(upstream.scale)},
                     {f"{upstream.__name__}:Head.predict": fingerprint(upstream.Head.predict)})
    cls().apply().revert()
    edited = edited_copy(upstream.Head.predict, "+ 1", "+ 2", tmp_path)
    monkeypatch.setattr(upstream.Head, "predict", edited)
    with pytest.raises(MissingDependency, match=f"{upstream.__name__}:Head.predict differs"):
        cls().apply()


def test_inherited_method_is_fingerprinted_by_what_it_shadows(upstream):
    """A new attribute of a subclass shadows the inherited method: that is what it replaces."""
    target = f"{upstream.__name__}:SubHead.predict"
    cls = make_patch(upstream, {target: fingerprint(upstream.Head.predict)},
                     targets=[(upstream.SubHead, "predict", lambda self, x: 0)])
    with cls():
        assert upstream.SubHead().predict(1) == 0 and upstream.Head().predict(1) == 3
    assert "predict" not in upstream.SubHead.__dict__


def test_declaration_must_name_what_targets_sets(upstream):
    cls = make_patch(upstream, {f"{upstream.__name__}:other": None})
    with pytest.raises(PluginError, match="targets\\(\\) sets .*:scale but Patch.replaces declares"):
        cls().apply()
    assert not cls().applied


def test_none_is_only_for_new_or_own_attributes(upstream):
    existing = make_patch(upstream, {f"{upstream.__name__}:scale": None})
    with pytest.raises(PluginError, match="declares no fingerprint"):
        existing().apply()
    new = make_patch(upstream, {f"{upstream.__name__}:brand_new": None},
                     targets=[(upstream, "brand_new", len)])
    assert new().upstream_status()[0]["status"] == "new"
    with new():
        assert upstream.brand_new is len
    assert not hasattr(upstream, "brand_new")


def test_a_target_gone_from_upstream_refuses(upstream):
    cls = make_patch(upstream, {f"{upstream.__name__}:scale": fingerprint(upstream.scale)},
                     {f"{upstream.__name__}:Head.vanished": "0" * 16})
    with pytest.raises(MissingDependency, match="Head.vanished does not exist"):
        cls().apply()


def test_undeclared_patches_still_apply(upstream):
    """Patches written before ``replaces`` existed apply unchecked (and are listed so)."""
    from detcore.patch_report import describe, refused

    cls = make_patch(upstream, None)
    with cls():
        assert upstream.scale(1) == 3
    listed = describe(cls)
    assert not listed["declared"] and listed["targets"][0]["status"] == "unchecked"
    assert refused([{"patches": [listed]}]) == []  # nothing checked, nothing refused


def test_resolve_names_modules_classes_and_inherited_attributes(upstream):
    assert resolve(f"{upstream.__name__}:Head.predict") is upstream.Head.predict
    assert resolve(f"{upstream.__name__}:SubHead.predict") is upstream.Head.predict
    with pytest.raises(AttributeError):
        resolve(f"{upstream.__name__}:nothing")


def test_stale_fingerprints_say_how_to_refresh(upstream):
    current = fingerprint(upstream.scale)
    good = make_patch(upstream, {f"{upstream.__name__}:scale": current})
    assert stale_fingerprints([good]) == []
    stale = make_patch(upstream, {f"{upstream.__name__}:scale": "0123456789abcdef"})
    [problem] = stale_fingerprints([stale])
    assert "'0123456789abcdef'" in problem and f"set the literal to {current!r}" in problem
    assert "detcore patches --diff" in problem
    assert stale_fingerprints([make_patch(upstream, None)])[0].endswith(
        "declares no Patch.replaces (the attributes it sets, with the fingerprints of the "
        "upstream code they replace)")
    unmet = stale_fingerprints([good], pins=("pluggy==0.0.1",))
    assert unmet and "pinned upstream only" in unmet[0]


def test_stale_fingerprints_refuse_an_edited_installed_file(monkeypatch):
    """A file edited after pip installed it cannot vouch for the pinned upstream: its hash
    differs from the one in its distribution's RECORD."""
    import pluggy

    from detcore.testing import patch_checks

    target = "pluggy._manager:PluginManager.register"
    cls = type("P", (Patch,), {"name": "p", "replaces": {target: fingerprint(resolve(target))},
                               "targets": lambda self: [(pluggy._manager.PluginManager, "register",
                                                         lambda *a: None)]})
    assert stale_fingerprints([cls]) == []  # the installed pluggy is as pip wrote it
    monkeypatch.setattr(patch_checks, "_file_digest", lambda path: "edited")
    [problem] = stale_fingerprints([cls])
    assert "_manager.py differs from what pluggy" in problem and "reinstall pluggy" in problem


def test_recording_names_the_torch_npu_functions_and_classes_called(simulated_npu):
    import torch

    with recording_torch_npu_calls(simulated_npu) as called:
        import torch_npu

        torch_npu.npu_one_hot(torch.tensor([0, 1]), depth=2)
        p = torch.nn.Parameter(torch.zeros(1))
        torch_npu.optim.NpuFusedSGD([p], lr=0.1)
        assert called == {"npu_one_hot", "optim.NpuFusedSGD"}
    torch_npu.npu_nms_v4  # restored: calling it now records nothing
    assert called == {"npu_one_hot", "optim.NpuFusedSGD"}
    assert torch_npu.optim.NpuFusedSGD.__name__ == "NpuFusedSGD"


# -- detcore patches ----------------------------------------------------------------------------

PLUGIN = textwrap.dedent('''
    from detcore import hookimpl
    from detcore.patching import Patch
    from detcore.spec import ModelSpec
    DETCORE_API_VERSION = 1

    def triple(x, factor=2):
        """Three times."""
        return x * 3

    class TriplePatch(Patch):
        """NPU limitation: scaling by two is slow on the NPU (a test). Tolerance: 0."""
        name = "triple"
        replaces = {"UPSTREAM:scale": "FP"}
        npu_ops = ()
        def targets(self):
            import UPSTREAM
            return [(UPSTREAM, "scale", triple)]

    @hookimpl
    def register_models():
        return [ModelSpec(name="patched-model", upstream=("pluggy>=1",), configs={"smoke": {}})]

    @hookimpl
    def npu_patches():
        return [TriplePatch]
''')


def plugin_registry(upstream, tmp_path, fp):
    from detcore.plugins import Registry

    name = f"{upstream.__name__}_plugin"
    (tmp_path / f"{name}.py").write_text(PLUGIN.replace("UPSTREAM", upstream.__name__)
                                         .replace("FP", fp))
    return Registry(extra_plugins={"patched": importlib.import_module(name)})


def test_listing_shows_targets_limitation_ops_and_diff(upstream, tmp_path):
    from detcore.patch_report import collect, refused, render

    groups = collect(plugin_registry(upstream, tmp_path, fingerprint(upstream.scale)),
                     "patched-model", diff=True)
    [group] = groups
    assert group["plugin"] == "patched" and group["models"] == ["patched-model"]
    [patch] = group["patches"]
    assert patch["name"] == "triple" and patch["auto_on_npu"] and patch["npu_ops"] == []
    assert patch["targets"][0]["status"] == "matches" and refused(groups) == []
    text = render(groups)
    assert f"{upstream.__name__}:scale" in text and "scaling by two is slow" in text
    assert "matches the installed source" in text and "tolerance     0" in text
    [diff] = patch["diff"]  # the same function on every device: one diff
    assert f"--- upstream {upstream.__name__}:scale" in diff and "on every device" in diff
    assert "-    return x * factor" in diff and "+    return x * 3" in diff


def test_listing_flags_a_patch_that_would_refuse(upstream, tmp_path):
    from detcore.patch_report import collect, refused, render

    groups = collect(plugin_registry(upstream, tmp_path, "0123456789abcdef"), "patched-model")
    assert refused(groups) == [f"triple: {upstream.__name__}:scale"]
    assert "DIFFERS from the installed source" in render(groups)


def test_cli_patches_diff_shows_every_patch_of_the_three_plugins(run_cli):
    """``detcore patches --diff``: every patch of efficientdet, fcos and solov2 with each
    replaced target beside its replacement, and every fingerprint matching (exit 0)."""
    packages = [pytest.importorskip(f"detcore_{p}.patches", reason=f"pip install -e plugins/{p}")
                for p in ("efficientdet", "fcos", "solov2")]
    proc = run_cli("patches", "--diff", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for package in packages:
        for cls in package.PATCHES:
            assert f"  {cls.name}  [{cls.__module__}.{cls.__qualname__}]" in proc.stdout
            for target in cls.replaces:
                shown = (f"--- upstream {target} (", f"# {cls.name}: {target} ")
                assert any(s in proc.stdout for s in shown), (cls.name, target)
            for op in cls.npu_ops:
                assert op in proc.stdout
    assert "DIFFERS" not in proc.stdout and "MISSING" not in proc.stdout
    assert "static_same_pad" not in proc.stdout  # retired (plugins/efficientdet/README.md)
