"""Steps of the van der Pol oscillator (R2N2 paper, sec. 4.3, eq. 23)::

    x1' = x2,    x2' = a (1 - x1^2) x2 - x1

with ``a ~ U(1.35, 1.65)``, ``x1(0) ~ U(-4, -3)``, ``x2(0) ~ U(0, 2)`` and the step size ``h``
drawn from equidistant values in ``[0.01, 0.1]``. Each task carries a reference trajectory at
``t = k h``, ``k = 0..T``, from SciPy's ``solve_ivp`` (DOP853) at tolerance 1e-10 (the paper used
``odeint`` at 1e-8), against which an integrator's ``k``-th iterate is measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..problems import InitialValueProblem
from ..validation import check_count, check_finite_number, check_positive, check_tensor
from .base import TaskBatch, TaskFamily, register_family


def van_der_pol(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The right-hand side of eq. (23) for a batch ``x`` ``(B, 2)`` and ``a`` ``(B,)``."""
    x1, x2 = x[:, 0], x[:, 1]
    return torch.stack([x2, a * (1 - x1 ** 2) * x2 - x1], dim=1)


def reference_trajectory(a: float, start: Sequence[float], h: float, steps: int,
                         tolerance: float = 1e-10) -> np.ndarray:
    """``(steps + 1, 2)``: the solution at ``t = 0, h, ..., steps h`` (``solve_ivp``, DOP853)."""
    from scipy.integrate import solve_ivp

    times = h * np.arange(steps + 1)
    result = solve_ivp(lambda t, y: [y[1], a * (1 - y[0] ** 2) * y[1] - y[0]], (0.0, times[-1]),
                       list(start), method="DOP853", t_eval=times, rtol=tolerance,
                       atol=tolerance)
    if not result.success:
        raise RuntimeError(f"reference integration failed: {result.message}")
    out = result.y.T.copy()
    out[0] = start
    return out


@dataclass(frozen=True)
class VanDerPolSteps(InitialValueProblem):
    """A batch of van der Pol problems: coefficients ``a`` ``(B,)``, ``start`` ``(B, 2)``,
    ``step_size`` ``(B,)`` and optionally the ``reference`` trajectory and ``error_scale``."""

    a: torch.Tensor
    start: torch.Tensor
    step_size: torch.Tensor
    reference: torch.Tensor | None = None
    error_scale: torch.Tensor | None = None

    def __post_init__(self):
        self.check_data()
        check_tensor("a", self.a, shape=(self.batch_size,))
        if self.size != 2:
            raise ValueError(f"start must have shape (B, 2), got {tuple(self.start.shape)}")

    def function(self, x: torch.Tensor) -> torch.Tensor:
        return van_der_pol(x, self.a)

    def index(self, idx) -> VanDerPolSteps:
        reference = None if self.reference is None else self.reference[idx]
        scale = None if self.error_scale is None else self.error_scale[idx]
        return VanDerPolSteps(self.a[idx], self.start[idx], self.step_size[idx], reference,
                              scale)


def _real(value):
    # NumPy scalars (a linspace's entries) are real numbers too; the checks want Python floats.
    return float(value) if isinstance(value, np.floating | np.integer) else value


def _range(name: str, value) -> tuple[float, float]:
    """A ``(low, high)`` pair of finite numbers with ``low <= high``."""
    pair = tuple(value) if isinstance(value, Sequence | np.ndarray) else None
    if pair is None or len(pair) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    low, high = (check_finite_number(name, _real(v)) for v in pair)
    if low > high:
        raise ValueError(f"{name} must have low <= high, got ({low}, {high})")
    return low, high


@register_family
class VanDerPolFamily(TaskFamily):
    """Van der Pol steps of sec. 4.3 with reference trajectories of ``steps`` steps.

    Args:
        steps: ``T``, reference steps per task (an integrator may take at most that many).
        order: ``p``; the error scale is ``h^(p/2)``, so a squared relative error is the paper's
            ``h^-p``-weighted squared error (sec. 4.3 sets ``p = n``, the R2N2's layers).
        step_sizes: the values ``h`` is drawn from (default: 10 equidistant in [0.01, 0.1]);
            non-empty, each finite and positive.
        a_range, x1_range, x2_range: ``(low, high)`` of the uniform distributions of ``a``,
            ``x1(0)`` and ``x2(0)``; finite with ``low <= high``.
        tolerance: the reference integration's ``rtol`` and ``atol``.

    Features are ``(a, x1(0), x2(0), h)``.
    """

    name = "van-der-pol"

    def __init__(self, steps: int = 5, order: int = 3, step_sizes: Sequence[float] | None = None,
                 a_range: Sequence[float] = (1.35, 1.65), x1_range: Sequence[float] = (-4.0, -3.0),
                 x2_range: Sequence[float] = (0.0, 2.0), tolerance: float = 1e-10):
        self.steps = check_count("steps", steps, minimum=1)
        self.order = check_count("order", order)
        values = np.linspace(0.01, 0.1, 10).tolist() if step_sizes is None else list(step_sizes)
        if not values:
            raise ValueError("step_sizes must hold at least one step size, got none")
        self.step_sizes = tuple(check_positive("step_sizes", _real(h)) for h in values)
        self.a_range = _range("a_range", a_range)
        self.x1_range = _range("x1_range", x1_range)
        self.x2_range = _range("x2_range", x2_range)
        self.tolerance = check_positive("tolerance", tolerance)

    @classmethod
    def declared_size(cls, config):
        steps = check_count("steps", config.get("steps", 5), minimum=1)
        order = check_count("order", config.get("order", 3))
        return 2 * steps * (order + 2)  # the (x1, x2) states of every step and stage

    def config(self):
        return {"steps": self.steps, "order": self.order, "step_sizes": list(self.step_sizes),
                "a_range": list(self.a_range), "x1_range": list(self.x1_range),
                "x2_range": list(self.x2_range), "tolerance": self.tolerance}

    @property
    def feature_dim(self) -> int:
        return 4

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        def uniform(bounds):
            u = torch.rand(n, generator=generator, dtype=torch.float64)
            return bounds[0] + (bounds[1] - bounds[0]) * u

        a, x1, x2 = uniform(self.a_range), uniform(self.x1_range), uniform(self.x2_range)
        pick = torch.randint(0, len(self.step_sizes), (n,), generator=generator)
        h = torch.tensor(self.step_sizes, dtype=torch.float64)[pick]
        start = torch.stack([x1, x2], dim=1)
        reference = torch.from_numpy(np.stack([
            reference_trajectory(float(a[i]), start[i].tolist(), float(h[i]), self.steps,
                                 self.tolerance) for i in range(n)]))
        problem = VanDerPolSteps(a, start, h, reference, h ** (self.order / 2))
        return TaskBatch(problem, torch.stack([a, x1, x2, h], dim=1))
