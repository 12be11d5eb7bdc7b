"""Chebyshev iteration for symmetric positive definite systems, given bounds on the spectrum
(the classical baseline of the AutoSpec issue; Saad, "Iterative Methods for Sparse Linear
Systems", sec. 12.3, Algorithm 12.1).

With eigenvalues in ``[a, b]``, ``0 < a < b``, centre ``theta = (a + b) / 2`` and half-width
``delta = (b - a) / 2``, the ``k``-th residual is ``r_k = p_k(A) r_0`` with the scaled Chebyshev
polynomial ``p_k(t) = T_k((theta - t) / delta) / T_k(theta / delta)``, the polynomial of degree
``k`` with ``p_k(0) = 1`` that is smallest in max norm on ``[a, b]``. The three-term recurrence::

    sigma = theta / delta,  rho_0 = 1 / sigma,  d_0 = r_0 / theta
    x_{k+1} = x_k + d_k,  r_{k+1} = r_k - A d_k
    rho_{k+1} = 1 / (2 sigma - rho_k)
    d_{k+1} = rho_{k+1} rho_k d_k + (2 rho_{k+1} / delta) r_{k+1}

takes one product ``A d_k`` per iteration and needs no inner products, so its coefficients are
fixed in advance (it is a fixed polynomial method, unlike conjugate gradients).

Example:
    >>> import torch, metasolve as ms
    >>> A = torch.diag(torch.linspace(1.0, 10.0, 20, dtype=torch.float64))
    >>> system = ms.LinearSystem(A, torch.ones(1, 20, dtype=torch.float64))
    >>> sol = ms.run(ms.Chebyshev(lower=1.0, upper=10.0), system, rtol=1e-10, maxiter=200)
    >>> bool(sol.converged.all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..problems import LinearSystem
from ..validation import check_finite_number, check_instance_scalars
from .base import IterativeMethod, State
from .registry import register_method


@register_method
class Chebyshev(IterativeMethod):
    """Chebyshev iteration on ``[lower, upper]``; the bounds may be given per instance.

    Parameters ``theta`` read from ``params``: ``x0``, ``lower`` and ``upper`` (``(B,)`` each,
    ``0 < lower < upper``). Bounds that miss part of the spectrum make the iteration diverge on
    those eigenvalues, as the method does in exact arithmetic.
    """

    name = "chebyshev"
    parameter_names = ("lower", "upper")
    parameter_shapes = {"lower": "instance", "upper": "instance"}
    problem_type = LinearSystem
    recurrence_residual = True

    def __init__(self, lower: float = 1.0, upper: float = 2.0):
        self.lower = check_finite_number("lower", lower)
        self.upper = check_finite_number("upper", upper)
        if not 0 < self.lower < self.upper:
            raise ValueError(f"need 0 < lower < upper, got lower={lower}, upper={upper}")

    def config(self):
        return {"lower": self.lower, "upper": self.upper}

    def _bounds(self, problem: LinearSystem, params: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        bounds = []
        for name, default in (("lower", self.lower), ("upper", self.upper)):
            value = params.get(name)
            if value is None:
                value = torch.full((problem.batch_size,), default, dtype=problem.dtype,
                                   device=problem.rhs.device)
            bounds.append(check_instance_scalars(f"params[{name!r}]", value, problem.batch_size))
        lower, upper = bounds
        if not bool(((lower.detach() > 0) & (lower.detach() < upper.detach())).all()):
            raise ValueError("params['lower'] and params['upper'] must satisfy "
                             "0 < lower < upper for every instance")
        return lower, upper

    def init(self, problem: LinearSystem, x0, params) -> State:
        lower, upper = self._bounds(problem, params)
        theta, delta = (upper + lower) / 2, (upper - lower) / 2
        r = problem.residual(x0)
        return {"x": x0, "r": r, "d": r / theta.unsqueeze(1), "rho": delta / theta,
                "sigma": theta / delta, "delta": delta}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        x = state["x"] + state["d"]
        r = state["r"] - problem.matvec(state["d"])
        rho = 1.0 / (2 * state["sigma"] - state["rho"])
        d = (rho * state["rho"]).unsqueeze(1) * state["d"] \
            + (2 * rho / state["delta"]).unsqueeze(1) * r
        return {"x": x, "r": r, "d": d, "rho": rho, "sigma": state["sigma"],
                "delta": state["delta"]}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["r"], dim=1)

    def replace_residual(self, problem: LinearSystem, state: State, params: Mapping,
                         residual: torch.Tensor) -> State:
        """``r = b - A x``; the direction ``d_{k+1}`` is linear in ``r_{k+1}`` (coefficient
        ``2 rho_{k+1} / delta``), so it is corrected by that multiple of the change."""
        gain = (2 * state["rho"] / state["delta"]).unsqueeze(1)
        return {**state, "r": residual, "d": state["d"] + gain * (residual - state["r"])}
