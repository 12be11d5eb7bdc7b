"""One-step Newton-SOR for batched nonlinear systems ``g(y) = 0`` (GBMS paper, sec. 4.1 and
Appendix C.2, eq. 45-46).

Each iteration splits the Jacobian ``J(y_k) = D_k - L_k - U_k`` (diagonal, strictly lower and
strictly upper parts, with the signs of Saad's SOR) and takes one SOR sweep, from zero, on the
Newton equation ``J delta = -g``::

    y_{k+1} = y_k - r (D_k - r L_k)^{-1} g(y_k)

with relaxation factor ``r`` (``r = 1``: Newton-Gauss-Seidel). Paper notation: ``y^(k)_{n+1}`` is
``state["x"]``, ``g_n`` is ``problem.function``, ``r`` is the parameter ``relaxation``.

The initial guess may be corrected multiplicatively: with the parameter ``log_guess_shift``
``s`` (``(B, N)``), ``y_0 = y_start * exp(s)``, i.e. ``log y_0 = log y_start + s``. This is our
reading of eq. (47), printed as ``exp(log(y_n + tanh(W x)))``, which taken literally is the
additive ``y_n + tanh(W x)``; the text says the modification "is conducted in log scale", which
the multiplicative form is. It keeps the components' signs and their very different scales, but
cannot move a component that is exactly zero (only the first step of a trajectory has those).

Example:
    >>> import torch, metasolve as ms
    >>> from metasolve.tasks.robertson import RobertsonStep
    >>> step = RobertsonStep(rates=torch.tensor([[0.04, 3e7, 1e4]], dtype=torch.float64),
    ...                      step=torch.tensor([1e-3], dtype=torch.float64),
    ...                      previous=torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    >>> sol = ms.run(ms.NewtonSOR(relaxation=1.0), step, atol=1e-12, rtol=0.0, maxiter=500)
    >>> sol.status.tolist(), bool(sol.residual_history[-1, 0] <= 1e-12)
    ([0], True)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..problems import NonlinearSystem
from ..validation import check_finite_number, check_instance_scalars
from .base import IterativeMethod, State
from .registry import register_method


@register_method
class NewtonSOR(IterativeMethod):
    """One-step Newton-SOR with relaxation ``r`` in ``(0, 2)``, overridable per instance.

    Parameters ``theta`` read from ``params``: ``x0`` (an initial guess), ``relaxation``
    (``(B,)`` or ``(B, 1)``) and ``log_guess_shift`` (``(B, N)``, see the module docstring).
    The default initial guess is ``problem.start`` (for a time step: the previous solution).

    An instance whose Jacobian has a zero or non-finite diagonal entry cannot take the SOR sweep:
    it stops with ``Status.BREAKDOWN``.
    """

    name = "newton-sor"
    parameter_names = ("relaxation", "log_guess_shift")
    guess_parameters = ("log_guess_shift",)
    parameter_shapes = {"relaxation": "instance", "log_guess_shift": "vector"}
    problem_type = NonlinearSystem
    per_instance_state = True

    def __init__(self, relaxation: float = 1.0):
        relaxation = check_finite_number("relaxation", relaxation)
        if not 0 < relaxation < 2:
            raise ValueError(f"relaxation must lie in (0, 2) for SOR to converge on the "
                             f"linearised system, got {relaxation}")
        self.relaxation = relaxation

    def config(self):
        return {"relaxation": self.relaxation}

    def zero_guess(self, problem: NonlinearSystem) -> torch.Tensor:
        return problem.start

    def reference_norm(self, problem: NonlinearSystem) -> torch.Tensor:
        return problem.reference_norm()

    def init(self, problem: NonlinearSystem, x0, params) -> State:
        relaxation = params.get("relaxation")
        if relaxation is not None:
            values = check_instance_scalars("params['relaxation']", relaxation,
                                            problem.batch_size).detach()
            if not bool(((values > 0) & (values < 2)).all()):
                raise ValueError(f"params['relaxation'] must lie in (0, 2), got values from "
                                 f"{float(values.min()):g} to {float(values.max()):g}")
        shift = params.get("log_guess_shift")
        if shift is not None:
            x0 = x0 * torch.exp(problem.check_batch("params['log_guess_shift']", shift))
        breakdown = torch.zeros(problem.batch_size, dtype=torch.bool, device=x0.device)
        return {"x": x0, "g": problem.function(x0), "breakdown": breakdown}

    def step(self, problem: NonlinearSystem, state: State, params: Mapping) -> State:
        relaxation = params.get("relaxation", self.relaxation)
        if isinstance(relaxation, torch.Tensor):
            relaxation = relaxation.reshape(-1, 1)
        jacobian = problem.jacobian(state["x"])
        diagonal = torch.diagonal(jacobian, dim1=-2, dim2=-1)
        breakdown = ~((diagonal != 0) & torch.isfinite(diagonal)).all(dim=1)
        # A broken-down instance is frozen by the driver; give it a harmless unit pivot so its
        # NaN or Inf cannot reach the others through a batched solve or the backward pass.
        safe = torch.where(breakdown.unsqueeze(1), torch.ones_like(diagonal), diagonal)
        r = relaxation.unsqueeze(-1) if isinstance(relaxation, torch.Tensor) else relaxation
        # D - r L, where -L is the strictly lower part of J.
        sweep = torch.diag_embed(safe) + r * torch.tril(jacobian, diagonal=-1)
        sweep = torch.where(breakdown.reshape(-1, 1, 1), torch.diag_embed(safe), sweep)
        delta = torch.linalg.solve_triangular(sweep, state["g"].unsqueeze(-1), upper=False)
        x = state["x"] - relaxation * delta.squeeze(-1)
        x = torch.where(breakdown.unsqueeze(1), state["x"], x)
        return {"x": x, "g": problem.function(x), "breakdown": breakdown}

    def residual(self, problem: NonlinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["g"], dim=1)
