"""``detcore new-plugin NAME``: write a plugin package that installs, is discovered and passes
the conformance suite out of the box (a torchvision RetinaNet to replace with your model)."""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

from .errors import UserError

LAYOUT = {  # template -> path in the new package ({package} is substituted)
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "plugin.py.tmpl": "{package}/plugin.py",
    "configs.py.tmpl": "{package}/configs.py",
    "model.py.tmpl": "{package}/model.py",
    "patches.py.tmpl": "{package}/patches.py",
    "test_plugin.py.tmpl": "tests/test_{package}.py",
}


def new_plugin(name: str, parent: Path) -> Path:
    if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise UserError(f"plugin name {name!r}: use lowercase letters, digits and '-', "
                        f"starting with a letter (e.g. retinanet)")
    package = "detcore_" + name.replace("-", "_")
    target = Path(parent) / f"detcore-{name}"
    if target.exists():
        raise UserError(f"{target} already exists; choose another name or --dir")
    values = {"dist": f"detcore-{name}", "package": package, "entry": name, "model": name,
              "classname": "".join(p.capitalize() for p in name.split("-"))}
    templates = resources.files("detcore") / "templates" / "plugin"
    for source, dest in LAYOUT.items():
        path = target / dest.format(package=package)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(templates.joinpath(source).read_text()).substitute(values))
    (target / package / "__init__.py").write_text(f'"""detcore plugin {name}."""\n')
    return target
