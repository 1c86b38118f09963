#!/usr/bin/env bash
# The test command: the fast lane, then the slow end-to-end lane. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
VPY=.venv/bin/python
export DETCORE_CACHE="${DETCORE_CACHE:-$(mktemp -d)}" HF_HUB_OFFLINE=1
status=0
# The architecture contracts (pyproject.toml [tool.importlinter]): no cycle in core, core never
# imports a plugin, plugins never import each other.
.venv/bin/lint-imports --no-cache || status=$?
$VPY -m pytest -q "$@" || status=$?
# pytest exits 5 when a lane collects nothing; only real failures fail the run.
$VPY -m pytest -q -m "slow and not npu_sim" "$@" || { rc=$?; [ $rc -eq 5 ] || status=$rc; }
# The simulated-NPU lane: the tests marked npu_sim (every NPU branch under detcore.testing's
# torch_npu simulator, --device npu end to end for every plugin, doctor on a simulated host)
# under coverage, the CLI subprocesses and torchrun workers included (dev/coverage-npu.ini);
# then the NPU-branch lines that ran and those that did not (dev/npu_coverage.py).
export DETCORE_NPU_COVERAGE="$(mktemp -d)"
$VPY -m coverage run --rcfile=dev/coverage-npu.ini -m pytest -q -m npu_sim "$@" \
  || { rc=$?; [ $rc -eq 5 ] || status=$rc; }
$VPY -m coverage combine --rcfile=dev/coverage-npu.ini -q "$DETCORE_NPU_COVERAGE"
$VPY dev/npu_coverage.py "$DETCORE_NPU_COVERAGE/.coverage" || status=$?
exit $status
