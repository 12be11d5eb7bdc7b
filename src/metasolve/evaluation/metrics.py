"""Iteration and wall-clock metrics (docs/architecture.md, convention 12).

Iterations to tolerance are the papers' metric; wall-clock is the user's. Both are reported for
the learned solver and the classical method measured in the same run, as ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from .records import record
from .render import percent

#: Relative tolerance under which two per-instance values count as a tie in every "better than"
#: metric (:func:`compare_instances`): differences under 1% of the larger value are below what
#: any table here resolves, and they include the round-off between two methods that compute the
#: same polynomial or the same step in a different order.
TIE_RTOL = 1e-2


@dataclass(frozen=True)
class Comparison:
    """Per-instance comparison of a candidate method with a reference, lower values better.

    ``wins`` counts instances where the candidate is lower by more than ``rtol`` of the larger
    value, ``losses`` where it is higher by more than that, ``ties`` the rest (docs/architecture.md,
    convention 12).
    """

    wins: int
    ties: int
    losses: int
    rtol: float

    @property
    def count(self) -> int:
        return self.wins + self.ties + self.losses

    def fractions(self) -> dict[str, float]:
        """``{"better": ..., "tied": ..., "worse": ...}`` as fractions of the instances."""
        n = max(self.count, 1)
        return {"better": self.wins / n, "tied": self.ties / n, "worse": self.losses / n}

    def __str__(self) -> str:
        return " / ".join(percent(v) for v in self.fractions().values())


def compare_instances(candidate, reference, rtol: float = TIE_RTOL,
                      atol: float = 0.0) -> Comparison:
    """Wins, ties and losses of ``candidate`` against ``reference`` (same shape, lower is
    better: residuals, errors, iteration counts).

    Two values tie when they differ by at most ``rtol`` times the larger or are both at most
    ``atol`` (both below a convergence tolerance, say). A value that is NaN or infinite counts
    as worse than every finite one; two non-finite values tie. ``rtol`` must be in [0, 1) and
    ``atol`` non-negative.

    >>> compare_instances([1.0, 1.0, 2.0, float("nan")], [1.005, 2.0, 1.0, float("inf")])
    Comparison(wins=1, ties=2, losses=1, rtol=0.01)
    """
    if not 0 <= rtol < 1:
        raise ValueError(f"rtol must be in [0, 1), got {rtol!r}")
    if not atol >= 0:
        raise ValueError(f"atol must be non-negative, got {atol!r}")
    a, b = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v,
                       dtype=np.float64).reshape(-1) for v in (candidate, reference))
    if a.shape != b.shape:
        raise ValueError(f"candidate and reference must have the same number of instances, "
                         f"got {a.size} and {b.size}")
    a = np.where(np.isfinite(a), a, np.inf)
    b = np.where(np.isfinite(b), b, np.inf)
    with np.errstate(invalid="ignore"):
        close = np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b))
    both_small = (np.abs(a) <= atol) & (np.abs(b) <= atol)
    tied = (a == b) | (close & np.isfinite(a) & np.isfinite(b)) | both_small
    wins = int(((a < b) & ~tied).sum())
    losses = int(((a > b) & ~tied).sum())
    return Comparison(wins=wins, ties=a.size - wins - losses, losses=losses, rtol=rtol)


def comparison_records(experiment: str, method: str, against: str, comparison: Comparison,
                       **settings) -> list[dict]:
    """Three records, ``fraction_better_than_<against>``, ``fraction_tied_with_<against>`` and
    ``fraction_worse_than_<against>``, each carrying the tie tolerance as ``tie_rtol``."""
    names = {"better": f"fraction_better_than_{against}", "tied": f"fraction_tied_with_{against}",
             "worse": f"fraction_worse_than_{against}"}
    return [record(experiment, method, names[key], value, tie_rtol=comparison.rtol, **settings)
            for key, value in comparison.fractions().items()]


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
    others: dict[str, float] = field(default_factory=dict)  # name -> median seconds

    @property
    def ratio(self) -> float:
        """Learned over baseline; below 1 means the learned solver is faster."""
        return self.learned_seconds / self.baseline_seconds

    def ratio_to(self, name: str) -> float:
        """Learned over the other solver ``name``."""
        return self.learned_seconds / self.others[name]


def compare_wall_clock(baseline: Callable[[], object], learned: Callable[[], object],
                       repeats: int = 5,
                       others: Mapping[str, Callable[[], object]] | None = None) -> WallClock:
    """Median wall-clock of two solves (and of ``others``, e.g. a practitioner's solver on the
    same instances), timed alternately in one run after one warm-up each.

    ``learned`` must include the meta-solver's inference, so the ratio is what a user sees.
    """
    solves = {"baseline": baseline, "learned": learned, **(others or {})}
    for solve in solves.values():
        solve()
    times: dict[str, list[float]] = {name: [] for name in solves}
    with torch.no_grad():
        for _ in range(repeats):
            for name, solve in solves.items():
                t = time.perf_counter()
                solve()
                times[name].append(time.perf_counter() - t)
    median = {name: statistics.median(values) for name, values in times.items()}
    return WallClock(median.pop("baseline"), median.pop("learned"), repeats, median)
