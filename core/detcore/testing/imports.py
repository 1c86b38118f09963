"""Does importing a module pull in heavy libraries? Checked in a fresh interpreter.

``detcore plugins`` and ``detcore --help`` import every plugin's entry-point module, so that
module (and a library plugins share at import) must not import torch or its upstream at module
level: torch alone takes seconds. The check needs a fresh interpreter because a test process has
long imported torch. The conformance suite runs it on every plugin's entry point; a shared
library's tests call :func:`modules_loaded_by` themselves.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable


def modules_loaded_by(code: str, watched: Iterable[str]) -> list[str]:
    """The modules of ``watched`` (top-level names: ``"torch"``) that are in ``sys.modules``
    after a fresh interpreter, with this one's ``sys.path``, runs ``code`` (``"import
    my_plugin.plugin"``). A failing ``code`` is an AssertionError with its last error line."""
    watched = sorted(set(watched))
    probe = (f"{code}\nimport json as _j, sys as _s\n"
             f"print(_j.dumps([m for m in {watched!r} if m in _s.modules]))")
    path = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise AssertionError(f"{code!r} fails in a fresh interpreter: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def upstream_modules(requirements: Iterable[str]) -> set[str]:
    """The top-level modules the installed distributions of ``requirements`` (pip requirement
    strings, e.g. ``ModelSpec.upstream``) provide: ``"effdet==0.4.1"`` -> ``{"effdet"}``."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    names = {canonicalize_name(Requirement(r).name) for r in requirements}
    return {module for module, dists in metadata.packages_distributions().items()
            if not module.startswith("_") and any(canonicalize_name(d) in names for d in dists)}
