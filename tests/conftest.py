"""Shared fixtures: the tiny test plugin, a private cache, and a CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = "tests.plugins.tiny"


def cli_env(tmp_cache: Path, modules: str = TINY, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETCORE_")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               DETCORE_PLUGIN_MODULES=modules, DETCORE_CACHE=str(tmp_cache),
               DETCORE_LOG="WARNING", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detcore-cache")


@pytest.fixture
def run_cli(cache_dir, tmp_path):
    """Run ``detcore ARGS`` in a subprocess from ``tmp_path``; return the CompletedProcess."""

    def run(*args, env=None, timeout=300, cwd=None, **extra):
        return subprocess.run([sys.executable, "-m", "detcore.cli", *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd or tmp_path,
                              env=env or cli_env(cache_dir, **extra))

    return run


@pytest.fixture(scope="session")
def tiny_data(cache_dir) -> Path:
    """The tiny config's synthetic dataset, written once per session."""
    from detcore.data.synthetic import SynthSpec, ensure_synthetic

    return ensure_synthetic(SynthSpec(num_train=24, num_val=8, min_size=96, max_size=128), cache_dir)


@pytest.fixture(scope="session")
def registry():
    from detcore.plugins import Registry

    import tests.plugins.tiny as tiny

    return Registry(extra_plugins={"tiny": tiny})


@pytest.fixture(scope="session")
def trained(tmp_path_factory, cache_dir):
    """A tiny-fcos trained for a few steps through the real CLI: (work_dir, result)."""
    import json

    work = tmp_path_factory.mktemp("trained")
    proc = subprocess.run([sys.executable, "-m", "detcore.cli", "run", "--model", "tiny-fcos",
                           "--task", "train", "--work-dir", str(work), "--no-progress"],
                          capture_output=True, text=True, timeout=600, cwd=work,
                          env=cli_env(cache_dir))
    assert proc.returncode == 0, proc.stderr
    return work, json.loads((work / "result.json").read_text())


def assert_user_error(proc, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, a single ``detcore: error:`` line naming the problem."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if "error" in l.lower()]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
