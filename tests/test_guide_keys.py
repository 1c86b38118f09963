"""Every core config key docs/writing-a-plugin.md names can be set: section 5's lists and every
dotted key (``train.epochs``) anywhere in the guide are keys of core's schema, and ``--set``
accepts each with its default value."""
from __future__ import annotations

import json
import re

import pytest

from detcore.config import CORE_DEFAULTS, apply_override, deep_merge
from detcore.config_schema import CORE_KEYS

from .conftest import REPO

GUIDE = REPO / "docs" / "writing-a-plugin.md"
#: Core's sections; ``model`` holds each plugin's own keys, checked by the plugin's schema.
SECTIONS = ("data", "train", "optimizer", "scheduler", "eval", "predict", "export")
DOTTED = re.compile(rf"(?<![\w./-])(?:{'|'.join(SECTIONS)})\.[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def section_lists(text: str) -> set[str]:
    """Section 5's ``"`train` (`epochs`, `max_steps`, ...)"``: the backticked names directly in
    each core section's parentheses (not in nested asides), as dotted keys."""
    keys = set()
    for match in re.finditer(rf"`({'|'.join(SECTIONS)})` \(", text):
        depth, i = 1, match.end()
        while depth and i < len(text):
            ch = text[i]
            if ch == "`":
                end = text.index("`", i + 1)
                token = text[i + 1:end]
                if depth == 1 and re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", token):
                    keys.add(token if DOTTED.fullmatch(token) else f"{match.group(1)}.{token}")
                i = end
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            i += 1
    return keys


def documented_keys() -> list[str]:
    text = GUIDE.read_text()
    configs = text[text.index("## 5. Configs"):text.index("## 6.")]
    return sorted(section_lists(configs) | set(DOTTED.findall(text)))


def test_the_guide_documents_the_core_keys_it_should():
    keys = documented_keys()
    # section 5 lists every core section's main keys; a parser gone wrong finds few
    assert {"data.input_size", "train.max_minutes", "scheduler.milestones", "scheduler.gamma",
            "scheduler.warmup_ratio", "export.soc_version", "optimizer.lr"} <= set(keys), keys
    assert len(keys) >= 30, keys


@pytest.mark.parametrize("key", documented_keys())
def test_each_documented_key_is_a_settable_core_key(key):
    section = [k for k in CORE_KEYS if k.startswith(key + ".")]
    assert key in CORE_KEYS or section, f"the guide documents {key}, which is not a core key"
    config = deep_merge(CORE_DEFAULTS, {})
    for leaf in [key] if key in CORE_KEYS else section:  # a section: each of its keys
        apply_override(config, f"{leaf}={json.dumps(CORE_KEYS[leaf].default)}")
