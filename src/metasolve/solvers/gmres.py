"""Restarted GMRES(m) for batched linear systems, and the batched GMRES cycle that Newton-Krylov
shares (Saad and Schultz, SIAM J. Sci. Stat. Comput. 7, 1986; Saad, "Iterative Methods for
Sparse Linear Systems", 2nd ed., Algorithm 6.9 with the Givens rotations of sec. 6.5.3, restarted
as in Algorithm 6.11).

One driver iteration is one restart cycle from ``x_k``::

    beta = ||r_k||,  v_1 = r_k / beta                       (r_k = b - A x_k)
    m Arnoldi steps, modified Gram-Schmidt:  A V_m = V_{m+1} H_m
    y_k = argmin_y ||beta e_1 - H_m y||                     (Givens rotations)
    x_{k+1} = x_k + V_m y_k,   r_{k+1} = b - A x_{k+1}

so ``x_{k+1} - x_k`` minimises the residual over the Krylov space ``K_m(A, r_k)``. The residual
of each cycle's result is computed from the iterate, as SciPy's ``gmres`` does at every restart,
so the monitored norm is the true residual (no recurrence to confirm). A cycle costs ``m + 1``
products with ``A``; the initial residual is one more. ``m`` is capped at the size ``N``, as in
SciPy.

An exact solution inside the space (``h_{j+1,j} <= eps ||A v_j||``, a "happy breakdown") ends the
Arnoldi process of that instance: its further basis vectors are zero and their coefficients 0, so
it takes the exact step; the other instances of the batch go on. This is the only breakdown
GMRES has, and it is a success, so no instance stops with ``Status.BREAKDOWN``.

The R2N2 of :mod:`metasolve.learned.r2n2` with ``n`` layers steps in the same space
``K_n(A, r_k)`` with fixed coefficients; GMRES(n) is its classical counterpart on linear systems
(R2N2 paper, sec. 3.2.1 and 4.1).

Example:
    >>> import torch, metasolve as ms
    >>> A = torch.diag(torch.linspace(1.0, 10.0, 20, dtype=torch.float64))
    >>> system = ms.LinearSystem(A, torch.ones(1, 20, dtype=torch.float64))
    >>> sol = ms.run(ms.GMRES(restart=20), system, rtol=1e-10)
    >>> sol.iterations.tolist(), bool(sol.converged.all())
    ([1], True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ..problems import LinearSystem
from ..validation import check_count
from .base import IterativeMethod, State, batched_dot, safe_ratio
from .registry import register_method


def gmres_cycle(apply: Callable[[torch.Tensor], torch.Tensor], residual: torch.Tensor,
                steps: int) -> torch.Tensor:
    """One GMRES cycle for a batch: the correction ``d`` in ``K_steps(A, r)`` that minimises
    ``||r - A d||`` per instance (the module docstring's cycle, without the update of ``x``).

    Args:
        apply: ``v -> A v`` on a batch ``(B, N)`` of vectors (linear, and 0 on a zero vector).
        residual: ``r``, ``(B, N)``.
        steps: ``m``, Arnoldi steps; at most ``N`` are taken.

    Returns:
        ``d`` ``(B, N)``; 0 for an instance whose ``r`` is 0.
    """
    steps = min(check_count("steps", steps, minimum=1), residual.shape[1])
    eps = torch.finfo(residual.dtype).eps
    beta = torch.linalg.vector_norm(residual, dim=1)
    basis = [safe_ratio(residual, beta.unsqueeze(1))]
    cosines: list[torch.Tensor] = []
    sines: list[torch.Tensor] = []
    rotated = [beta]  # beta e_1 with the rotations applied; entry j+1 is the residual norm
    triangle: list[list[torch.Tensor]] = []  # column j of R: rows 0..j
    for j in range(steps):
        w = apply(basis[j])
        before = torch.linalg.vector_norm(w, dim=1)
        column = []
        for v in basis:  # modified Gram-Schmidt
            h = batched_dot(v, w)
            w = torch.addcmul(w, h.unsqueeze(1), v, value=-1)  # no temporary vector
            column.append(h)
        after = torch.linalg.vector_norm(w, dim=1)
        exact = after <= eps * before  # the space holds the exact solution (or w is 0)
        after = torch.where(exact, torch.zeros_like(after), after)
        # One scale per instance (0 where the space is exhausted): the new basis vector is the
        # only batch-sized allocation.
        basis.append(w * safe_ratio(torch.ones_like(after), after).unsqueeze(1))
        for i in range(j):  # the earlier rotations, on the new column of H
            upper, lower = column[i], column[i + 1]
            column[i] = cosines[i] * upper + sines[i] * lower
            column[i + 1] = cosines[i] * lower - sines[i] * upper
        diagonal = column[j]
        size = torch.hypot(diagonal, after)
        zero = size == 0
        cosine = torch.where(zero, torch.ones_like(size), safe_ratio(diagonal, size))
        sine = safe_ratio(after, size)
        column[j] = size
        cosines.append(cosine)
        sines.append(sine)
        rotated.append(-sine * rotated[j])
        rotated[j] = cosine * rotated[j]
        triangle.append(column)
    # R y = g by back substitution; a zero pivot (a zero column after an exact solution) gets 0.
    coefficients: list[torch.Tensor | None] = [None] * steps
    for i in reversed(range(steps)):
        value = rotated[i]
        for k in range(i + 1, steps):
            value = value - triangle[k][i] * coefficients[k]
        coefficients[i] = safe_ratio(value, triangle[i][i])
    correction = coefficients[0].unsqueeze(1) * basis[0]
    for c, v in zip(coefficients[1:], basis[1:steps], strict=True):
        correction = torch.addcmul(correction, c.unsqueeze(1), v)
    return correction


@register_method
class GMRES(IterativeMethod):
    """Restarted GMRES(``restart``): one driver iteration is one cycle of ``restart`` Arnoldi
    steps (module docstring), for a matrix shared by the batch (dense or sparse) or one per
    instance. No parameters ``theta`` besides the initial guess ``x0``.

    Args:
        restart: ``m``, the Krylov dimension of a cycle (SciPy's ``restart``).
    """

    name = "gmres"
    problem_type = LinearSystem
    per_instance_state = True

    def __init__(self, restart: int = 20):
        self.restart = check_count("restart", restart, minimum=1)

    def config(self):
        return {"restart": self.restart}

    @property
    def products_per_iteration(self) -> int:
        """Products with ``A`` of one cycle (``restart`` Arnoldi steps and the new residual),
        for systems of at least ``restart`` unknowns."""
        return self.restart + 1

    def init(self, problem: LinearSystem, x0, params) -> State:
        return {"x": x0, "r": problem.residual(x0)}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        x = state["x"] + gmres_cycle(problem.matvec, state["r"], self.restart)
        return {"x": x, "r": problem.residual(x)}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["r"], dim=1)
