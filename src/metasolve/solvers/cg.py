"""Conjugate gradients, optionally with a polynomial preconditioner ``M^{-1} = q(A)``
(Hestenes and Stiefel; Saad, "Iterative Methods for Sparse Linear Systems", Algorithm 9.1).

The AutoSpec issue's task (a) uses a learned polynomial as a preconditioner inside CG. A
polynomial preconditioner needs nothing but products ``A @ v``, so the whole solve stays
matrix-free: ``q(t) = sum_{j<d} c_j T_j(L(t))`` in the Chebyshev basis of ``[lower, upper]``
(:func:`metasolve.polynomials.chebyshev_basis_apply`, ``d - 1`` products per application). It
must be positive on the spectrum of ``A`` for ``q(A) A`` to be positive definite; a
non-positive curvature ``p^T A p`` or ``r^T z`` stops that instance with ``Status.BREAKDOWN``.

Parameters ``theta`` (``params``, all optional): ``coefficients`` (``(B, d)``), ``lower`` and
``upper`` (``(B,)``) of the preconditioner; without them this is plain CG. Alternatively
``ConjugateGradient(preconditioner="jacobi")`` preconditions with the diagonal,
``M^{-1} = D^{-1}`` (PCG with Jacobi scaling; no extra products), which needs a positive
diagonal, and ``ConjugateGradient(preconditioner="ic0")`` with the zero-fill incomplete Cholesky
factor of each instance, ``M = L L^T`` (:meth:`metasolve.SparseBatch.incomplete_cholesky`,
computed once in ``init``; two triangular sweeps per iteration), which needs the matrix as a
:class:`~metasolve.SparseBatch`; an instance whose factorization breaks down (a pivot
``<= 0``, possible on SPD matrices that are not M-matrices) stops with ``Status.BREAKDOWN``
before its first step. For IC(0) of dense band matrices with a shift, see
:class:`~metasolve.ICCG`. Each iteration costs
one product plus ``d - 1`` for the preconditioner, and ``init`` spends ``d - 1`` on
``z_0 = q(A) r_0``: ``Solution.info`` does not count them, so callers report
``(d - 1) + iterations * d`` products (plus what the preconditioner's construction took).

Example:
    >>> import torch, metasolve as ms
    >>> A = torch.diag(torch.linspace(1.0, 10.0, 20, dtype=torch.float64))
    >>> system = ms.LinearSystem(A, torch.ones(1, 20, dtype=torch.float64))
    >>> ms.run(ms.ConjugateGradient(), system, rtol=1e-10).iterations.tolist()
    [20]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..polynomials import chebyshev_basis_apply
from ..problems import LinearSystem
from ..sparse import SparseBatch
from ..validation import check_choice
from .base import IterativeMethod, State, batch_fastest, batched_dot, safe_ratio
from .registry import register_method

PRECONDITIONER = ("coefficients", "lower", "upper")
#: The fixed preconditioners a ``ConjugateGradient`` may be built with.
PRECONDITIONERS = (None, "jacobi", "ic0")


@register_method
class ConjugateGradient(IterativeMethod):
    """CG for symmetric positive definite ``A``, with an optional polynomial preconditioner
    (``params``) or Jacobi preconditioner (``preconditioner="jacobi"``).

    Args:
        preconditioner: ``None`` (plain CG, or the polynomial one given in ``params``),
            ``"jacobi"`` (``M^{-1} = D^{-1}``) or ``"ic0"`` (``M = L L^T``, IC(0) of a
            :class:`~metasolve.SparseBatch`).
    """

    name = "cg"
    parameter_names = PRECONDITIONER
    parameter_shapes = {"coefficients": "steps", "lower": "instance", "upper": "instance"}
    problem_type = LinearSystem
    recurrence_residual = True

    def __init__(self, preconditioner: str | None = None):
        self.preconditioner = check_choice("preconditioner", preconditioner, PRECONDITIONERS)

    def config(self):
        return {} if self.preconditioner is None else {"preconditioner": self.preconditioner}

    def validate(self, problem) -> None:
        super().validate(problem)
        if self.preconditioner == "jacobi" and not bool((problem.diagonal().detach() > 0).all()):
            raise ValueError("the Jacobi preconditioner needs a positive diagonal (A symmetric "
                             "positive definite)")
        if self.preconditioner == "ic0" and not isinstance(problem.matrix, SparseBatch):
            raise ValueError(f"ConjugateGradient(preconditioner='ic0') needs the matrix as a "
                             f"SparseBatch, got {type(problem.matrix).__name__}; for dense band "
                             f"matrices use ICCG")

    def _preconditioner(self, problem: LinearSystem, params: Mapping, state: Mapping):
        given = [name for name in PRECONDITIONER if name in params]
        if self.preconditioner is not None and given:
            raise ValueError(f"ConjugateGradient(preconditioner={self.preconditioner!r}) takes "
                             f"no polynomial preconditioner, got params {given}")
        if self.preconditioner == "jacobi":
            scale = state["dinv"]
            return lambda r: r * scale
        if self.preconditioner == "ic0":
            return state["factor"].solve_factored
        if not given:
            return lambda r: r
        if len(given) != len(PRECONDITIONER):
            raise ValueError(f"a polynomial preconditioner needs all of {list(PRECONDITIONER)}, "
                             f"got only {given}")
        coefficients, lower, upper = (params[name] for name in PRECONDITIONER)
        return lambda r: chebyshev_basis_apply(problem.matvec, r, coefficients, lower, upper)

    def init(self, problem: LinearSystem, x0, params) -> State:
        extra, failed = {}, None
        if self.preconditioner == "jacobi":
            extra["dinv"] = 1.0 / problem.diagonal()
        elif self.preconditioner == "ic0":
            extra["factor"], failed = problem.matrix.incomplete_cholesky()
        precondition = self._preconditioner(problem, params, extra)
        r = problem.residual(x0)
        if problem.scipy_operator is not None:
            # SciPy's products read and write the batch as columns: every vector is held so,
            # no product copies, and in-place steps keep one buffer for the products
            # (docs/architecture.md, section 3).
            x0, r = batch_fastest(x0), batch_fastest(r)
            extra["product"] = torch.empty_like(r)
        z = precondition(r)
        rz = batched_dot(r, z)
        breakdown = ~(rz >= 0) if failed is None else ~(rz >= 0) | failed
        return {"x": x0, "r": r, "p": z, "rz": rz, "norm": _norm(r, z, rz),
                "breakdown": breakdown, **extra}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        return self._advance(problem, state, params, in_place=False)

    def step_in_place(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        """:meth:`step` with ``x``, ``r`` and ``p`` updated in place (the same arithmetic)."""
        return self._advance(problem, state, params, in_place=True)

    def _advance(self, problem: LinearSystem, state: State, params: Mapping,
                 in_place: bool) -> State:
        p, r, x = state["p"], state["r"], state["x"]
        if in_place and p is r:  # the first step without a preconditioner: p = z = r
            p = p.clone()
        # SciPy's product writes into the kept buffer (other operators take no out=).
        ap = problem.matvec(p, out=state["product"]) if in_place and "product" in state \
            else problem.matvec(p)
        pap = batched_dot(p, ap)
        step = safe_ratio(state["rz"], pap).unsqueeze(1)
        # Fused updates: no temporary vector (and no new one at all in place).
        x = x.addcmul_(step, p) if in_place else torch.addcmul(x, step, p)
        r = r.addcmul_(step, ap, value=-1) if in_place else torch.addcmul(r, step, ap, value=-1)
        del ap
        z = self._preconditioner(problem, params, state)(r)
        rz = batched_dot(r, z)
        p = torch.addcmul(z, safe_ratio(rz, state["rz"]).unsqueeze(1), p,
                          **({"out": p} if in_place else {}))
        breakdown = state["breakdown"] | ~(pap >= 0) | ~(rz >= 0)
        return {**state, "x": x, "r": r, "p": p, "rz": rz, "norm": _norm(r, z, rz),
                "breakdown": breakdown}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return state["norm"]

    def replace_residual(self, problem: LinearSystem, state: State, params: Mapping,
                         residual: torch.Tensor) -> State:
        """Residual replacement with a restart: ``r = b - A x``, ``z = q(A) r`` and the
        direction ``p = z``. Keeping the old direction would pair it with a residual it is not
        conjugate to; on SPD matrices of condition 1e4 to 1e10 the restart reached true
        residuals as small as a corrected direction (``z + beta p_{k-1}``) did, and smaller
        ones than keeping ``p``, so the simplest rule is used."""
        z = self._preconditioner(problem, params, state)(residual)
        rz = batched_dot(residual, z)
        return {**state, "r": residual, "p": z, "rz": rz, "norm": _norm(residual, z, rz),
                "breakdown": state["breakdown"] | ~(rz >= 0)}


def _norm(r: torch.Tensor, z: torch.Tensor, rz: torch.Tensor) -> torch.Tensor:
    """``||r||``: ``sqrt(r^T z)`` without a preconditioner (``z`` is ``r``), which saves a pass
    over the batch; else ``sqrt(r^T r)`` by :func:`batched_dot` (no temporary vector)."""
    squares = rz if z is r else batched_dot(r, r)
    return squares.clamp_min(torch.finfo(squares.dtype).tiny).sqrt()
