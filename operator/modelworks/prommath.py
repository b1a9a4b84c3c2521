"""Prometheus' maths over plain numbers: what PromQL computes, for samples scraped directly. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``(le, count)`` buckets (le may be inf)."""
    ordered = sorted((le, n) for le, n in buckets if not math.isnan(le) and math.isfinite(n))
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            width = count - prev_count
            if width <= 0:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / width
        prev_le, prev_count = le, count
    return prev_le
