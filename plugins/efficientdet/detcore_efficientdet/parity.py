"""Compare two ``detections`` outputs (B x K x 6) detection by detection, not slot by slot.

Two detections whose scores differ by rounding noise may swap slots, and a detection
at the K-th place may be in one list and not the other, which makes a slot-wise figure
large although both engines found the same objects. Core's export check matches the
same way over every slot (``detcore.export._match_order``); this version adds what the
plugin's tests and benchmark need: a score floor, a caller-chosen match distance, and
the counts of unmatched detections on both sides.
"""
from __future__ import annotations

import numpy as np


def matched_parity(ref, got, min_score: float = 0.0, max_match_dist: float = 1.0) -> dict:
    """``ref``, ``got``: arrays B x K x 6 (x1, y1, x2, y2, score, label; label -1 empty).

    Two detections match when they have the same label and differ by at most
    ``max_match_dist`` in every coordinate (pixels) and in score; only detections
    scoring above ``min_score`` take part.

    Returns ``max_abs_diff`` (over box coordinates and scores of matched pairs),
    ``matched``, ``unmatched_ref``, ``unmatched_got`` (counts) and ``slotwise_max_abs_diff``.
    """
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"shapes differ: {ref.shape} vs {got.shape}")
    worst, matched, unmatched_ref, unmatched_got = 0.0, 0, 0, 0
    for r_img, g_img in zip(ref, got):
        r_rows = r_img[(r_img[:, 5] >= 0) & (r_img[:, 4] > min_score)]
        g_rows = g_img[(g_img[:, 5] >= 0) & (g_img[:, 4] > min_score)]
        used = np.zeros(len(g_rows), bool)
        for row in r_rows[np.argsort(-r_rows[:, 4], kind="stable")]:
            same = np.flatnonzero((g_rows[:, 5] == row[5]) & ~used)
            if not len(same):
                unmatched_ref += 1
                continue
            dist = np.abs(g_rows[same, :5] - row[:5]).max(axis=1)
            if dist.min() > max_match_dist:
                unmatched_ref += 1
                continue
            best = same[int(np.argmin(dist))]
            used[best] = True
            matched += 1
            worst = max(worst, float(dist.min()))
        unmatched_got += int((~used).sum())
    return {"max_abs_diff": worst, "matched": matched, "unmatched_ref": unmatched_ref,
            "unmatched_got": unmatched_got,
            "slotwise_max_abs_diff": float(np.abs(ref - got).max()) if ref.size else 0.0}
