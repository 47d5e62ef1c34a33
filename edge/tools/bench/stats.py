"""Summaries of millisecond samples: the numbers every table and JSON run shows."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from edge.core.metrics import percentiles

SUMMARY_KEYS = ("n", "p50", "p95", "p99", "max", "mean", "min")


def summarise(values_ms: Iterable[float]) -> dict:
    """``{"n", "p50", "p95", "p99", "max", "mean", "min"}`` of ``values_ms`` (None when empty).

    Percentiles are ``edge.core.metrics.percentile``'s, as in edge-run's stats line.
    """
    arr = np.asarray(list(values_ms), dtype=np.float64)
    if arr.size == 0:
        return {"n": 0, **{k: None for k in SUMMARY_KEYS[1:]}}
    p = percentiles(arr, (50, 95, 99))
    return {
        "n": int(arr.size),
        "p50": _r(p["p50"]),
        "p95": _r(p["p95"]),
        "p99": _r(p["p99"]),
        "max": _r(arr.max()),
        "mean": _r(arr.mean()),
        "min": _r(arr.min()),
    }


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """``a / b`` rounded, or None when either is missing or ``b`` is not positive."""
    if a is None or b is None or not b > 0:
        return None
    return round(float(a) / float(b), 4)


def _r(x) -> float:
    return round(float(x), 4)
