"""The learned parts of a :class:`~metasolve.LearnedSolver` handed to the solvers practitioners
run (``metasolve bench``'s fourth column): a learned initial guess as ``x0`` of SciPy's or
pyamg's CG, a learned shift or polynomial as a SciPy ``LinearOperator`` preconditioner, learned
iterates as warm starts of the real ``scs``, learned iterates as starts of ``newton_krylov``.

Each adapter applies the safeguard where it makes sense, per instance, and says where it did
(:attr:`Deployment.learned` is ``False`` where the classical part was used instead):

* a learned start (``x0``, an scs warm start, a nonlinear start) is used only where it starts no
  worse than the classical one: its residual ``||b - A x0||`` at most ``||b||`` (the zero
  guess's), its scs residuals at most the cold start's, ``||f(x)||`` at most ``||f(x0)||``; as
  :class:`~metasolve.LearnedSolver`'s guess test, which ``check="never"`` skips;
* a learned polynomial preconditioner ``q(A)`` is used only where ``q`` is positive on the
  probe's interval (CG needs ``q(A)`` positive definite), else the classical polynomial of the
  same degree from the same probe (the untrained engine's Chebyshev polynomial);
* a learned shift ``alpha`` of IC(0) is used only where the factorisation of ``A + alpha I``
  succeeds, else the classical shift (doubled until it succeeds).

The adapters compute on the CPU in float64 and return NumPy arrays and SciPy operators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator

from ..learned import LearnedSolver
from ..polynomials import chebyshev_basis_apply
from ..problems import ConeProgram, EigenProblem, LinearSystem, NonlinearSystem
from ..solvers.iccg import incomplete_cholesky
from ..solvers.scs import primal_dual
from ..tasks import TaskBatch
from ..validation import check_choice, check_count

#: Which instances' learned starts are tested against the classical start.
CHECKS = ("always", "never")


@dataclass
class Deployment:
    """What a strong solver is given: ``value`` (``(B, N)`` starts, or a list with one
    preconditioner or warm start per instance) and ``learned`` ``(B,)`` bool, ``False`` where the
    safeguard put the classical part in place of the learned one."""

    value: Any
    learned: np.ndarray

    @property
    def replaced(self) -> int:
        """How many instances got the classical part instead of the learned one."""
        return int((~self.learned).sum())


def _tasks(tasks) -> TaskBatch:
    if not isinstance(tasks, TaskBatch):
        raise TypeError(f"tasks must be a TaskBatch, got {type(tasks).__name__}")
    return tasks


def _problem(tasks: TaskBatch, kind: type, what: str):
    if not isinstance(tasks.problem, kind):
        raise TypeError(f"{what} needs tasks whose problem is a {kind.__name__}, got a "
                        f"{type(tasks.problem).__name__}")
    return tasks.problem


def learned_guess(solver: LearnedSolver, tasks: TaskBatch, check: str = "always") -> Deployment:
    """The learned initial guesses ``x0`` ``(B, N)`` of ``solver`` for ``tasks`` (linear
    systems), for ``x0=`` of SciPy's ``cg`` or pyamg's ``solve``. With ``check="always"`` an
    instance whose guess has a larger residual than the zero guess (``||b - A x0|| > ||b||``)
    gets the zero guess."""
    problem = _problem(_tasks(tasks), LinearSystem, "learned_guess")
    check_choice("check", check, CHECKS)
    with torch.no_grad():
        params = solver.params(tasks.features, tasks.problem)
        if "x0" not in params:
            raise ValueError(f"the solver's meta-solver predicts {sorted(params)}, no initial "
                             "guess 'x0' to deploy")
        x0 = params["x0"].detach().double()
        keep = torch.isfinite(x0).all(dim=1)
        if check == "always":
            start = torch.linalg.vector_norm(problem.residual(x0), dim=1)
            keep &= start <= torch.linalg.vector_norm(problem.rhs, dim=1)
        x0 = torch.where(keep.unsqueeze(1), x0, torch.zeros_like(x0))
    return Deployment(x0.numpy(), keep.numpy())


def chebyshev_polynomial_operator(matrix: sp.spmatrix, coefficients: np.ndarray, lower: float,
                                  upper: float) -> LinearOperator:
    """``q(A) = sum_j c_j T_j(L(A))`` with ``L(t) = (2 t - (a + b)) / (b - a)`` on ``[a, b] =
    [lower, upper]``, as a SciPy ``LinearOperator`` (``len(coefficients) - 1`` sparse products
    per application; the same polynomial as :func:`metasolve.polynomials.chebyshev_basis_apply`
    and :class:`~metasolve.solvers.ConjugateGradient`'s preconditioner)."""
    c = np.asarray(coefficients, dtype=np.float64)
    centre, half = (upper + lower) / 2, (upper - lower) / 2
    if not half > 0:
        raise ValueError(f"lower must be below upper, got [{lower}, {upper}]")
    n = matrix.shape[0]

    def apply(v):
        v = np.ravel(v)
        total = c[0] * v
        if c.size == 1:
            return total
        previous, current = v, (matrix @ v - centre * v) / half
        total = total + c[1] * current
        for j in range(2, c.size):
            previous, current = current, 2 * (matrix @ current - centre * current) / half \
                - previous
            total = total + c[j] * current
        return total

    return LinearOperator((n, n), matvec=apply, rmatvec=apply, dtype=np.float64)


#: Points of the probe's interval where a learned polynomial preconditioner must be positive.
POSITIVITY_POINTS = 200


def polynomial_positive(params: dict[str, torch.Tensor],
                        points: int = POSITIVITY_POINTS) -> torch.Tensor:
    """``(B,)`` bool: the polynomial ``q`` of ``params`` (``coefficients``, ``lower``,
    ``upper``) is positive at ``points`` Chebyshev points of each instance's ``[lower, upper]``
    (and at both ends)."""
    lower, upper = params["lower"].double(), params["upper"].double()
    k = torch.arange(points, dtype=torch.float64)
    unit = torch.cat([torch.tensor([-1.0, 1.0], dtype=torch.float64),
                      torch.cos((2 * k + 1) * torch.pi / (2 * points))])
    t = (upper + lower).unsqueeze(1) / 2 + (upper - lower).unsqueeze(1) / 2 * unit
    values = chebyshev_basis_apply(lambda w: w * t, torch.ones_like(t),
                                   params["coefficients"].double(), lower, upper)
    return (values > 0).all(dim=1) & torch.isfinite(values).all(dim=1)


def polynomial_preconditioners(solver: LearnedSolver, tasks: TaskBatch, matrix: sp.spmatrix,
                               check: bool = True, classical: bool = False) -> Deployment:
    """One ``LinearOperator`` ``q(A)`` per instance of ``tasks`` (linear systems sharing
    ``matrix``, the same matrix as SciPy sparse) from the polynomial ``solver`` predicts for it
    (an AutoSpec engine of the basis paradigm: ``coefficients``, ``lower``, ``upper``), for
    ``M=`` of SciPy's ``cg``. With ``check``, an instance whose ``q`` is not positive on the
    probe's interval gets the classical polynomial (the meta-solver's ``baseline_params``: for
    AutoSpec, Chebyshev of the same degree on the same probe's interval). ``classical=True``
    gives the classical polynomials throughout (for the comparison)."""
    _problem(_tasks(tasks), LinearSystem, "polynomial_preconditioners")
    with torch.no_grad():
        base = solver.classical_params(tasks.features)
        if not all(k in base for k in ("coefficients", "lower", "upper")):
            raise ValueError("the solver's meta-solver gives no classical polynomial "
                             "(coefficients, lower, upper) to compare with or fall back to")
        learned = base if classical else solver.params(tasks.features, tasks.problem)
        if not all(k in learned for k in ("coefficients", "lower", "upper")):
            raise ValueError(f"the solver's meta-solver predicts {sorted(learned)}, not a "
                             "polynomial (coefficients, lower, upper) to deploy")
        keep = torch.full((tasks.problem.batch_size,), not classical)
        if check and not classical:
            keep &= polynomial_positive(learned)
        chosen = {k: torch.where(keep.view(-1, *[1] * (learned[k].ndim - 1)), learned[k],
                                 base[k]) for k in ("coefficients", "lower", "upper")}
    operators = [chebyshev_polynomial_operator(matrix, chosen["coefficients"][i].numpy(),
                                               float(chosen["lower"][i]),
                                               float(chosen["upper"][i]))
                 for i in range(tasks.problem.batch_size)]
    return Deployment(operators, keep.numpy())


def _ic_operator(factor: np.ndarray) -> LinearOperator:
    """``(L L^T)^{-1}`` by two dense triangular solves."""
    n = factor.shape[0]
    upper = np.ascontiguousarray(factor.T)

    def apply(v):
        y = la.solve_triangular(factor, np.ravel(v), lower=True, check_finite=False)
        return la.solve_triangular(upper, y, lower=False, check_finite=False)

    return LinearOperator((n, n), matvec=apply, rmatvec=apply, dtype=np.float64)


def ic_preconditioners(solver: LearnedSolver, tasks: TaskBatch, check: bool = True,
                       classical: bool = False) -> Deployment:
    """One ``LinearOperator`` ``(L L^T)^{-1}`` per instance, ``L`` the IC(0) factor of
    ``A + alpha I`` with the shift ``alpha`` the solver predicts (ICCG), for ``M=`` of SciPy's
    ``cg``. With ``check`` an instance whose factorisation fails gets the classical shift (the
    ICCG method's own ``alpha``, doubled until IC(0) succeeds); ``classical=True`` uses the
    classical shift throughout."""
    problem = _problem(_tasks(tasks), LinearSystem, "ic_preconditioners")
    batch = problem.batch_size
    matrix = problem.matrix.to_dense() if problem.sparse else problem.matrix
    matrix = matrix.detach().double()
    if matrix.ndim == 2:
        matrix = matrix.expand(batch, -1, -1)
    classical_alpha = float(getattr(solver.classical_method_for(problem), "alpha", 0.0))
    with torch.no_grad():
        if classical:
            alpha = torch.full((batch,), classical_alpha, dtype=torch.float64)
        else:
            params = solver.params(tasks.features, tasks.problem)
            if "alpha" not in params:
                raise ValueError(f"the solver's meta-solver predicts {sorted(params)}, no shift "
                                 "'alpha' to deploy")
            alpha = params["alpha"].detach().double().reshape(batch)
        factor, failed = incomplete_cholesky(matrix, alpha)
        keep = ~failed & torch.full((batch,), not classical)
        if check or classical:
            shift = max(classical_alpha, 1e-8)
            for _ in range(60):
                if not bool(failed.any()):
                    break
                idx = failed.nonzero().squeeze(1)
                fixed, again = incomplete_cholesky(matrix[idx], torch.full(
                    (len(idx),), shift, dtype=torch.float64))
                factor[idx], failed[idx] = fixed, again
                shift *= 2
        if bool(failed.any()):
            raise ValueError(f"IC(0) fails on {int(failed.sum())} instance(s) for every shift "
                             "tried")
    operators = [_ic_operator(factor[i].numpy()) for i in range(batch)]
    return Deployment(operators, keep.numpy())


def _scs_score(program: ConeProgram, z: torch.Tensor) -> torch.Tensor:
    """The larger of the primal and dual residuals relative to the cold start's (``||b||`` and
    ``||c||``, infinity norms): the cold start scores 1."""
    res = primal_dual(program, z)
    tiny = torch.finfo(torch.float64).tiny
    inf = torch.inf
    b = torch.linalg.vector_norm(program.rhs, ord=inf, dim=1).clamp_min(tiny)
    c = torch.linalg.vector_norm(program.cost, ord=inf, dim=1).clamp_min(tiny)
    score = torch.maximum(res["primal"] / b, res["dual"] / c)
    return torch.where(torch.isfinite(score), score, torch.full_like(score, inf))


def scs_warm_starts(solver: LearnedSolver, tasks: TaskBatch, iterations: int,
                    check: str = "always") -> Deployment:
    """Warm starts for the real ``scs`` (``solve_with_scs(..., warm_start=...)``): the iterate
    after ``iterations`` of the learned (neural SCS) method, run in its safeguarded mode (a
    learned step is kept only where it does not raise the fixed-point residual), as one dict
    ``{x, y, s}`` per instance. With ``check="always"`` an instance whose start has a larger
    primal or dual residual, relative to the cold start's (``||b||``, ``||c||``), than the cold
    start gets ``None``: a cold start."""
    program = _problem(_tasks(tasks), ConeProgram, "scs_warm_starts")
    iterations = check_count("iterations", iterations, minimum=0)
    check_choice("check", check, CHECKS)
    with torch.no_grad():
        solution = solver.solve(tasks, fixed_iterations=iterations, rtol=0.0,
                                check_budget="never")
        res = primal_dual(program, solution.x)
        keep = torch.isfinite(solution.x).all(dim=1)
        if check == "always":
            keep &= _scs_score(program, solution.x) <= 1.0
    starts = [{k: res[k][i].numpy() for k in ("x", "y", "s")} if bool(keep[i]) else None
              for i in range(program.batch_size)]
    return Deployment(starts, keep.numpy())


def nonlinear_starts(solver: LearnedSolver, tasks: TaskBatch, iterations: int,
                     check: str = "always") -> Deployment:
    """Starts ``(B, N)`` for a nonlinear solver (SciPy's ``newton_krylov``): the iterate after
    ``iterations`` outer iterations of the learned method (e.g. an R2N2) from each instance's
    own start. With ``check="always"`` an instance where ``||f||`` grew keeps its own start."""
    problem = _problem(_tasks(tasks), NonlinearSystem, "nonlinear_starts")
    iterations = check_count("iterations", iterations, minimum=1)
    return _iterate_starts(solver, tasks, iterations, check, problem.function,
                           problem.start.double())


def nonlinear_guess(solver: LearnedSolver, tasks: TaskBatch,
                    check: str = "always") -> Deployment:
    """The learned initial guesses ``(B, N)`` of ``solver`` for ``tasks`` (nonlinear systems),
    as starts for a nonlinear solver: the method's first iterate from the predicted guess
    parameters (``x0``, or a correction of the start such as Newton-SOR's
    ``log_guess_shift``). With ``check="always"`` an instance whose guess has a larger ``||f||``
    than its own start keeps the start."""
    problem = _problem(_tasks(tasks), NonlinearSystem, "nonlinear_guess")
    if not solver.learned_guess:
        raise ValueError(f"the solver's meta-solver predicts "
                         f"{sorted(getattr(solver.metasolver, 'outputs', ()) or ())}, no "
                         "initial guess to deploy")
    # The iterate after no iteration: the start the predicted guess parameters make.
    return _iterate_starts(solver, tasks, 0, check, problem.function, problem.start.double())


def linear_starts(solver: LearnedSolver, tasks: TaskBatch, iterations: int,
                  check: str = "always") -> Deployment:
    """Starts ``(B, N)`` for a Krylov solver of linear systems (SciPy's ``gmres``): the iterate
    after ``iterations`` outer iterations of the learned method (an R2N2 on linear systems)
    from its zero start. With ``check="always"`` an instance whose residual ``||b - A x||``
    grew past ``||b||`` keeps the zero start."""
    problem = _problem(_tasks(tasks), LinearSystem, "linear_starts")
    iterations = check_count("iterations", iterations, minimum=1)
    return _iterate_starts(solver, tasks, iterations, check, problem.residual,
                           torch.zeros_like(problem.rhs, dtype=torch.float64))


def _iterate_starts(solver, tasks, iterations, check, residual, start) -> Deployment:
    """The learned method's iterate after ``iterations`` (0: its start) unguarded iterations,
    kept where it is finite and (``check="always"``) its ``residual`` is no larger than at
    ``start``."""
    check_choice("check", check, CHECKS)
    with torch.no_grad():
        solution = solver.solve(tasks, fixed_iterations=iterations, rtol=0.0, safeguard=False)
        x = solution.x.detach().double()
        keep = torch.isfinite(x).all(dim=1)
        if check == "always":
            after = torch.linalg.vector_norm(residual(torch.nan_to_num(x)), dim=1)
            before = torch.linalg.vector_norm(residual(start), dim=1)
            keep &= after <= before
        x = torch.where(keep.unsqueeze(1), x, start)
    return Deployment(x.numpy(), keep.numpy())


def eigen_blocks(solver: LearnedSolver, tasks: TaskBatch, iterations: int,
                 check: str = "always") -> Deployment:
    """Starting blocks ``(B, N, p)`` for an eigensolver (SciPy's ``lobpcg``): the Ritz block
    after ``iterations`` iterations of the learned method (a learned filter for subspace
    iteration). With ``check="always"`` an instance whose largest wanted residual grew keeps
    its own starting block."""
    problem = _problem(_tasks(tasks), EigenProblem, "eigen_blocks")
    iterations = check_count("iterations", iterations, minimum=1)
    check_choice("check", check, CHECKS)
    with torch.no_grad():
        solution = solver.solve(tasks, fixed_iterations=iterations, rtol=0.0, safeguard=False)
        block = solution.x.detach().double()
        keep = torch.isfinite(block).flatten(1).all(dim=1)
        if check == "always":
            keep &= solution.residual <= solution.residual_history[0]
        block = torch.where(keep.reshape(-1, 1, 1), block, problem.start.double())
    return Deployment(block.numpy(), keep.numpy())
