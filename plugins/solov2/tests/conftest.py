"""Shared settings for detcore-solov2's tests (CPU only, no downloads)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# The synthetic-data cache of these tests, unless the caller chose one.
os.environ.setdefault("DETCORE_CACHE", "/tmp/dc_cache_solo")
# One intra-op thread unless told otherwise: on a small CPU shared with other jobs, two
# OpenMP threads contending with them run SOLOv2's convolutions ~3x slower than one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# solov2_util.py sits next to the tests; make it importable whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
