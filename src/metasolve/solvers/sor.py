"""Successive over-relaxation for batched linear systems: SOR (Gauss-Seidel at ``omega = 1``)
and its symmetric form SSOR (Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed.,
sec. 4.1; Young, 1950).

With ``A = D + L + U`` (diagonal, strictly lower and strictly upper parts), one SOR iteration
sweeps the unknowns in order, each one relaxed towards the value that zeroes its row::

    x_i <- (1 - omega) x_i + omega (b_i - sum_{j<i} a_ij x_j^new - sum_{j>i} a_ij x_j^old) / a_ii

which is, as a whole, the forward triangular solve

    (D + omega L) x_{k+1} = omega b - (omega U + (omega - 1) D) x_k.

SSOR follows each forward sweep with a backward sweep (the same with ``L`` and ``U``
exchanged). ``omega = 1`` is Gauss-Seidel (symmetric Gauss-Seidel for SSOR). For a symmetric
positive definite ``A`` both converge exactly for ``0 < omega < 2`` (Ostrowski-Reich), and no
``omega`` outside ``(0, 2)`` converges for any ``A`` (Kahan), so ``omega`` must lie in
``(0, 2)``.

The solves run on the matrix's own storage: a dense ``(B, N, N)`` or shared ``(N, N)`` matrix
uses a dense triangular solve; a sparse one (a torch sparse matrix shared by the batch, or a
:class:`~metasolve.sparse.SparseBatch`) the level-scheduled solve of
:meth:`~metasolve.sparse.SparseBatch.solve_triangular`, which reproduces the sequential sweep
exactly (the same iterates as the loop above, in the natural order of the unknowns).

The iteration is run in correction form: the residual ``r_k = b - A x_k`` gives the step
``delta = x_{k+1} - x_k`` by one triangular solve, and the next residual follows from the step
by one product with the other triangle::

    (D + omega L) delta = omega r_k,    x_{k+1} = x_k + delta,
    r_{k+1} = ((1 - omega) / omega) D delta - U delta

(the same iterates as the sweep above, up to rounding). An SOR iteration thus costs the
entries of ``A`` once (the solve reads ``D + L``, the product ``U``), and an SSOR iteration
twice. ``r_k`` is updated by a recurrence, so the driver confirms a stop on the true residual
(``recurrence_residual``).

Example:
    >>> import torch, metasolve as ms
    >>> A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 4.0, 1.0], [0.0, 1.0, 4.0]], dtype=torch.float64)
    >>> system = ms.LinearSystem(A, torch.ones(2, 3, dtype=torch.float64))
    >>> omega = torch.tensor([1.0, 1.1], dtype=torch.float64)
    >>> sol = ms.run(ms.SOR(), system, params={"omega": omega}, rtol=1e-10)
    >>> sol.iterations.tolist()
    [12, 11]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..problems import DiagonalSystem, LinearSystem
from ..sparse import SparseBatch
from ..validation import check_finite_number, check_instance_scalars
from .base import IterativeMethod, State
from .jacobi import check_nonzero_diagonal
from .registry import register_method


class Splitting:
    """``A = D + L + U`` of a batch of linear systems, for the sweeps: the products with the
    strictly lower and upper parts and the solves with ``D + s L`` and ``D + s U``, on the
    matrix's own storage (dense, a shared sparse matrix or a ``SparseBatch``)."""

    def __init__(self, problem: LinearSystem):
        self.batch = problem.batch_size
        self.diagonal_only = isinstance(problem, DiagonalSystem)
        self.sparse = None
        self.dense = None
        if self.diagonal_only:
            return
        if isinstance(problem.matrix, SparseBatch):
            self.sparse = problem.matrix
        elif problem.sparse:
            self.sparse = SparseBatch.from_shared(problem.matrix, self.batch)
        else:
            self.dense = problem.matrix

    def product(self, x: torch.Tensor, upper: bool) -> torch.Tensor:
        """``U x`` (``upper``) or ``L x``."""
        if self.diagonal_only:
            return torch.zeros_like(x)
        if self.sparse is not None:
            return self.sparse.matvec(x, "upper" if upper else "lower")
        part = torch.triu(self.dense, 1) if upper else torch.tril(self.dense, -1)
        if part.ndim == 2:
            return x @ part.T
        return torch.bmm(part, x.unsqueeze(-1)).squeeze(-1)

    def solve(self, rhs: torch.Tensor, diagonal: torch.Tensor, scale, upper: bool):
        """``y`` with ``(D + s U) y = rhs`` (``upper``) or ``(D + s L) y = rhs``; ``scale`` is
        a number or ``(B,)``."""
        if self.diagonal_only:
            return rhs / diagonal
        if self.sparse is not None:
            return self.sparse.solve_triangular(rhs, upper=upper, scale=scale,
                                                diagonal=diagonal)
        part = torch.triu(self.dense, 1) if upper else torch.tril(self.dense, -1)
        if isinstance(scale, torch.Tensor):
            part = scale.reshape(-1, 1, 1) * part
        else:
            part = scale * part
        system = part + torch.diag_embed(diagonal)
        return torch.linalg.solve_triangular(system, rhs.unsqueeze(-1),
                                             upper=upper).squeeze(-1)


@register_method
class SOR(IterativeMethod):
    """Successive over-relaxation with factor ``omega`` in ``(0, 2)`` (default 1:
    Gauss-Seidel), overridable per instance; the sweep runs over the unknowns in their order.

    Parameters ``theta`` read from ``params``: ``x0`` and ``omega`` (``(B,)`` or ``(B, 1)``,
    each in ``(0, 2)``; a learnable relaxation factor, as Jacobi's damping).

    State: the iterate ``x``, its residual ``r = b - A x`` (the monitored norm, updated from
    the step, module docstring) and the diagonal ``d``.
    """

    name = "sor"
    parameter_names = ("omega",)
    parameter_shapes = {"omega": "instance"}
    problem_type = LinearSystem
    recurrence_residual = True

    def __init__(self, omega: float = 1.0):
        omega = check_finite_number("omega", omega)
        if not 0 < omega < 2:
            raise ValueError(f"omega must lie in (0, 2): outside it {type(self).__name__} "
                             f"diverges for every matrix, got {omega}")
        self.omega = omega

    def config(self):
        return {"omega": self.omega}

    def validate(self, problem) -> None:
        super().validate(problem)
        check_nonzero_diagonal(problem, self.name)

    def _omega(self, problem: LinearSystem, params: Mapping):
        """``omega`` as a number or a ``(B,)`` tensor, checked to lie in ``(0, 2)``."""
        omega = params.get("omega")
        if omega is None:
            return self.omega
        omega = check_instance_scalars("params['omega']", omega, problem.batch_size)
        values = omega.detach()
        if not bool(((values > 0) & (values < 2)).all()):
            raise ValueError(f"params['omega'] must lie in (0, 2) for every instance, got "
                             f"values from {float(values.min()):g} to {float(values.max()):g}")
        return omega

    def init(self, problem: LinearSystem, x0, params) -> State:
        self._omega(problem, params)
        return {"x": x0, "r": problem.residual(x0), "d": problem.diagonal()}

    @staticmethod
    def _column(omega):
        return omega.unsqueeze(1) if isinstance(omega, torch.Tensor) else omega

    @staticmethod
    def _sweep(split: Splitting, x, r, d, omega, w, upper: bool, fresh: bool = False):
        """One sweep in correction form (module docstring): ``(x + delta, r_next)``; the
        forward sweep (``upper=False``) solves with ``D + omega L`` and multiplies by ``U``.
        ``fresh``: ``x`` is a temporary of the caller's, updated in place."""
        # In place on fresh temporaries only (autograd keeps what it needs): each saves a
        # vector of the batch.
        delta = split.solve(r, d, omega, upper=upper).mul_(w)  # (D + w T) delta = w r
        other = split.product(delta, upper=not upper)
        x = x.add_(delta) if fresh else x + delta
        return x, (d * delta).mul_((1 - w) / w).sub_(other)

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        omega = self._omega(problem, params)
        w = self._column(omega)
        x, r = self._sweep(Splitting(problem), state["x"], state["r"], state["d"], omega, w,
                           upper=False)
        return {"x": x, "r": r, "d": state["d"]}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["r"], dim=1)

    def replace_residual(self, problem: LinearSystem, state: State, params: Mapping,
                         residual: torch.Tensor) -> State:
        """``r = b - A x``: the next step reads nothing else."""
        return {**state, "r": residual}


@register_method
class SSOR(SOR):
    """Symmetric SOR: a forward SOR sweep, then a backward one, with factor ``omega`` in
    ``(0, 2)`` (default 1: symmetric Gauss-Seidel), overridable per instance (parameters and
    state as :class:`SOR`). For a symmetric ``A`` its iteration matrix is similar to a symmetric
    one, so SSOR is also the preconditioner of choice among the sweeps for CG."""

    name = "ssor"

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        omega = self._omega(problem, params)
        w = self._column(omega)
        split, d = Splitting(problem), state["d"]
        x, r = self._sweep(split, state["x"], state["r"], d, omega, w, upper=False)
        x, r = self._sweep(split, x, r, d, omega, w, upper=True, fresh=True)
        return {"x": x, "r": r, "d": d}
