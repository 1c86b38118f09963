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
$VPY -m pytest -q -m slow "$@" || { rc=$?; [ $rc -eq 5 ] || status=$rc; }
exit $status
