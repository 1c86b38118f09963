"""Config resolution and the --set parser (with a hypothesis fuzz test)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detcore.config import CORE_DEFAULTS, apply_override, deep_merge, resolve_config
from detcore.errors import UserError


def test_named_config_merges_over_core_defaults(registry):
    name, cfg = resolve_config(registry.get_model("tiny-fcos"), None, [])
    assert name == "smoke" and cfg["data"]["input_size"] == [96, 96]
    assert cfg["train"]["amp"] == CORE_DEFAULTS["train"]["amp"]


def test_overrides_parse_yaml_values(registry):
    _, cfg = resolve_config(registry.get_model("tiny-fcos"), None,
                            ["train.epochs=3", "optimizer.lr=1e-4", "data.input_size=[64, 80]",
                             "train.amp=bf16", "train.deterministic=true"])
    assert cfg["train"]["epochs"] == 3 and cfg["optimizer"]["lr"] == 1e-4
    assert cfg["data"]["input_size"] == [64, 80] and cfg["train"]["deterministic"] is True


def test_config_file_with_base(registry, tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("base: smoke\ntrain:\n  epochs: 7\n")
    name, cfg = resolve_config(registry.get_model("tiny-fcos"), str(path), [])
    assert cfg["train"]["epochs"] == 7 and cfg["data"]["input_size"] == [96, 96]


@pytest.mark.parametrize("item, message", [
    ("train.epoch=3", "Did you mean 'train.epochs'"),
    ("trian.epochs=3", "Did you mean 'train'"),
    ("noequals", "expected key=value"),
    ("=3", "expected key=value"),
])
def test_bad_overrides(item, message):
    with pytest.raises(UserError, match=message):
        apply_override(deep_merge(CORE_DEFAULTS, {}), item)


def test_malformed_config_file(registry, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_config(registry.get_model("tiny-fcos"), str(bad), [])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_override_parser_never_crashes(item):
    cfg = deep_merge(CORE_DEFAULTS, {})
    try:
        apply_override(cfg, item)
    except UserError as exc:
        assert "\n" not in str(exc)


def test_synthetic_defaults_match_the_generator():
    from dataclasses import asdict

    from detcore.data.synthetic import SynthSpec

    assert CORE_DEFAULTS["data"]["synthetic"] == asdict(SynthSpec())
