"""An affine three-term polynomial recurrence with free, per-step coefficients: the first of the
two paradigms in which the AutoSpec issue's engine outputs a polynomial method.

From ``x_0`` with residual ``r_0 = b - A x_0``::

    d_0 = gamma r_0
    x_{k+1} = x_k + d_k,   r_{k+1} = r_k - A d_k
    d_{k+1} = mu_k d_k + nu_k r_{k+1}

so ``r_k = p_k(A) r_0`` with ``p_k(0) = 1`` for every choice of the coefficients, and each step
costs one product ``A d_k`` and three vectors of storage. Chebyshev iteration is the member with
:func:`~metasolve.polynomials.chebyshev_recurrence_coefficients`; Richardson with step ``h`` is
``gamma = nu_k = h``, ``mu_k = 0``.

Parameters ``theta`` (``params``): ``initial`` (``gamma``, ``(B,)``), ``momentum`` (``mu``,
``(B, K)``) and ``step`` (``nu``, ``(B, K)``). The recurrence runs at most ``K`` steps with them.

Example:
    >>> import torch, metasolve as ms
    >>> from metasolve.polynomials import chebyshev_recurrence_coefficients
    >>> A = torch.diag(torch.linspace(1.0, 10.0, 20, dtype=torch.float64))
    >>> system = ms.LinearSystem(A, torch.ones(1, 20, dtype=torch.float64))
    >>> theta = chebyshev_recurrence_coefficients(torch.tensor([1.0], dtype=torch.float64),
    ...                                           torch.tensor([10.0], dtype=torch.float64), 40)
    >>> sol = ms.run(ms.PolynomialRecurrence(), system, params=theta, rtol=1e-10, maxiter=40)
    >>> bool(sol.converged.all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..problems import DiagonalSystem, LinearSystem
from ..validation import check_instance_scalars, check_tensor
from .base import IterativeMethod, State, run
from .registry import register_method


@register_method
class PolynomialRecurrence(IterativeMethod):
    """``x_{k+1} = x_k + d_k``, ``d_{k+1} = mu_k d_k + nu_k r_{k+1}``, ``d_0 = gamma r_0``."""

    name = "polynomial-recurrence"
    parameter_names = ("initial", "momentum", "step")
    parameter_shapes = {"initial": "instance", "momentum": "steps", "step": "steps"}
    problem_type = LinearSystem
    recurrence_residual = True

    def init(self, problem: LinearSystem, x0, params) -> State:
        missing = sorted({"initial", "momentum", "step"} - set(params))
        if missing:
            raise ValueError(f"{self.name} needs params {missing} (its coefficients)")
        batch = problem.batch_size
        initial = check_instance_scalars("params['initial']", params["initial"], batch)
        check_tensor("params['momentum']", params["momentum"], ndim=2)
        check_tensor("params['step']", params["step"], shape=tuple(params["momentum"].shape))
        r = problem.residual(x0)
        counter = torch.zeros(batch, dtype=torch.int64, device=x0.device)
        return {"x": x0, "r": r, "d": initial.unsqueeze(1) * r, "k": counter}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        k = state["k"]
        steps = params["momentum"].shape[1]
        if int(k.max()) >= steps:
            raise ValueError(f"the recurrence has coefficients for {steps} steps; run it with "
                             f"maxiter <= {steps}")
        x = state["x"] + state["d"]
        r = state["r"] - problem.matvec(state["d"])
        rows = torch.arange(k.shape[0], device=k.device)
        mu = params["momentum"][rows, k].unsqueeze(1)
        nu = params["step"][rows, k].unsqueeze(1)
        return {"x": x, "r": r, "d": mu * state["d"] + nu * r, "k": k + 1}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["r"], dim=1)

    def replace_residual(self, problem: LinearSystem, state: State, params: Mapping,
                         residual: torch.Tensor) -> State:
        """``r = b - A x``; ``d_k = mu_{k-1} d_{k-1} + nu_{k-1} r_k`` (``gamma r_0`` at
        ``k = 0``) is corrected by ``nu_{k-1}`` (or ``gamma``) times the change."""
        k = state["k"]
        rows = torch.arange(k.shape[0], device=k.device)
        previous = params["step"][rows, (k - 1).clamp_min(0)]
        nu = torch.where(k > 0, previous, params["initial"].reshape(-1)).unsqueeze(1)
        return {**state, "r": residual, "d": state["d"] + nu * (residual - state["r"])}


def residual_polynomial(method, params: dict[str, torch.Tensor], points: torch.Tensor,
                        steps: int) -> torch.Tensor:
    """The residual polynomial ``p(t)`` (``r_k = p(A) r_0``) of ``steps`` steps of a polynomial
    method with the parameters of one instance, at ``points`` ``(M,)``: the method run on
    ``diag(points)`` from ``x_0 = 0`` with ``b = 1``, so ``r_k`` holds ``p`` at each point.

    ``params`` holds one instance's parameters (leading dimension 1)."""
    check_tensor("points", points, ndim=1)
    system = DiagonalSystem(points.unsqueeze(0), torch.ones_like(points).unsqueeze(0))
    solution = run(method, system, params=params, fixed_iterations=steps, rtol=0.0,
                   divergence_factor=1e300)
    return system.residual(solution.x)[0]
