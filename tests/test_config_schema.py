"""The config schema: what each key accepts, the one-line messages, plugins' declared keys, and
the docs kept in step with it (docs/config.md generated, every key the docs name exists)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from detcore import config_schema as schema
from detcore.config import CORE_DEFAULTS, deep_merge, resolve_config
from detcore.config_schema import CORE_KEYS, SECTIONS, validate
from detcore.errors import PluginError, UserError
from detcore.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]


def with_value(dotted: str, value) -> dict:
    config = deep_merge(CORE_DEFAULTS, {})
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    return config


def test_core_defaults_come_from_the_schema_and_pass_it():
    assert {k for k in CORE_KEYS} == set(_leaves(CORE_DEFAULTS))
    assert list(CORE_DEFAULTS) == list(SECTIONS)
    validate(CORE_DEFAULTS)


@pytest.mark.parametrize("dotted, value, expected", [
    ("data.batch_size", 0, "an integer >= 1"),
    ("data.batch_size", 2.5, "an integer >= 1"),
    ("data.batch_size", True, "an integer >= 1"),
    ("train.epochs", 0, "an integer >= 1"),
    ("train.epochs", "abc", "an integer >= 1"),
    ("data.input_size", 0, "[height, width]: two integers >= 1"),
    ("data.input_size", [0, 256], "[height, width]: two integers >= 1"),
    ("data.input_size", [256], "[height, width]: two integers >= 1"),
    ("optimizer.lr", -1, "a number > 0"),
    ("optimizer.lr", 0, "a number > 0"),
    ("optimizer.lr", float("nan"), "a number > 0"),
    ("optimizer.momentum", 1.5, "a number in [0, 1)"),
    ("scheduler.milestones", [0.9, 0.5], "a list of increasing numbers, each in (0, 1)"),
    ("scheduler.milestones", [0.5, 1.5], "a list of increasing numbers, each in (0, 1)"),
    ("scheduler.milestones", 0.5, "a list of increasing numbers, each in (0, 1)"),
    ("scheduler.gamma", 0, "a number > 0"),
    ("scheduler.name", "linear", "one of cosine, step, constant"),
    ("train.max_minutes", -1, "a number >= 0 (min)"),
    ("train.amp", "fp32", "one of off, fp16, bf16"),
    ("train.loss_scale", "big", "'dynamic' or a number > 0"),
    ("train.loss_scale", 0, "'dynamic' or a number > 0"),
    ("train.deterministic", 1, "true or false"),
    ("eval.backend", "detectron", "one of pycocotools, faster_coco_eval"),
    ("eval.score_threshold", 1.5, "a number in [0, 1]"),
    ("export.opset", 5, "an integer >= 7"),
    ("export.soc_version", 910, "a non-empty string or null"),
])
def test_out_of_range_values_are_one_line_errors(dotted, value, expected):
    with pytest.raises(UserError) as err:
        validate(with_value(dotted, value))
    message = str(err.value)
    assert message.startswith(f"config key {dotted}=") and f": expected {expected}" in message
    assert "\n" not in message


def test_message_names_key_value_and_range():
    with pytest.raises(UserError, match=r"^config key data.batch_size=0: expected an integer >= 1$"):
        validate(with_value("data.batch_size", 0))
    with pytest.raises(UserError, match=r'^config key train.amp="fp32": expected one of off, '):
        validate(with_value("train.amp", "fp32"))


@pytest.mark.parametrize("dotted, value", [
    ("train.loss_scale", "128"), ("train.loss_scale", 64), ("train.loss_scale", "dynamic"),
    ("scheduler.milestones", []), ("scheduler.milestones", [0.5]), ("train.max_minutes", 0),
    ("optimizer.lr", 1), ("export.soc_version", "Ascend910B"), ("data.input_size", (64, 96)),
    ("optimizer.name", "momentum"),  # a plugin's build_optimizer may take other names
])
def test_values_that_make_sense_pass(dotted, value):
    validate(with_value(dotted, value))


def test_a_core_section_replaced_by_a_scalar_is_named():
    config = deep_merge(CORE_DEFAULTS, {})
    config["scheduler"] = "cosine"
    with pytest.raises(UserError, match="config key scheduler.name is missing"):
        validate(config)


def test_declared_plugin_keys_are_checked_and_undeclared_ones_are_not():
    keys = {"model.width": schema.integer("channels", ge=1),
            "model.head": schema.choice("head", ("light", "full")),
            "model.drop": schema.number("drop rate", ge=0, lt=1, nullable=True),
            "model.grids": schema.integers("grids", ge=1)}
    spec = ModelSpec(name="m", config_keys=keys, plugin="p")
    good = deep_merge(CORE_DEFAULTS, {"model": {"width": 8, "head": "full", "drop": None,
                                                "grids": [4, 2], "free": "anything"}})
    validate(good, spec)
    for key, value, expected in [("width", 0, "an integer >= 1"), ("head", "huge", "one of light, full"),
                                 ("drop", 1.0, "a number in [0, 1) or null"),
                                 ("grids", [], "a non-empty list of integers, each >= 1")]:
        bad = deep_merge(good, {"model": {key: value}})
        with pytest.raises(UserError, match=re.escape(f"config key model.{key}=") + ".*"
                           + re.escape(f": expected {expected}")):
            validate(bad, spec)
    # a declared key the config does not hold: the plugin's own default applies
    validate(deep_merge(CORE_DEFAULTS, {"model": {"width": 8}}), spec)


def test_a_plugin_cannot_redeclare_a_core_key():
    spec = ModelSpec(name="m", plugin="p", config_keys={"train.epochs": schema.integer("e", ge=5)})
    with pytest.raises(PluginError, match="model m .plugin p. declares core config key train.epochs"):
        validate(deep_merge(CORE_DEFAULTS, {}), spec)


def test_resolve_config_validates_overrides_and_files(registry, tmp_path):
    spec = registry.get_model("tiny-fcos")
    with pytest.raises(UserError, match="config key model.width=0: expected an integer >= 1"):
        resolve_config(spec, None, ["model.width=0"])
    path = tmp_path / "my.yaml"
    path.write_text("base: smoke\noptimizer:\n  lr: 1e-4\n")  # YAML 1.1 would read a string
    assert resolve_config(spec, str(path), [])[1]["optimizer"]["lr"] == 1e-4
    path.write_text("base: smoke\ntrain:\n  epochs: many\n")
    with pytest.raises(UserError, match='config key train.epochs="many": expected an integer'):
        resolve_config(spec, str(path), [])


def test_every_installed_model_config_passes_and_holds_its_declared_keys():
    """Every registered model's every named config (all installed plugins) passes the schema,
    and holds every key its model declares (so --set reaches them)."""
    from detcore.config_schema import lookup
    from detcore.plugins import Registry

    import tests.plugins.tiny as tiny

    registry = Registry(extra_plugins={"tiny": tiny})
    checked = []
    for name, spec in sorted(registry.models.items()):
        for config_name in spec.configs:
            _, config = resolve_config(spec, config_name, [])
            missing = [k for k in spec.config_keys if lookup(config, k) is schema._MISSING]
            assert not missing, (name, config_name, missing)
            checked.append((name, config_name))
    assert ("tiny-fcos", "smoke") in checked


# -- the docs ---------------------------------------------------------------------------------

def test_docs_config_md_is_generated_from_the_schema():
    assert (ROOT / "docs" / "config.md").read_text() == schema.document(), \
        "run: python -m detcore.config_schema > docs/config.md"


#: Dotted names the docs use on purpose that are not keys (errors.md's typo example).
NOT_KEYS = {"optimizer.lrr"}
DOTTED = re.compile(r"(?<![\w./-])((?:%s)\.[A-Za-z_][\w.]*\w)" % "|".join(SECTIONS[1:]))


def _known(dotted: str) -> bool:
    return dotted in CORE_KEYS or any(k.startswith(dotted + ".") for k in CORE_KEYS)


def test_every_core_key_the_docs_name_exists():
    """README.md and docs/*.md name only keys the schema has (docs/config.md lists them all)."""
    unknown = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for dotted in DOTTED.findall(path.read_text()):
            if not re.search(r"\.(py|sh|md|json|ya?ml)$", dotted) and dotted not in NOT_KEYS \
                    and not _known(dotted):
                unknown.add((path.name, dotted))
    assert not unknown


def test_every_key_in_the_guides_section_5_exists():
    """§5 lists keys per section, ``data`` (``input_size``, ...): each is a key of that section
    (or one of its values, ``step``), and the section points to docs/config.md."""
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    text = guide[guide.index("## 5. Configs"):guide.index("## 6.")]
    assert "(config.md)" in text
    seen = 0
    for match in re.finditer(r"`(%s)` \(" % "|".join(SECTIONS[1:]), text):
        section, group = match.group(1), _parenthesised(text, match.end())
        values = {c for k, key in CORE_KEYS.items() if k.startswith(section + ".")
                  for c in key.choices}
        for name in re.findall(r"`([a-z_]+)`", group):
            seen += 1
            assert _known(f"{section}.{name}") or name in values, (section, name)
    assert seen >= 20


def _parenthesised(text: str, start: int) -> str:
    depth, i = 1, start
    while depth:
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    return text[start:i - 1]


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        elif not isinstance(value, dict):
            yield prefix + key
