"""The one timing engine: two training steps measured side by side, step-interleaved.

Used by ``detcore bench``'s training phase; a plugin's own scripts time nothing themselves.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

Step = Callable[[], object]


def interleave(a: Iterator[Step], b: Iterator[Step], steps: int, warmup: int, device) -> tuple[float, float]:
    """Seconds spent by ``steps`` steps of each side, after ``warmup`` untimed ones.

    ``a`` and ``b`` yield zero-argument callables, one per step; each is timed from fetching
    it (the data loading) to the end of its update, with the device synchronised before the
    clock is read. Steps alternate A B B A ..., so the drift of a shared machine hits both
    sides alike (blocks of steps were measured ±10% apart on the 2-core VMs).
    """
    from ..devices import synchronize

    def timed(side: Iterator[Step]) -> float:
        t0 = time.perf_counter()
        next(side)()
        synchronize(device)
        return time.perf_counter() - t0

    for _ in range(warmup):  # first-call allocations, loader start-up
        timed(a), timed(b)
    a_s = b_s = 0.0
    for i in range(steps):
        if i % 2 == 0:
            a_s += timed(a)
            b_s += timed(b)
        else:
            b_s += timed(b)
            a_s += timed(a)
    return a_s, b_s
