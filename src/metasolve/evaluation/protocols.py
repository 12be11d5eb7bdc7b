"""Evaluation protocols that several experiments (and users) share: iteration records of a table
row, solving a large test set in chunks, the best constant parameter, and the per-task oracle.

The GBMS paper's tables (Tables 1-3) report, per row, the mean iterations to a test tolerance
with instances that never reach it counted at the cap; a row is a meta-solver trained with a
loss ``L_m`` (``m`` iterations) or ``L~_eps`` (tolerance ``eps``), or a classical choice
(``Psi_base``) or an oracle (``Psi_best``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict

import torch

from ..solvers.base import IterativeMethod, run
from .metrics import iteration_stats
from .records import record

#: Record metric for each statistic of :class:`~metasolve.evaluation.metrics.IterationStats`.
STAT_METRICS = {"mean": "mean_iterations", "std": "std_iterations",
                "median": "median_iterations", "converged_fraction": "converged_fraction"}


def loss_cell(loss: str | None, value=None) -> dict:
    """The record keys that locate a table row trained with ``loss`` (``"L_m"`` with ``m =
    value``, ``"L_eps"`` with ``eps = value``), or a row without training (``loss=None``)."""
    return {"loss": loss, "m": value if loss == "L_m" else None,
            "train_eps": value if loss == "L_eps" else None}


def iteration_records(experiment: str, method: str, counts: torch.Tensor, cap: int,
                      cell: Mapping, stats: Sequence[str] = ("mean", "std", "converged_fraction"),
                      paper: Mapping[str, float | None] | None = None) -> list[dict]:
    """Records of per-instance iteration ``counts`` (-1: tolerance not reached, counted as
    ``cap``), located by the ``cell`` keys: one per statistic in ``stats``, each with the
    paper's number from ``paper`` (keyed by statistic) where there is one."""
    summary = asdict(iteration_stats(counts, cap))
    paper = paper or {}
    return [record(experiment, method, STAT_METRICS[name], summary[name], paper.get(name),
                   **cell) for name in stats]


def constant_params(name: str, value: float, batch: int) -> dict[str, torch.Tensor]:
    """``{name: value}`` for every one of ``batch`` instances (a classical, constant choice of a
    per-instance parameter), in float64."""
    return {name: torch.full((batch,), float(value), dtype=torch.float64)}


def _counts_in_chunks(solve: Callable[[slice], object], batch: int, chunk: int) -> torch.Tensor:
    """``(B,)`` iterations of ``solve(idx)`` over consecutive ``chunk``-sized slices (-1: the
    tolerance was not reached), without autograd."""
    out = []
    with torch.no_grad():
        for start in range(0, batch, chunk):
            solution = solve(slice(start, start + chunk))
            out.append(torch.where(solution.converged, solution.iterations, -1))
    return torch.cat(out)


def iterations_in_chunks(method: IterativeMethod, problem, params: Mapping[str, torch.Tensor],
                         rtol: float, maxiter: int, chunk: int, atol: float = 0.0
                         ) -> torch.Tensor:
    """``(B,)`` iterations to ``max(rtol * reference, atol)`` of ``method`` on ``problem`` (-1:
    not reached), solved ``chunk`` instances at a time to bound memory; ``params`` are per
    instance."""
    return _counts_in_chunks(
        lambda idx: run(method, problem.index(idx), params={k: v[idx] for k, v in params.items()},
                        rtol=rtol, atol=atol, maxiter=maxiter), problem.batch_size, chunk)


def learned_iterations_in_chunks(solver, tasks, rtol: float, maxiter: int, chunk: int,
                                 safeguard: bool = False) -> torch.Tensor:
    """:func:`iterations_in_chunks` for a :class:`~metasolve.learned.LearnedSolver` on
    ``tasks``: each chunk goes through ``solver.solve`` (inference included; unguarded by
    default, as the papers' tables are)."""
    return _counts_in_chunks(
        lambda idx: solver.solve(tasks.index(idx), rtol=rtol, maxiter=maxiter,
                                 safeguard=safeguard), len(tasks), chunk)


def per_task_oracle(iterations: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``Psi_best``: from ``(G, B)`` iterations of ``G`` candidate parameters on ``B`` tasks
    (-1: not reached), the index of the best candidate per task and its iterations (an
    unreached candidate ranks below any that reached, ties go to the first)."""
    cost = torch.where(iterations >= 0, iterations, cap + 1)
    best = cost.argmin(dim=0)
    return best, iterations[best, torch.arange(iterations.shape[1])]


def best_constant(score: Callable[[float], float], start: float, stop: float, coarse: float,
                  fine: float) -> dict:
    """The constant parameter in ``[start, stop)`` with the lowest ``score`` (for example the
    mean iterations on the training tasks), by brute force: a coarse grid from ``start``
    upwards, stopped once the score exceeds twice the best seen (past the optimum of a
    relaxation factor every instance slows and more of them hit the cap), then a fine grid
    around the coarse optimum. Returns ``value``, its ``score`` and the ``grid`` of
    ``(value, score)`` pairs tried."""
    scores: dict[float, float] = {}

    def evaluate(value: float) -> float:
        value = round(value, 6)
        if value not in scores:
            scores[value] = score(value)
        return scores[value]

    value = start
    while value < stop - 1e-9:
        if evaluate(value) > 2 * min(scores.values()):
            break
        value += coarse
    best = min(scores, key=scores.get)
    steps = round(coarse / fine)
    for k in range(-steps + 1, steps):
        candidate = best + k * fine
        if start <= candidate < stop:
            evaluate(candidate)
    best = min(scores, key=scores.get)
    return {"value": best, "score": scores[best], "grid": sorted(scores.items())}
