"""`detcore new-plugin`: the skeleton is discovered, its README says what it does, and it
passes its own tests (the whole conformance suite, in the slow lane)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import cli_env


def new_plugin(run_cli, tmp_path, cache_dir):
    """``detcore new-plugin my-det``: ``(root, env)``, the env loading it without installing."""
    proc = run_cli("new-plugin", "my-det", "--dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "detcore-my-det"
    env = cli_env(cache_dir, modules="detcore_my_det.plugin")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env["PYTHONPATH"]])
    return root, env


def test_new_plugin_passes_structural_checks(run_cli, tmp_path, cache_dir):
    root, env = new_plugin(run_cli, tmp_path, cache_dir)
    assert (root / "pyproject.toml").read_text().count('my-det = "detcore_my_det.plugin"') == 1
    listed = subprocess.run([sys.executable, "-m", "detcore.cli", "plugins"], capture_output=True,
                            text=True, env=env)
    assert "models: my-det\n" in listed.stdout and "[ok]" in listed.stdout, listed.stdout
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(root / "tests"), "-k",
                            "registered or api_version or pins or default_config or builds or "
                            "import_light or config_keys or bad_model_key"],
                           capture_output=True, text=True, env=env, cwd=root)
    assert suite.returncode == 0 and "8 passed" in suite.stdout, suite.stdout[-2000:]


def test_new_plugin_rejects_bad_names_and_existing_dirs(run_cli, tmp_path):
    bad = run_cli("new-plugin", "My Det", "--dir", tmp_path)
    assert bad.returncode == 2 and "lowercase" in bad.stderr
    assert run_cli("new-plugin", "ok", "--dir", tmp_path).returncode == 0
    again = run_cli("new-plugin", "ok", "--dir", tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_new_plugin_installed_does_what_its_readme_says(run_cli, tmp_path, cache_dir):
    """Installed (pip, into a folder on PYTHONPATH), the new plugin is listed as its README's
    `detcore plugins` line says, and the README's `python -m pytest tests` passes: all of it,
    with no pytest deprecation warning from the conformance suite."""
    root, _ = new_plugin(run_cli, tmp_path, cache_dir)
    readme = (root / "README.md").read_text()
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-build-isolation", "--target", str(site), str(root)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = cli_env(cache_dir, modules="")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    assert "detcore plugins             # shows plugin my-det providing model my-det" in readme
    listed = subprocess.run([sys.executable, "-m", "detcore.cli", "plugins"], capture_output=True,
                            text=True, env=env)
    lines = listed.stdout.splitlines()
    assert "my-det  detcore-my-det 0.1.0  [ok]" in lines, listed.stdout
    block = lines[lines.index("my-det  detcore-my-det 0.1.0  [ok]") + 1:]
    block = block[:next((i for i, line in enumerate(block) if not line.startswith("  ")),
                        len(block))]
    assert "  models: my-det" in block, listed.stdout
    assert ("python -m pytest tests      # detcore's conformance suite, and a bad --set model.* "
            "refused") in readme
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-W", "error::pytest.PytestDeprecationWarning", "tests"],
                           capture_output=True, text=True, env=env, cwd=root, timeout=900)
    assert suite.returncode == 0 and " passed" in suite.stdout, suite.stdout[-3000:]
