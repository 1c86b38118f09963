#!/usr/bin/env bash
# Install detcore and its plugins into .venv (created if missing). Idempotent and safe to re-run.
#   DETCORE_PLUGINS_TO_INSTALL="efficientdet fcos solov2"  which in-repo plugins to install
#   DETCORE_MMCV_DEVICE=cpu|cuda|npu                        which mmcv ops to compile (fcos, solov2)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
$VPY -m pip install -q --upgrade pip
# torch first, pinned: the PyPI torchvision wheel does not load with the +cpu torch build.
$VPY -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
$VPY -m pip install -q -e ".[test,fast-eval]"
for plugin in ${DETCORE_PLUGINS_TO_INSTALL:-efficientdet fcos solov2}; do
  [ -f "plugins/$plugin/pyproject.toml" ] || { echo "install: plugins/$plugin not present yet, skipped"; continue; }
  case $plugin in fcos|solov2)
    # mmcv 2.1.0 has no wheel for torch 2.14: built once from its sdist, then cached.
    # Then detcore-mmdet, the library both plugins share (idempotent: the second is quick).
    $VPY plugins/mmdet/detcore_mmdet/build_mmcv.py --device "${DETCORE_MMCV_DEVICE:-cpu}"
    $VPY -m pip install -q -e plugins/mmdet;;
  esac
  $VPY -m pip install -q -e "plugins/$plugin"
done
# The worked example of docs/writing-a-plugin.md, installed as a third party would.
$VPY -m pip install -q -e examples/detcore-retinanet
.venv/bin/detcore plugins
