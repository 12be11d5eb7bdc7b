"""Iteration and wall-clock metrics (docs/architecture.md, convention 12).

Iterations to tolerance are the papers' metric; wall-clock is the user's. Both are reported for
the learned solver and the classical method measured in the same run, as ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IterationStats:
    """Summary of per-instance iteration counts to one tolerance.

    Instances that never reached the tolerance count with ``cap`` iterations (the cap they ran
    to) in the mean and percentiles, and lower ``converged_fraction``.
    """

    mean: float
    std: float
    median: float
    p10: float
    p90: float
    max: float
    converged_fraction: float
    count: int


def iteration_stats(iterations: torch.Tensor, cap: int) -> IterationStats:
    """Stats of ``iterations`` (``(B,)``; -1 marks an instance that did not reach tolerance)."""
    reached = iterations >= 0
    counts = torch.where(reached, iterations, torch.full_like(iterations, cap)).double()
    q = torch.quantile(counts, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return IterationStats(mean=float(counts.mean()),
                          std=float(counts.std(unbiased=False)) if counts.numel() > 1 else 0.0,
                          median=float(q[1]), p10=float(q[0]), p90=float(q[2]),
                          max=float(counts.max()),
                          converged_fraction=float(reached.double().mean()),
                          count=int(counts.numel()))


@dataclass(frozen=True)
class WallClock:
    baseline_seconds: float
    learned_seconds: float
    repeats: int

    @property
    def ratio(self) -> float:
        """Learned over baseline; below 1 means the learned solver is faster."""
        return self.learned_seconds / self.baseline_seconds


def compare_wall_clock(baseline: Callable[[], object], learned: Callable[[], object],
                       repeats: int = 5) -> WallClock:
    """Median wall-clock of two solves, timed alternately in one run (one warm-up each).

    ``learned`` must include the meta-solver's inference, so the ratio is what a user sees.
    """
    baseline()
    learned()
    base_t, learned_t = [], []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            baseline()
            base_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            learned()
            learned_t.append(time.perf_counter() - t)
    return WallClock(statistics.median(base_t), statistics.median(learned_t), repeats)
