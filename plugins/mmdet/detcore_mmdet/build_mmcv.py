#!/usr/bin/env python3
"""Build (once) and install the pinned mmcv with compiled ops, for torch 2.14.

Why this exists: mmcv 2.1.0 (the newest mmcv that mmdet 3.3.0 accepts) has no
prebuilt wheel for torch 2.14, and its sdist does not compile against it as
shipped. Two things are wrong, both in ``setup.py``:

1. it passes ``-std=c++17`` (and ``/std:c++17``), but torch 2.14's headers need
   C++20: the vendored fix rewrites those flags to C++20;
2. it imports ``pkg_resources``, which setuptools >= 81 no longer ships: the
   build runs with an older setuptools put first on ``PYTHONPATH`` for the
   build only, so the user's environment is left as it is.

The wheel is built against the torch already installed in the target Python
(``--no-build-isolation``) and cached under ``--cache-dir`` keyed by mmcv,
torch, Python and device, so a second install on the same machine takes
seconds instead of ~17 minutes on 2 cores.

Devices: ``cpu`` (CPU ops), ``cuda`` (``FORCE_CUDA=1``, needs nvcc), ``npu``
(``FORCE_NPU=1``, needs torch_npu on a host with CANN).

Standard library only: it runs before mmcv (and so before detcore-mmdet and the plugins
that use it) exists, by path: ``python plugins/mmdet/detcore_mmdet/build_mmcv.py``.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

MMCV_VERSION = "2.1.0"
BUILD_TOOLS = ["setuptools<70", "wheel", "ninja"]
DEVICE_FLAGS = {"cpu": {}, "cuda": {"FORCE_CUDA": "1"}, "npu": {"FORCE_NPU": "1"}}


def log(msg: str) -> None:
    print(f"[build_mmcv] {msg}", flush=True)


def pip(python: str, *args: str, env: dict | None = None) -> None:
    subprocess.run([python, "-m", "pip", *args], check=True, env=env)


#: ninja's status prefix on each compile line (torch's BuildExtension runs ``ninja -v``)
NINJA_STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]")


def run_with_progress(cmd: list[str], env: dict | None = None, every_s: float = 0.0) -> None:
    """Run a build, printing one line per compiled file ("compiled n/N files, m:ss") from
    ninja's ``[n/N]`` status lines instead of its full output, which stays hidden unless the
    build fails (then its last lines are shown)."""
    t0, last = time.monotonic(), -every_s
    tail = collections.deque(maxlen=80)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        for line in proc.stdout:
            tail.append(line)
            step = NINJA_STEP.match(line)
            now = time.monotonic()
            if step and now - last >= every_s:
                last = now
                minutes, seconds = divmod(int(now - t0), 60)
                log(f"compiled {step[1]}/{step[2]} files ({minutes}:{seconds:02d})")
    if proc.returncode:
        sys.stdout.write("".join(tail))
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def target_facts(python: str) -> dict:
    """Ask the target interpreter which torch and Python it has."""
    code = (
        "import json,sys\n"
        "try:\n import torch; t=torch.__version__\n"
        "except Exception as e: t=None\n"
        "print(json.dumps({'torch': t, 'py': 'cp%d%d' % sys.version_info[:2]}))"
    )
    out = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def patch_setup_py(setup_py: Path) -> None:
    """The vendored fix: C++17 flags -> C++20 (torch 2.14 headers need it)."""
    text = setup_py.read_text()
    patched = text.replace("-std=c++17", "-std=c++20").replace("/std:c++17", "/std:c++20")
    if patched == text:
        raise SystemExit("build_mmcv: setup.py has no -std=c++17 flag to patch; "
                         f"is this mmcv {MMCV_VERSION}?")
    setup_py.write_text(patched)


def build_wheel(python: str, device: str, out_dir: Path, jobs: int) -> Path:
    with tempfile.TemporaryDirectory(prefix="detcore-mmcv-") as tmp:
        tmp = Path(tmp)
        tools = tmp / "tools"
        pip(python, "install", "-q", "--target", str(tools), *BUILD_TOOLS)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(tools), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        log(f"downloading the mmcv {MMCV_VERSION} sdist")
        pip(python, "download", "-q", "--no-deps", "--no-binary", ":all:",
            "--no-build-isolation", f"mmcv=={MMCV_VERSION}", "-d", str(tmp), env=env)
        with tarfile.open(next(tmp.glob(f"mmcv-{MMCV_VERSION}.tar.gz"))) as tar:
            tar.extractall(tmp, filter="data")
        src = tmp / f"mmcv-{MMCV_VERSION}"
        patch_setup_py(src / "setup.py")
        env.update(MMCV_WITH_OPS="1", MAX_JOBS=str(jobs), **DEVICE_FLAGS[device])
        log(f"compiling mmcv ops for {device} with {jobs} jobs (about 17 min on 2 cores)")
        run_with_progress([python, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp / "dist"), str(src)], env=env)
        wheel = next((tmp / "dist").glob("mmcv-*.whl"))
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / (wheel.name + ".partial")
        shutil.copy2(wheel, partial)
        final = out_dir / wheel.name
        os.replace(partial, final)  # a killed build never leaves a half wheel in the cache
        return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=sorted(DEVICE_FLAGS),
                        default=os.environ.get("DETCORE_MMCV_DEVICE", "cpu"))
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter to install into (default: this one)")
    parser.add_argument("--cache-dir", type=Path, default=Path(os.environ.get(
        "DETCORE_CACHE", Path.home() / ".cache" / "detcore")) / "wheels")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-install", action="store_true", help="only build and cache")
    args = parser.parse_args(argv)

    facts = target_facts(args.python)
    if not facts["torch"]:
        print("build_mmcv: torch is not installed in the target Python; "
              "install torch first (pip install torch==2.14.1 torchvision==0.29.1)",
              file=sys.stderr)
        return 2
    key = f"mmcv-{MMCV_VERSION}_torch-{facts['torch'].replace('+', '_')}_{facts['py']}_{args.device}"
    cache = args.cache_dir / key
    cached = sorted(glob.glob(str(cache / "mmcv-*.whl")))
    if cached:
        wheel = Path(cached[-1])
        log(f"using cached wheel {wheel}")
    else:
        wheel = build_wheel(args.python, args.device, cache, args.jobs)
        log(f"cached {wheel}")
    if not args.no_install:
        pip(args.python, "install", "-q", str(wheel))
        log(f"installed {wheel.name} ({args.device} ops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
