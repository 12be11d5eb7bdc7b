"""Backward-Euler steps of Robertson's stiff chemical kinetics (GBMS paper, sec. 4.1, eq. 12-14,
and Appendix C.2).

Robertson's equation ``y' = f(y)``, ``y(0) = (1, 0, 0)``, with::

    f(y) = (-c1 y1 + c3 y2 y3,  c1 y1 - c2 y2^2 - c3 y2 y3,  c2 y2^2)

A task ``tau = {c1, c2, c3, h_n, y_n}`` is one backward-Euler step: find ``y_{n+1}`` with

    g_n(y) = y - h_n f(y) - y_n = 0                                   (eq. 14)

The rates are log-uniform, ``c1`` on ``[1e-4, 1]``, ``c2`` on ``[1e5, 1e9]``, ``c3`` on
``[1e2, 1e6]``. Each parameter set gives ``steps`` tasks (100 in the paper): the evaluation points
``t_1 < ... < t_steps`` are evenly spaced in ``log t`` on ``[1e-6, 1e3]`` (we read "located
log-uniformly" as this deterministic grid), ``t_0 = 0``, and task ``n`` steps from ``t_n`` to
``t_{n+1}`` with ``h_n = t_{n+1} - t_n``. The ``y_n`` are a reference trajectory from SciPy's stiff
LSODA integrator at ``rtol = 1e-10``, ``atol = 1e-14`` with the exact Jacobian, not from earlier
backward-Euler steps, so each task is independent of how the previous one was solved.

Features (7 columns, each mapped affinely to about ``[-1, 1]`` from its known range, because the
raw quantities span up to nine decades): ``log10 c1``, ``log10 c2``, ``log10 c3``, ``log10 h_n``,
``2 y1 - 1``, ``log10(y2 + 1e-14)`` and ``2 y3 - 1`` of ``y_n`` (``y1 + y2 + y3 = 1`` and ``y2`` is
tiny, so ``y2`` is read on a log scale).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..problems import NonlinearSystem
from ..validation import check_count, check_tensor
from .base import TaskBatch, TaskFamily, register_family

#: Log-uniform ranges of ``(c1, c2, c3)`` (sec. 4.1).
RATE_RANGES = ((1e-4, 1.0), (1e5, 1e9), (1e2, 1e6))


def robertson_rhs(y: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """``f(y)`` of eq. (12) for a batch: ``y`` and ``rates`` are ``(B, 3)``."""
    c1, c2, c3 = rates.unbind(1)
    y1, y2, y3 = y.unbind(1)
    return torch.stack((-c1 * y1 + c3 * y2 * y3,
                        c1 * y1 - c2 * y2 * y2 - c3 * y2 * y3,
                        c2 * y2 * y2), dim=1)


def robertson_jacobian(y: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """``df/dy``, ``(B, 3, 3)``."""
    c1, c2, c3 = rates.unbind(1)
    y1, y2, y3 = y.unbind(1)
    zero = torch.zeros_like(y1)
    rows = (torch.stack((-c1, c3 * y3, c3 * y2), dim=1),
            torch.stack((c1, -2 * c2 * y2 - c3 * y3, -c3 * y2), dim=1),
            torch.stack((zero, 2 * c2 * y2, zero), dim=1))
    return torch.stack(rows, dim=1)


class RobertsonStep(NonlinearSystem):
    """A batch of backward-Euler equations ``g_n(y) = y - h_n f(y) - y_n = 0`` (eq. 14).

    Args:
        rates: ``(B, 3)`` positive ``(c1, c2, c3)``.
        step: ``(B,)`` positive step sizes ``h_n``.
        previous: ``(B, 3)`` the solution ``y_n`` at the start of the step; also the default
            initial guess (``Psi_base`` of sec. 4.1).
        solution: optional ``(B, 3)`` roots ``y_{n+1}``.
    """

    def __init__(self, rates: torch.Tensor, step: torch.Tensor, previous: torch.Tensor,
                 solution: torch.Tensor | None = None):
        check_tensor("previous", previous, ndim=2)
        batch = previous.shape[0]
        check_tensor("previous", previous, shape=(batch, 3))
        check_tensor("rates", rates, shape=(batch, 3))
        check_tensor("step", step, shape=(batch,))
        if not bool((rates > 0).all()):
            raise ValueError("rates must be positive (c1, c2, c3 > 0)")
        if not bool((step > 0).all()):
            raise ValueError("step must be positive (h_n > 0)")
        if rates.dtype != previous.dtype or step.dtype != previous.dtype:
            raise TypeError(f"rates, step and previous must share a dtype, got {rates.dtype}, "
                            f"{step.dtype} and {previous.dtype}")
        if solution is not None:
            check_tensor("solution", solution, shape=(batch, 3))
        self.rates, self.step, self.start, self.solution = rates, step, previous, solution

    @property
    def previous(self) -> torch.Tensor:
        return self.start

    def function(self, y: torch.Tensor) -> torch.Tensor:
        return y - self.step.unsqueeze(1) * robertson_rhs(y, self.rates) - self.start

    def jacobian(self, y: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(3, dtype=y.dtype, device=y.device)
        return eye - self.step.reshape(-1, 1, 1) * robertson_jacobian(y, self.rates)

    def index(self, idx) -> RobertsonStep:
        # The data were validated on entry; the driver indexes every iteration, so skip re-checks.
        sub = object.__new__(RobertsonStep)
        sub.rates, sub.step, sub.start = self.rates[idx], self.step[idx], self.start[idx]
        sub.solution = None if self.solution is None else self.solution[idx]
        return sub


def robertson_trajectory(rates, times, rtol: float = 1e-10, atol: float = 1e-14) -> np.ndarray:
    """Reference solution of eq. (12)-(13) at ``times`` (which start at 0): ``(len(times), 3)``."""
    c1, c2, c3 = (float(c) for c in rates)

    def rhs(t, y):
        return [-c1 * y[0] + c3 * y[1] * y[2], c1 * y[0] - c2 * y[1] ** 2 - c3 * y[1] * y[2],
                c2 * y[1] ** 2]

    def jac(t, y):
        return [[-c1, c3 * y[2], c3 * y[1]],
                [c1, -2 * c2 * y[1] - c3 * y[2], -c3 * y[1]],
                [0.0, 2 * c2 * y[1], 0.0]]

    result = solve_ivp(rhs, (times[0], times[-1]), [1.0, 0.0, 0.0], method="LSODA",
                       t_eval=times, rtol=rtol, atol=atol, jac=jac)
    if not result.success:
        raise RuntimeError(f"reference integration failed for rates {rates}: {result.message}")
    return result.y.T


def _scaled(value: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map ``[low, high]`` affinely onto ``[-1, 1]``."""
    return (2 * value - (low + high)) / (high - low)


@register_family
class RobertsonFamily(TaskFamily):
    """Backward-Euler steps of Robertson's equation with random rates (GBMS paper, sec. 4.1).

    ``sample(n)`` draws ``ceil(n / steps)`` rate sets, integrates each once, and returns the first
    ``n`` of their steps in time order (set by set). The paper's protocol draws whole sets
    (10,000 sets, split 2,500/2,500/5,000), so use multiples of ``steps``.

    Args:
        steps: time steps per rate set (100 in the paper).
        t_first, t_last: the first and last evaluation points (``1e-6`` and ``1e3``).

    Example:
        >>> fam = RobertsonFamily(steps=10)
        >>> tasks = fam.sample(20, seed=0)
        >>> tasks.problem.batch_size, tasks.features.shape
        (20, torch.Size([20, 7]))
    """

    name = "robertson"

    def __init__(self, steps: int = 100, t_first: float = 1e-6, t_last: float = 1e3):
        self.steps = check_count("steps", steps, minimum=1)
        if not (isinstance(t_first, (int, float)) and isinstance(t_last, (int, float))
                and 0 < t_first < t_last and math.isfinite(t_last)):
            raise ValueError(f"need 0 < t_first < t_last (finite), got {t_first}, {t_last}")
        self.t_first, self.t_last = float(t_first), float(t_last)
        self.times = np.concatenate(
            ([0.0], np.logspace(math.log10(t_first), math.log10(t_last), self.steps)))

    def config(self):
        return {"steps": self.steps, "t_first": self.t_first, "t_last": self.t_last}

    @classmethod
    def declared_size(cls, config):
        return check_count("steps", config.get("steps", 100), minimum=1) + 1  # the times

    @property
    def feature_dim(self) -> int:
        return 7

    def sample_rates(self, n_sets: int, generator: torch.Generator) -> torch.Tensor:
        """``(n_sets, 3)`` rates, each log-uniform on its range."""
        u = torch.rand(n_sets, 3, generator=generator, dtype=torch.float64)
        low = torch.tensor([math.log(a) for a, _ in RATE_RANGES], dtype=torch.float64)
        high = torch.tensor([math.log(b) for _, b in RATE_RANGES], dtype=torch.float64)
        return torch.exp(low + (high - low) * u)

    def tasks_from_rates(self, rates: torch.Tensor) -> TaskBatch:
        """Every step of every rate set in ``rates`` (``(S, 3)``): ``S * steps`` tasks."""
        check_tensor("rates", rates, shape=(None, 3))
        if not bool((rates > 0).all()):
            raise ValueError("rates must be positive (c1, c2, c3 > 0)")
        trajectories = [robertson_trajectory(c.tolist(), self.times) for c in rates]
        states = torch.as_tensor(np.stack(trajectories), dtype=torch.float64)  # (S, steps+1, 3)
        previous = states[:, :-1].reshape(-1, 3)
        h = torch.as_tensor(np.diff(self.times), dtype=torch.float64)
        step = h.repeat(rates.shape[0])
        per_task = rates.repeat_interleave(self.steps, dim=0)
        problem = RobertsonStep(per_task, step, previous)
        return TaskBatch(problem, self.features(problem))

    def features(self, problem: RobertsonStep) -> torch.Tensor:
        logs = torch.log10(problem.rates)
        y = problem.previous
        h_low, h_high = math.log10(self.t_first), math.log10(self.t_last)
        columns = [_scaled(logs[:, i], math.log10(a), math.log10(b))
                   for i, (a, b) in enumerate(RATE_RANGES)]
        columns += [_scaled(torch.log10(problem.step), h_low, h_high),
                    2 * y[:, 0] - 1,
                    _scaled(torch.log10(y[:, 1].clamp_min(0) + 1e-14), -14.0, -2.0),
                    2 * y[:, 2] - 1]
        return torch.stack(columns, dim=1)

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        n_sets = -(-n // self.steps)
        tasks = self.tasks_from_rates(self.sample_rates(n_sets, generator))
        return tasks if len(tasks) == n else tasks.index(slice(0, n))
