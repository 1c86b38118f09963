#!/usr/bin/env bash
# Install detcore and plugins into .venv (created if missing). Idempotent and safe to re-run.
#   bash dev/install.sh                  core, every in-repo plugin and the example (the test command)
#   bash dev/install.sh efficientdet     core and only the named plugins (the first README command:
#                                        no mmcv build, which only fcos and solov2 need)
#   DETCORE_MMCV_DEVICE=cpu|cuda|npu     which mmcv ops to compile (fcos, solov2)
set -euo pipefail
cd "$(dirname "$0")/.."
PLUGINS=${*:-efficientdet fcos solov2}
step() { echo "[install $(date +%H:%M:%S)] $*"; }
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || { step "creating .venv"; "$PY" -m venv .venv; }
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
PIP="$VPY -m pip install --progress-bar off"
$PIP -q --upgrade pip
# torch first, pinned: the PyPI torchvision wheel does not load with the +cpu torch build.
step "torch 2.14.1 and torchvision 0.29.1 (the largest download; pip lists each package)"
$PIP "torch==2.14.1" "torchvision==0.29.1"
# The test command gets the test tools; a named-plugin install (the first README command) only
# what a run uses: the plots and TensorBoard logging.
EXTRAS=$([ $# -eq 0 ] && echo "test,fast-eval" || echo "plots,tensorboard")
step "detcore [$EXTRAS]"
$PIP -q -e ".[$EXTRAS]"
for plugin in $PLUGINS; do
  [ -f "plugins/$plugin/pyproject.toml" ] || { echo "install: no plugin plugins/$plugin (have: $(ls plugins | tr '\n' ' '))" >&2; exit 2; }
  case $plugin in fcos|solov2)
    # mmcv 2.1.0 has no wheel for torch 2.14: built once from its sdist, then cached.
    # Then detcore-mmdet, the library both plugins share (idempotent: the second is quick).
    step "mmcv 2.1.0 ops for ${DETCORE_MMCV_DEVICE:-cpu} (compiled once, ~17 min on 2 idle cores; then cached)"
    $VPY plugins/mmdet/detcore_mmdet/build_mmcv.py --device "${DETCORE_MMCV_DEVICE:-cpu}"
    $PIP -q -e plugins/mmdet;;
  esac
  step "plugin $plugin"
  $PIP -q -e "plugins/$plugin"
done
if [ $# -eq 0 ]; then
  # The worked example of docs/writing-a-plugin.md, installed as a third party would.
  step "example plugin retinanet"
  $PIP -q -e examples/detcore-retinanet
fi
.venv/bin/detcore plugins
