"""Shared fixtures for detcore-efficientdet's tests (CPU only, no downloads)."""
from __future__ import annotations

import os

# Never reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One intra-op thread: on a small shared CPU, OpenMP with every core busy elsewhere
# slows EfficientDet's many small kernels down by an order of magnitude; one thread
# keeps these tests' run time predictable. Set OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def model():
    """A calibrated, untrained d0 at 128x128 (treat as read-only; deepcopy to modify)."""
    from effdet_helpers import make_model

    return make_model()
