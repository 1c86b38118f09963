"""plugins/mmdet/detcore_mmdet/build_mmcv.py: the vendored setup.py fix and the wheel cache
(nothing is built); loaded by path, as dev/install.sh runs it before anything is installed."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "detcore_mmdet" / "build_mmcv.py"


@pytest.fixture(scope="module")
def build_mmcv():
    spec = importlib.util.spec_from_file_location("detcore_mmdet_build_mmcv_by_path", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETUP_PY = """\
def get_extensions():
    extra_compile_args = {'cxx': []}
    if platform.system() != 'Windows':
        extra_compile_args['cxx'] = ['-std=c++17']
    else:
        extra_compile_args['cxx'] = ['/std:c++17']
    if is_rocm_pytorch or torch.cuda.is_available() or os.getenv('FORCE_CUDA', '0') == '1':
        extra_compile_args['nvcc'] = [cuda_args] if cuda_args else []
        extra_compile_args['cxx'] += ['-std=c++17']
"""


def test_patch_setup_py_rewrites_every_cxx17_flag(build_mmcv, tmp_path):
    setup_py = tmp_path / "setup.py"
    setup_py.write_text(SETUP_PY)
    build_mmcv.patch_setup_py(setup_py)
    text = setup_py.read_text()
    assert "c++17" not in text
    assert text.count("-std=c++20") == 2 and text.count("/std:c++20") == 1
    assert text.replace("c++20", "c++17") == SETUP_PY  # nothing else changed


def test_patch_setup_py_refuses_an_unexpected_file(build_mmcv, tmp_path):
    setup_py = tmp_path / "setup.py"
    setup_py.write_text("extra_compile_args = ['-std=c++20']\n")
    with pytest.raises(SystemExit, match="no -std=c\\+\\+17"):
        build_mmcv.patch_setup_py(setup_py)


def test_build_env_pins_old_setuptools_and_device_flags(build_mmcv):
    assert any(t.startswith("setuptools<") for t in build_mmcv.BUILD_TOOLS)  # pkg_resources
    assert build_mmcv.DEVICE_FLAGS == {"cpu": {}, "cuda": {"FORCE_CUDA": "1"},
                                       "npu": {"FORCE_NPU": "1"}}


NINJA_LIKE = ("import sys\n"
              "print('running build_ext')\n"
              "for i in (1, 2, 3):\n"
              "    print(f'  [{i}/3] c++ -MMD -c ops/op{i}.cpp -o op{i}.o')\n"
              "print('boom' if len(sys.argv) > 1 else 'done')\n"
              "sys.exit(len(sys.argv) > 1)\n")


def test_build_shows_compiled_files_of_total(build_mmcv, capsys):
    """The ~17-minute compile shows ninja's progress as "compiled n/N files", not its output."""
    build_mmcv.run_with_progress([sys.executable, "-c", NINJA_LIKE])
    out = capsys.readouterr().out
    assert [l.split(" (")[0] for l in out.splitlines()] == [
        "[build_mmcv] compiled 1/3 files", "[build_mmcv] compiled 2/3 files",
        "[build_mmcv] compiled 3/3 files"]


def test_failed_build_shows_its_last_lines_and_raises(build_mmcv, capsys):
    with pytest.raises(subprocess.CalledProcessError):
        build_mmcv.run_with_progress([sys.executable, "-c", NINJA_LIKE, "fail"])
    assert "boom" in capsys.readouterr().out


@pytest.fixture
def fake_target(build_mmcv, monkeypatch):
    """A target interpreter with torch 2.14.1+cpu on cp311; every build and pip call recorded."""
    calls = {"build": [], "pip": []}

    def fake_build(python, device, out_dir, jobs):
        calls["build"].append(device)
        out_dir.mkdir(parents=True, exist_ok=True)
        wheel = out_dir / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"
        wheel.write_bytes(b"built")
        return wheel

    monkeypatch.setattr(build_mmcv, "target_facts", lambda python: {"torch": "2.14.1+cpu", "py": "cp311"})
    monkeypatch.setattr(build_mmcv, "build_wheel", fake_build)
    monkeypatch.setattr(build_mmcv, "pip", lambda python, *args, env=None: calls["pip"].append(args))
    return calls


def test_first_run_builds_then_second_run_uses_cache(build_mmcv, fake_target, tmp_path):
    cache = tmp_path / "wheels"
    assert build_mmcv.main(["--cache-dir", str(cache), "--device", "cpu"]) == 0
    assert fake_target["build"] == ["cpu"]
    key = cache / "mmcv-2.1.0_torch-2.14.1_cpu_cp311_cpu"
    assert [p.name for p in key.iterdir()] == ["mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"]
    assert fake_target["pip"][-1][:2] == ("install", "-q")
    assert build_mmcv.main(["--cache-dir", str(cache), "--device", "cpu"]) == 0
    assert fake_target["build"] == ["cpu"], "the second run must not build"
    assert len(fake_target["pip"]) == 2  # installed from the cache both times


def test_cache_is_keyed_by_device(build_mmcv, fake_target, tmp_path):
    cache = tmp_path / "wheels"
    build_mmcv.main(["--cache-dir", str(cache), "--device", "cpu", "--no-install"])
    build_mmcv.main(["--cache-dir", str(cache), "--device", "npu", "--no-install"])
    assert fake_target["build"] == ["cpu", "npu"] and fake_target["pip"] == []
    assert sorted(p.name for p in cache.iterdir()) == [
        "mmcv-2.1.0_torch-2.14.1_cpu_cp311_cpu", "mmcv-2.1.0_torch-2.14.1_cpu_cp311_npu"]


def test_no_torch_in_target_is_one_line_exit_2(build_mmcv, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(build_mmcv, "target_facts", lambda python: {"torch": None, "py": "cp311"})
    assert build_mmcv.main(["--cache-dir", str(tmp_path)]) == 2
    assert "install torch first" in capsys.readouterr().err


def test_real_script_with_seeded_cache_does_not_build(build_mmcv, tmp_path):
    """The script as users run it: a pre-seeded cache for this interpreter means no build.

    pip is pointed at no index, so an attempted build (downloading the sdist) fails at once
    instead of compiling for 17 minutes.
    """
    facts = build_mmcv.target_facts(sys.executable)
    key = f"mmcv-2.1.0_torch-{facts['torch'].replace('+', '_')}_{facts['py']}_cpu"
    seeded = tmp_path / "wheels" / key / "mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"
    seeded.parent.mkdir(parents=True)
    seeded.write_bytes(b"not really a wheel")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--no-install", "--device", "cpu",
                           "--cache-dir", str(tmp_path / "wheels")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"using cached wheel {seeded}" in proc.stdout
    assert "compiling" not in proc.stdout and "downloading" not in proc.stdout
    assert sorted(p.name for p in seeded.parent.iterdir()) == [seeded.name]


def test_script_imports_only_the_standard_library():
    """dev/install.sh runs it with a bare interpreter: before mmcv, detcore-mmdet or torch."""
    import ast

    tree = ast.parse(SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert imported and imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
