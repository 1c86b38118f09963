"""Configs: core defaults, a plugin's named config or a YAML/JSON file, then ``--set``."""
from __future__ import annotations

import copy
import difflib
import functools
import json
import re
from pathlib import Path
from typing import Any

from .config_schema import CORE_KEYS, nested, validate
from .errors import UserError
from .spec import ModelSpec

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_EXPONENT = re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$")

#: Keys core reads, with their defaults (from :data:`detcore.config_schema.CORE_KEYS`, where each
#: key's type, range, unit and meaning are). A plugin's config is merged over these, so every
#: plugin config has them and ``--set train.epochs=3`` works for every model.
CORE_DEFAULTS: dict[str, Any] = nested(CORE_KEYS)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(spec: ModelSpec, name_or_file: str | None, overrides: list[str]) -> tuple[str, dict]:
    """Return ``(config_name, config)`` for a run, every core key and every key the model
    declares checked for type and range (:func:`detcore.config_schema.validate`)."""
    name = name_or_file or spec.default_config
    if name in spec.configs:
        raw = spec.configs[name]
        plugin_cfg = raw() if callable(raw) else raw
    elif Path(name).suffix in (".yaml", ".yml", ".json"):
        plugin_cfg = load_config_file(Path(name))
        base = plugin_cfg.pop("base", None)
        if base is not None:
            if base not in spec.configs:
                raise UserError(f"config file {name}: base {base!r} is not a config of "
                                f"{spec.name}; choose one of {', '.join(spec.configs)}")
            raw = spec.configs[base]
            plugin_cfg = deep_merge(raw() if callable(raw) else raw, plugin_cfg)
    else:
        raise UserError(f"unknown config {name!r} for model {spec.name}: use one of "
                        f"{', '.join(sorted(spec.configs)) or '(none)'} or a .yaml/.json file")
    config = deep_merge(CORE_DEFAULTS, plugin_cfg)
    for item in overrides:
        apply_override(config, item)
    validate(config, spec)
    return name, config


def load_config_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = _yaml(text)
    except Exception as exc:
        raise UserError(f"config file {path} is not valid {path.suffix[1:].upper()}: "
                        f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping at top level")
    return data


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars or flow collections: 3, 1e-3, true, [256,256], fp16."""
    import yaml

    try:
        return _yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _yaml(text: str):
    """``yaml.safe_load``, but ``1e-4`` is a number, as in YAML 1.2 and JSON (PyYAML follows
    YAML 1.1, whose floats need a dot and a signed exponent, and reads it as a string)."""
    import yaml

    return yaml.load(text, Loader=_loader())


@functools.cache
def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789"))
    return Loader


def _checked(key: str, old: Any, new: Any) -> Any:
    """A key that holds a number takes a number; a section cannot become a scalar."""
    if isinstance(old, dict) and not isinstance(new, dict):
        raise UserError(f"--set {key}: {key!r} is a section ({', '.join(old)}); set one of its keys")
    number = (int, float)
    if isinstance(old, number) and not isinstance(old, bool) and (
            not isinstance(new, number) or isinstance(new, bool)):
        raise UserError(f"--set {key}={new!r}: {key} takes a number (it is {old!r})")
    return new


def apply_override(config: dict, item: str) -> None:
    """Apply one ``key.path=value``; an unknown key is an error with the closest name."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {item!r}: expected key=value, e.g. --set train.epochs=3")
    if not KEY_PATTERN.fullmatch(key):
        raise UserError(f"--set {key!r}: a key is dot-separated names (letters, digits, _ -)")
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            siblings = list(node) if isinstance(node, dict) else []
            prefix = ".".join(parts[:depth])
            hint = difflib.get_close_matches(part, siblings, n=1)
            where = f"under {prefix!r}" if prefix else "at top level"
            msg = f"--set {key}: unknown config key {part!r} {where}."
            if hint:
                msg += f" Did you mean {'.'.join(parts[:depth] + [hint[0]])!r}?"
            elif siblings:
                msg += f" Known keys: {', '.join(map(str, siblings))}"
            raise UserError(msg)
        if depth == len(parts) - 1:
            node[part] = _checked(key, node[part], parse_value(raw))
        else:
            node = node[part]
