"""Median wall-clock of repeated calls, for the benchmarks' piece-by-piece tables."""

from __future__ import annotations

import statistics
import time


def median_seconds(call, repeats: int) -> float:
    """The median seconds of ``repeats`` calls of ``call()``, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
