"""Configs: core defaults, a plugin's named config or a YAML/JSON file, then ``--set``."""
from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path
from typing import Any

from .errors import UserError
from .spec import ModelSpec

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")

#: Keys core reads. A plugin's config is merged over these, so every plugin
#: config has them and ``--set train.epochs=3`` works for every model.
CORE_DEFAULTS: dict[str, Any] = {
    "model": {},
    "data": {"input_size": [256, 256], "batch_size": 8, "workers": 2, "hflip": 0.5,
             "max_images": 0,
             # the dataset generated when --data is omitted (detcore.data.synthetic.SynthSpec)
             "synthetic": {"num_train": 256, "num_val": 64, "num_classes": 3, "min_size": 192,
                           "max_size": 320, "max_objects": 4, "seed": 0}},
    "train": {
        "epochs": 12, "max_steps": 0, "max_minutes": 0.0, "log_interval": 10,
        "clip_grad": 0.0, "ema": 0.0, "amp": "off", "loss_scale": "dynamic",
        "seed": 0, "deterministic": False, "warmup_fps_steps": 5, "checkpoint_every": 1,
        "perf_steps": 30, "eval_after": True, "sync_bn": False, "dist_timeout_s": 300,
    },
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "momentum": 0.9,
                  "scale_lr_by_world_size": True, "base_world_size": 1},
    # warmup_ratio: the first step's lr as a fraction of optimizer.lr; milestones (step): fractions
    # of the steps after warm-up at which the lr is multiplied by gamma
    "scheduler": {"name": "cosine", "warmup_steps": 50, "warmup_ratio": 0.001,
                  "milestones": [0.67, 0.9], "gamma": 0.1},
    "eval": {"batch_size": 8, "score_threshold": 0.05, "max_detections": 100,
             "backend": "pycocotools"},
    "predict": {"max_images": 16, "score_threshold": 0.3},
    "export": {"opset": 17, "dynamic_batch": False, "batch_size": 1, "soc_version": None},
}


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(spec: ModelSpec, name_or_file: str | None, overrides: list[str]) -> tuple[str, dict]:
    """Return ``(config_name, config)`` for a run."""
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
    return name, config


def load_config_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
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
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    return value


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
