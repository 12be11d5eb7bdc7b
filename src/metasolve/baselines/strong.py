"""The classical solvers a practitioner runs, as batch baselines for ``metasolve bench``: batched
dense direct solves, SciPy's sparse direct solver and conjugate gradients, pyamg's
smoothed-aggregation multigrid as a CG preconditioner, SciPy's ``newton_krylov`` and a batched
Newton method with the exact Jacobian, for the smallest eigenpairs of a sparse matrix ARPACK in
shift-invert mode and ``lobpcg`` with a multigrid preconditioner, and SciPy's ``solve_ivp`` for
initial-value problems.

Every function solves a batch and returns a :class:`BatchResult` (answers, per-instance
iterations where the solver counts them, and whether each instance met its tolerance), so the
bench can check every column's answers against the same reference. The iterative ones take an
optional start ``x0`` and (for CG) a preconditioner, which is how the learned parts of
:mod:`metasolve.baselines.deploy` are fed in. Where the batch shares one matrix, a factorisation
or multigrid hierarchy is built once for the batch (what a practitioner does); per-instance
matrices get one each. Arrays are NumPy, float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ..extras import require
from ..problems import LinearSystem
from ..validation import check_positive


@dataclass
class BatchResult:
    """``x`` ``(B, N)`` answers, ``iterations`` ``(B,)`` (-1 where the solver does not count
    them, e.g. a direct solve), ``converged`` ``(B,)`` bool."""

    x: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def direct_result(x: np.ndarray) -> BatchResult:
    """A direct solve's result: no iterations, every instance solved (up to round-off)."""
    x = np.asarray(x)
    finite = np.isfinite(x).all(axis=1)
    return BatchResult(x, np.full(x.shape[0], -1), finite)


def scipy_matrices(problem: LinearSystem) -> list[sp.csr_matrix]:
    """The batch's matrix as SciPy CSR: one entry when it is shared, else one per instance."""
    matrix = problem.matrix
    if problem.sparse:
        crow, col = matrix.crow_indices().numpy(), matrix.col_indices().numpy()
        values = matrix.values().detach().double().numpy()
        return [sp.csr_matrix((values, col, crow), shape=tuple(matrix.shape))]
    dense = matrix.detach().double().numpy()
    if dense.ndim == 2:
        return [sp.csr_matrix(dense)]
    return [sp.csr_matrix(a) for a in dense]


def _matrix_of(matrices: Sequence, i: int):
    return matrices[0] if len(matrices) == 1 else matrices[i]


def dense_direct(problem: LinearSystem) -> BatchResult:
    """``torch.linalg.solve`` on the batch: one LU factorisation of a shared matrix solved
    against all right-hand sides at once, or a batched factorisation of per-instance ones."""
    matrix = problem.matrix.to_dense() if problem.sparse else problem.matrix
    rhs = problem.rhs.detach()
    with torch.no_grad():
        if matrix.ndim == 2:
            x = torch.linalg.solve(matrix, rhs.T).T
        else:
            x = torch.linalg.solve(matrix, rhs)
    return direct_result(x.numpy())


def dense_cholesky(problem: LinearSystem) -> BatchResult:
    """A batched Cholesky solve (``torch.linalg.cholesky`` and ``cholesky_solve``): for SPD
    matrices, half the work of an LU."""
    matrix = problem.matrix.to_dense() if problem.sparse else problem.matrix
    rhs = problem.rhs.detach()
    with torch.no_grad():
        if matrix.ndim == 2:
            factor = torch.linalg.cholesky(matrix)
            x = torch.cholesky_solve(rhs.T, factor).T
        else:
            factor = torch.linalg.cholesky(matrix)
            x = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
    return direct_result(x.numpy())


def sparse_direct(matrices: Sequence[sp.spmatrix], rhs: np.ndarray) -> BatchResult:
    """SciPy's sparse LU (SuperLU, ``splu``): one factorisation of a shared matrix solved
    against the whole batch of right-hand sides, or one ``splu`` per instance."""
    from scipy.sparse.linalg import splu

    rhs = np.asarray(rhs, dtype=np.float64)
    if len(matrices) == 1:
        x = splu(sp.csc_matrix(matrices[0])).solve(np.ascontiguousarray(rhs.T)).T
    else:
        x = np.stack([splu(sp.csc_matrix(a)).solve(b) for a, b in zip(matrices, rhs,
                                                                      strict=True)])
    return direct_result(x)


def _threshold(b: np.ndarray, rtol: float, atol: float) -> float:
    return max(rtol * float(np.linalg.norm(b)), atol)


def scipy_cg(matrices: Sequence[sp.spmatrix], rhs: np.ndarray, rtol: float, *,
             atol: float = 0.0, maxiter: int | None = None, x0: np.ndarray | None = None,
             preconditioners: Sequence | None = None) -> BatchResult:
    """SciPy's ``cg`` on each instance (stopping at ``||b - A x|| <= max(rtol ||b||, atol)``),
    from ``x0`` (``(B, N)``; zeros when ``None``) and with ``preconditioners`` (one
    ``LinearOperator`` approximating ``A^{-1}`` per instance, or one shared; ``None``: none).
    Convergence is judged on the true residual of the answer."""
    from scipy.sparse.linalg import cg

    return _per_instance(cg, {}, matrices, rhs, rtol, atol, maxiter, x0, preconditioners)


def scipy_gmres(matrices: Sequence[sp.spmatrix], rhs: np.ndarray, rtol: float, *,
                atol: float = 0.0, restart: int | None = None, maxiter: int | None = None,
                x0: np.ndarray | None = None) -> BatchResult:
    """SciPy's ``gmres`` (restarted after ``restart`` inner iterations; SciPy's default 20
    when ``None``) on each instance, as :func:`scipy_cg`; the iterations are the inner ones
    (one product each)."""
    from scipy.sparse.linalg import gmres

    return _per_instance(gmres, {"restart": restart, "callback_type": "pr_norm"}, matrices,
                         rhs, rtol, atol, maxiter, x0, None)


def _per_instance(krylov, settings: dict, matrices, rhs, rtol, atol, maxiter, x0,
                  preconditioners) -> BatchResult:
    """``krylov(A_i, b_i, ...)`` (a SciPy solver) on each instance, counting its callbacks."""
    rhs = np.asarray(rhs, dtype=np.float64)
    xs, iterations, converged = np.zeros_like(rhs), [], []
    for i, b in enumerate(rhs):
        a = _matrix_of(matrices, i)
        count = [0]

        def counted(_, count=count):
            count[0] += 1

        m = None if preconditioners is None else _matrix_of(preconditioners, i)
        start = None if x0 is None else x0[i]
        x, _ = krylov(a, b, x0=start, rtol=rtol, atol=atol, maxiter=maxiter, M=m,
                      callback=counted, **settings)
        xs[i] = x
        iterations.append(count[0])
        converged.append(np.linalg.norm(b - a @ x) <= 1.0001 * _threshold(b, rtol, atol))
    return BatchResult(xs, np.array(iterations), np.array(converged))


def amg_hierarchies(matrices: Sequence[sp.spmatrix]) -> list:
    """pyamg's smoothed-aggregation hierarchy of each matrix (its default settings)."""
    pyamg = require("pyamg", "pyamg's smoothed-aggregation multigrid")
    return [pyamg.smoothed_aggregation_solver(sp.csr_matrix(a)) for a in matrices]


def pyamg_cg(matrices: Sequence[sp.spmatrix], rhs: np.ndarray, rtol: float, *,
             maxiter: int = 1000, x0: np.ndarray | None = None,
             hierarchies: Sequence | None = None) -> BatchResult:
    """CG preconditioned by one V-cycle of pyamg's smoothed-aggregation multigrid (``accel=
    'cg'``), stopping at ``||b - A x|| <= rtol ||b||``, from ``x0`` (zeros when ``None``). The
    hierarchy is built here (setup included in the time) unless ``hierarchies`` are given:
    one per matrix."""
    rhs = np.asarray(rhs, dtype=np.float64)
    if hierarchies is None:
        hierarchies = amg_hierarchies(matrices)
    xs, iterations, converged = np.zeros_like(rhs), [], []
    for i, b in enumerate(rhs):
        ml = _matrix_of(hierarchies, i)
        a = _matrix_of(matrices, i)
        residuals: list[float] = []
        start = None if x0 is None else np.array(x0[i])
        x = ml.solve(b, x0=start, tol=rtol, maxiter=maxiter, accel="cg", residuals=residuals)
        xs[i] = x
        iterations.append(max(len(residuals) - 1, 0))
        converged.append(np.linalg.norm(b - a @ x) <= 1.0001 * _threshold(b, rtol, 0.0))
    return BatchResult(xs, np.array(iterations), np.array(converged))


def _eigen_result(pairs: list[tuple[np.ndarray, np.ndarray]], matrices: Sequence,
                  wanted: int, threshold: np.ndarray, iterations: list[int]) -> BatchResult:
    """Each instance's ``wanted`` smallest eigenvalues (``x``) from ``(values, vectors)``, and
    whether every one of their residuals ``||A v - lambda v||`` is within its threshold."""
    values, converged = [], []
    for i, (vals, vecs) in enumerate(pairs):
        order = np.argsort(vals)[:wanted]
        vals, vecs = vals[order], vecs[:, order]
        residual = np.linalg.norm(_matrix_of(matrices, i) @ vecs - vecs * vals, axis=0)
        values.append(vals)
        converged.append(bool(np.all(residual <= 1.0001 * threshold[i])))
    return BatchResult(np.array(values), np.array(iterations), np.array(converged))


def scipy_eigsh_shift_invert(matrices: Sequence[sp.spmatrix], wanted: int,
                             threshold: np.ndarray) -> BatchResult:
    """The ``wanted`` smallest eigenpairs of each symmetric positive definite matrix by SciPy's
    ``eigsh`` (ARPACK) in shift-invert mode about 0 (a sparse LU of each matrix); the
    answers are the eigenvalues, converged where every residual is within ``threshold``
    (``(B,)``). Iterations: ARPACK does not report them (-1)."""
    from scipy.sparse.linalg import eigsh

    # One factorisation and run per matrix (a batch sharing one matrix shares the answer).
    pairs = [eigsh(sp.csc_matrix(a), k=wanted, sigma=0.0, which="LM") for a in matrices]
    pairs = [pairs[0 if len(pairs) == 1 else i] for i in range(len(threshold))]
    return _eigen_result(pairs, matrices, wanted, threshold, [-1] * len(threshold))


def lobpcg_amg(matrices: Sequence[sp.spmatrix], starts: np.ndarray, wanted: int,
               threshold: np.ndarray, maxiter: int = 500,
               hierarchies: Sequence | None = None) -> BatchResult:
    """SciPy's ``lobpcg`` for the smallest eigenpairs from each starting block (``(B, N, p)``,
    ``p >= wanted``), preconditioned by one V-cycle of pyamg's smoothed-aggregation multigrid
    (the hierarchy built here unless given), stopping where every residual is within
    ``threshold``; the answers are the ``wanted`` smallest eigenvalues."""
    from scipy.sparse.linalg import lobpcg

    if hierarchies is None:
        hierarchies = amg_hierarchies(matrices)
    pairs, iterations = [], []
    for i, start in enumerate(np.asarray(starts, dtype=np.float64)):
        history: list = []
        with warnings.catch_warnings():  # lobpcg warns where it stops at maxiter; judged below
            warnings.simplefilter("ignore")
            vals, vecs, history = lobpcg(
                _matrix_of(matrices, i), start, M=_matrix_of(hierarchies, i).aspreconditioner(),
                largest=False, tol=float(threshold[i]), maxiter=maxiter,
                retResidualNormsHistory=True)
        pairs.append((vals, vecs))
        iterations.append(max(len(history) - 1, 0))
    return _eigen_result(pairs, matrices, wanted, threshold, iterations)


def scipy_ivp(functions: Sequence[Callable[[float, np.ndarray], np.ndarray]],
              starts: np.ndarray, ends: np.ndarray, method: str = "RK45",
              rtol: float = 1e-3, atol: float = 1e-6) -> BatchResult:
    """SciPy's ``solve_ivp`` on each instance, ``y' = functions[i](t, y)`` from ``starts[i]``
    at ``t = 0`` to ``ends[i]``, with ``method`` and its tolerances (SciPy's defaults unless
    given): the answers are the final states, the iterations the integrator's steps, and an
    instance converged where the integration succeeded."""
    from scipy.integrate import solve_ivp

    xs, steps, ok = [], [], []
    for f, start, end in zip(functions, np.asarray(starts, dtype=np.float64), ends,
                             strict=True):
        result = solve_ivp(f, (0.0, float(end)), start, method=method, rtol=rtol, atol=atol)
        xs.append(result.y[:, -1])
        steps.append(result.t.size - 1)
        ok.append(bool(result.success))
    return BatchResult(np.array(xs), np.array(steps), np.array(ok))


def scipy_newton_krylov(functions: Sequence[Callable[[np.ndarray], np.ndarray]],
                        starts: Sequence[np.ndarray], f_tol: float,
                        maxiter: int = 50) -> BatchResult:
    """SciPy's ``newton_krylov`` with its defaults (LGMRES inner solver, Armijo line search) on
    each ``f_i(x) = 0`` from ``starts[i]``, to ``||f(x)||_inf <= f_tol`` (SciPy's norm);
    convergence is judged on the 2-norm ``||f(x)|| <= f_tol`` afterwards."""
    from scipy.optimize import newton_krylov
    from scipy.optimize._nonlin import NoConvergence

    f_tol = check_positive("f_tol", f_tol)
    xs, iterations, converged = [], [], []
    for f, start in zip(functions, starts, strict=True):
        count = [0]

        def counted(x, fx, count=count):
            count[0] += 1

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                x = newton_krylov(f, np.array(start, dtype=np.float64), f_tol=f_tol,
                                  iter=maxiter, callback=counted)
            except (NoConvergence, ValueError, FloatingPointError,
                    np.linalg.LinAlgError) as error:
                x = np.asarray(error.args[0]) if isinstance(error, NoConvergence) \
                    else np.array(start, dtype=np.float64)
        xs.append(np.asarray(x, dtype=np.float64))
        iterations.append(count[0])
        converged.append(bool(np.linalg.norm(f(xs[-1])) <= f_tol))
    return BatchResult(_pad(xs), np.array(iterations), np.array(converged))


def _pad(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of different lengths as one zero-padded array."""
    out = np.zeros((len(rows), max(len(r) for r in rows)))
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def batched_newton(function: Callable[[torch.Tensor], torch.Tensor],
                   jacobian: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor,
                   atol: float, maxiter: int = 50) -> BatchResult:
    """Newton's method with the exact Jacobian on the whole batch at once (one batched
    ``torch.linalg.solve`` per step), each instance frozen once ``||f(x)|| <= atol``."""
    atol = check_positive("atol", atol)
    with torch.no_grad():
        x = x0.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64)
        fx = function(x)
        running = torch.linalg.vector_norm(fx, dim=1) > atol
        for _ in range(maxiter):
            if not bool(running.any()):
                break
            idx = running.nonzero().squeeze(1)
            step = torch.linalg.solve(jacobian(x)[idx], fx[idx])
            x[idx] = x[idx] - step
            iterations[idx] += 1
            fx = function(x)
            running = torch.linalg.vector_norm(fx, dim=1) > atol
            running &= torch.isfinite(fx).all(dim=1)
        norms = torch.linalg.vector_norm(fx, dim=1)
    return BatchResult(x.numpy(), iterations.numpy(), (norms <= atol).numpy())
