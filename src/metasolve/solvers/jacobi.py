"""(Weighted) Jacobi iteration for batched linear systems.

``x_{k+1} = x_k + omega * D^{-1} (b - A x_k)`` with ``D = diag(A)``. The GBMS paper's Poisson
example (sec. 2.2.1) runs it with ``omega = 1`` from a learned initial guess ``u^(0)``.

Example:
    >>> import torch, metasolve as ms
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> system = ms.LinearSystem(A, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    >>> sol = ms.run(ms.Jacobi(), system, rtol=1e-10, maxiter=200)
    >>> bool(sol.converged.all())
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..problems import LinearSystem
from ..validation import check_positive
from .base import IterativeMethod, State
from .registry import register_method


def check_nonzero_diagonal(problem: LinearSystem, method: str) -> None:
    """A method that divides by ``diag(A)`` (Jacobi, SOR, SSOR) refuses a zero on it."""
    if bool((problem.diagonal().detach() == 0).any()):
        raise ValueError(f"matrix has a zero on its diagonal; {method} needs diag(A) != 0")


@register_method
class Jacobi(IterativeMethod):
    """Jacobi iteration; ``omega`` (default 1) is the damping, overridable per instance.

    Parameters ``theta`` read from ``params``: ``x0`` (initial guess, ``(B, N)``) and ``omega``
    (``(B,)`` or ``(B, 1)``).
    """

    name = "jacobi"
    parameter_names = ("omega",)
    parameter_shapes = {"omega": "instance"}
    problem_type = LinearSystem

    def __init__(self, omega: float = 1.0):
        self.omega = check_positive("omega", omega)

    def config(self):
        return {"omega": self.omega}

    def validate(self, problem) -> None:
        super().validate(problem)
        check_nonzero_diagonal(problem, "Jacobi")

    def init(self, problem: LinearSystem, x0, params) -> State:
        return {"x": x0, "r": problem.residual(x0), "dinv": 1.0 / problem.diagonal()}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        omega = params.get("omega", self.omega)
        if isinstance(omega, torch.Tensor):
            x = torch.addcmul(state["x"], omega.reshape(-1, 1) * state["dinv"], state["r"])
        else:
            x = torch.addcmul(state["x"], state["dinv"], state["r"], value=omega)
        return {"x": x, "r": problem.residual(x), "dinv": state["dinv"]}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["r"], dim=1)
