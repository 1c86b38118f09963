"""`detcore new-plugin`: the skeleton is discovered and passes the suite's structural checks."""
from __future__ import annotations

import os
import subprocess
import sys

from .conftest import cli_env


def test_new_plugin_passes_structural_checks(run_cli, tmp_path, cache_dir):
    proc = run_cli("new-plugin", "my-det", "--dir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "detcore-my-det"
    assert (root / "pyproject.toml").read_text().count('my-det = "detcore_my_det.plugin"') == 1
    env = cli_env(cache_dir, modules="detcore_my_det.plugin")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env["PYTHONPATH"]])
    listed = subprocess.run([sys.executable, "-m", "detcore.cli", "plugins"], capture_output=True,
                            text=True, env=env)
    assert "models: my-det" in listed.stdout and "[ok]" in listed.stdout, listed.stdout
    suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(root / "tests"), "-k",
                            "registered or api_version or pins or default_config or builds"],
                           capture_output=True, text=True, env=env, cwd=root)
    assert suite.returncode == 0 and "5 passed" in suite.stdout, suite.stdout[-2000:]


def test_new_plugin_rejects_bad_names_and_existing_dirs(run_cli, tmp_path):
    bad = run_cli("new-plugin", "My Det", "--dir", tmp_path)
    assert bad.returncode == 2 and "lowercase" in bad.stderr
    assert run_cli("new-plugin", "ok", "--dir", tmp_path).returncode == 0
    again = run_cli("new-plugin", "ok", "--dir", tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
