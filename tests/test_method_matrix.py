"""A registry-driven test matrix: every registered iterative method against a reference answer.

``CASES`` holds at least one small problem (a few unknowns, a batch of 3, float64) per method of
:data:`metasolve.solvers.METHODS`, with classical parameters that make the method converge and an
answer computed independently of metasolve (dense solves, ``numpy.linalg.eigh``,
``scipy.optimize.fsolve``, the ``scs`` package). ``test_every_registered_method_has_a_case``
fails when a method is registered without a case, so a new method cannot skip the matrix.

Each case is checked for: convergence to the reference (status ``CONVERGED``), ``maxiter=1``
giving ``MAX_ITERATIONS``, one ``callback`` call per iteration, untouched inputs, the dtype and
shape of ``solution.x`` (float64 and, where supported, float32), and named errors on bad input.
Fixed-degree polynomial methods are also compared with the dense polynomial of equal degree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg
import torch

import metasolve as ms
from metasolve import Status
from metasolve.learned import AutoSpecEngine, LearnedFilterSubspaceIteration
from metasolve.learned.neural_scs import IntermittentSCS, RecurrentSCS
from metasolve.polynomials import (
    chebyshev_coefficients_from_nodes,
    chebyshev_nodes,
    chebyshev_recurrence_coefficients,
    chebyshev_solve_expansion,
)
from metasolve.problems import ConeProgram, ConeSpec
from metasolve.solvers import METHODS, AndersonSCS
from metasolve.solvers.scs import cold_start, primal_dual
from metasolve.tasks.chandrasekhar import ChandrasekharSystem, h_equation_operator

F64 = torch.float64
B = 3  # instances per case
N = 6  # unknowns of the linear and eigen cases
LOW, HIGH = 1.0, 10.0  # the spectrum of the SPD test matrix


# --- problem data (all built from seeded generators, independent of the methods) ----------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spd_eigen(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, Q)``: a dense SPD matrix with eigenvalues ``linspace(LOW, HIGH, n)`` (both ends in
    the spectrum, so ``[LOW, HIGH]`` are exact bounds) and its eigenvectors."""
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=_gen(seed), dtype=F64))
    lam = torch.linspace(LOW, HIGH, n, dtype=F64)
    a = q @ torch.diag(lam) @ q.T
    return (a + a.T) / 2, q


def diag_dominant(n: int = N, seed: int = 1) -> torch.Tensor:
    a = torch.randn(n, n, generator=_gen(seed), dtype=F64)
    return a + torch.diag(a.abs().sum(dim=1) + 1.0)


def sparse_spd(n: int = N, seed: int = 2) -> torch.Tensor:
    """Symmetric, strictly diagonally dominant, with holes in its pattern (IC(0) is inexact)."""
    g = _gen(seed)
    a = torch.randn(n, n, generator=g, dtype=F64) * (torch.rand(n, n, generator=g) < 0.5)
    a = torch.tril(a, -1)
    a = a + a.T
    return a + torch.diag(a.abs().sum(dim=1) + 1.0)


def randn(*shape, seed: int, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=F64).to(dtype)


def dense_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(matrix.to(F64), rhs.to(F64).T).T


def chebyshev_iterate(matrix: torch.Tensor, rhs: torch.Tensor, x0: torch.Tensor, degree: int,
                      lower: float, upper: float) -> torch.Tensor:
    """``degree`` steps of Chebyshev iteration, densely: ``r_m = p_m(A) r_0`` with
    ``p_m(t) = T_m((theta - t) / delta) / T_m(theta / delta)`` (NumPy's Chebyshev series),
    evaluated in the eigenbasis; ``x_m = x_0 + A^{-1} (r_0 - r_m)``."""
    a = matrix.double().numpy()
    lam, v = np.linalg.eigh(a)
    theta, delta = (upper + lower) / 2, (upper - lower) / 2
    unit = np.zeros(degree + 1)
    unit[-1] = 1.0
    p = np.polynomial.chebyshev.chebval((theta - lam) / delta, unit) \
        / np.polynomial.chebyshev.chebval(theta / delta, unit)
    x0 = x0.double().numpy()
    r0 = rhs.double().numpy() - x0 @ a.T
    rm = (r0 @ v) * p @ v.T
    return torch.from_numpy(x0 + np.linalg.solve(a, (r0 - rm).T).T)


def matrix_polynomial(matrix: torch.Tensor, vectors: torch.Tensor, coefficients: np.ndarray,
                      lower: float, upper: float) -> torch.Tensor:
    """``q(A) v`` with ``q = sum_j c_j T_j(L(t))`` on ``[lower, upper]``, in the eigenbasis."""
    lam, v = np.linalg.eigh(matrix.double().numpy())
    mapped = (2 * lam - (upper + lower)) / (upper - lower)
    out = []
    for c, b in zip(coefficients, vectors.double().numpy(), strict=True):
        out.append(v @ (np.polynomial.chebyshev.chebval(mapped, c) * (v.T @ b)))
    return torch.from_numpy(np.stack(out))


def chandrasekhar(dtype=F64, cs=(0.5, 0.7, 0.8), m: int = 5) -> ChandrasekharSystem:
    operator = torch.stack([h_equation_operator(m, c, F64) for c in cs]).to(dtype)
    return ChandrasekharSystem(operator, torch.ones(len(cs), m, dtype=dtype),
                               torch.ones(len(cs), m, dtype=dtype), torch.tensor(cs, dtype=dtype))


def chandrasekhar_roots(system: ChandrasekharSystem) -> torch.Tensor:
    roots = []
    for a, start in zip(system.operator.double().numpy(), system.start.double().numpy(),
                        strict=True):
        def g(y, a=a):
            return y - 1.0 / (1.0 - a @ y)
        root, _, flag, message = scipy.optimize.fsolve(g, start, xtol=1e-13, full_output=True)
        assert flag == 1, message
        roots.append(root)
    return torch.from_numpy(np.stack(roots))


CONES = ConeSpec(zero=1, nonneg=2, soc=(3,))


def planted_cone_program(dtype=F64, n: int = 2, seed: int = 3) -> ConeProgram:
    """A batch of feasible, bounded programs sharing ``A``: ``s* = Pi_K(w)`` and
    ``y* = Pi_K*(-w)`` are complementary (Moreau), ``b = A x* + s*``, ``c = -A^T y*``."""
    from metasolve.cones import project_cone, project_dual_cone

    g = _gen(seed)
    a = torch.randn(CONES.dim, n, generator=g, dtype=F64)
    w = torch.randn(B, CONES.dim, generator=g, dtype=F64)
    x_star = torch.randn(B, n, generator=g, dtype=F64)
    s_star, y_star = project_cone(w, CONES), project_dual_cone(-w, CONES)
    return ConeProgram(a.to(dtype), (x_star @ a.T + s_star).to(dtype), (-(y_star @ a)).to(dtype),
                       CONES)


_SCS_CACHE: dict = {}


def scs_reference(program: ConeProgram) -> torch.Tensor:
    """The primal ``x`` of each instance from the real ``scs`` package, solved tightly."""
    from metasolve.baselines.scs_reference import solve_batch_with_scs

    key = (program.rhs.double().numpy().tobytes(), program.cost.double().numpy().tobytes())
    if key not in _SCS_CACHE:
        results = solve_batch_with_scs(program, eps_abs=1e-10, eps_rel=1e-10,
                                       acceleration_lookback=0)
        assert all(r["status"] == "solved" for r in results)
        _SCS_CACHE[key] = torch.from_numpy(np.stack([r["x"] for r in results]))
    return _SCS_CACHE[key]


# --- the case table -------------------------------------------------------------------------------


@dataclass
class Setup:
    """One ready-to-run case: ``run(method, problem, params=params, **kwargs)``.

    ``answer(problem, solution)`` and ``reference`` are what is compared (within ``tol``, max
    norm); ``x0`` is a valid non-trivial initial guess; ``nan_input()`` builds the problem with a
    NaN in its data and must raise ``ValueError`` naming ``nan_name``.
    """

    method: ms.IterativeMethod
    problem: object
    params: dict
    kwargs: dict
    answer: Callable
    reference: Callable  # () -> tensor (lazy: the scs package is called only when needed)
    tol: float
    x0: torch.Tensor
    nan_input: Callable[[], object]
    nan_name: str


@dataclass(frozen=True)
class Case:
    id: str
    method: str  # the registry name
    build: Callable[[torch.dtype], Setup]
    float32: str | None = None  # None: supported; else why not
    one_step: bool = False  # converges in one iteration (no maxiter=1 check)
    # () -> (method, problem, params, m, expected x after exactly m steps, run kwargs): the
    # fixed-degree methods, against the dense polynomial of the same degree
    at_degree: Callable | None = None
    marks: tuple = field(default_factory=tuple)


def _x(problem, solution):
    return solution.x


def _linear(method, matrix, dtype, params=None, rtol=1e-10, maxiter=500, seed=10,
            tol=1e-7, kwargs=None):
    rhs = randn(B, matrix.shape[-1], seed=seed, dtype=dtype)
    problem = ms.LinearSystem(matrix.to(dtype), rhs)

    def nan_input():
        bad = rhs.clone()
        bad[1, 2] = float("nan")
        return ms.LinearSystem(matrix.to(dtype), bad)

    kwargs = {"rtol": rtol, "maxiter": maxiter, **(kwargs or {})}
    return Setup(method, problem, params or {}, kwargs,
                 _x, lambda: dense_solve(matrix, rhs), tol,
                 randn(B, matrix.shape[-1], seed=seed + 1, dtype=dtype), nan_input, "rhs")


def _bounds(dtype, lower=LOW, upper=HIGH):
    return (torch.full((B,), lower, dtype=dtype), torch.full((B,), upper, dtype=dtype))


def jacobi_case(dtype):
    omega = torch.tensor([1.0, 0.9, 0.8], dtype=dtype)
    return _linear(ms.Jacobi(), diag_dominant(), dtype, {"omega": omega})


def chebyshev_case(dtype):
    return _linear(ms.Chebyshev(lower=LOW, upper=HIGH), spd_eigen()[0], dtype)


def chebyshev_per_instance_case(dtype):
    lower, upper = _bounds(dtype, 0.9 * LOW, 1.1 * HIGH)
    return _linear(ms.Chebyshev(), spd_eigen()[0], dtype, {"lower": lower, "upper": upper})


def cg_case(dtype):
    return _linear(ms.ConjugateGradient(), spd_eigen()[0], dtype, maxiter=50)


def cg_polynomial_case(dtype):
    lower, upper = _bounds(dtype)
    coefficients = chebyshev_solve_expansion(lower.double(), upper.double(), 3).to(dtype)
    return _linear(ms.ConjugateGradient(), spd_eigen()[0], dtype,
                   {"coefficients": coefficients, "lower": lower, "upper": upper}, maxiter=50)


def iccg_case(dtype):
    alpha = torch.tensor([0.0, 0.1, 1.0], dtype=dtype)
    return _linear(ms.ICCG(), sparse_spd(), dtype, {"alpha": alpha}, maxiter=50)


def iccg_tridiagonal_case(dtype):
    """IC(0) of a tridiagonal matrix is its exact Cholesky factor: one iteration."""
    a = torch.diag(torch.full((N,), 4.0, dtype=F64)) + torch.diag(torch.ones(N - 1, dtype=F64), 1) \
        + torch.diag(torch.ones(N - 1, dtype=F64), -1)
    return _linear(ms.ICCG(alpha=0.0), a, dtype, maxiter=5)


RECURRENCE_STEPS = 40


def recurrence_case(dtype):
    lower, upper = _bounds(F64)
    theta = {k: v.to(dtype) for k, v in
             chebyshev_recurrence_coefficients(lower, upper, RECURRENCE_STEPS).items()}
    return _linear(ms.PolynomialRecurrence(), spd_eigen()[0], dtype, theta, rtol=1e-8,
                   maxiter=RECURRENCE_STEPS)


def expansion_case(dtype):
    lower, upper = _bounds(dtype)
    coefficients = chebyshev_solve_expansion(lower.double(), upper.double(),
                                             RECURRENCE_STEPS).to(dtype)
    return _linear(ms.ChebyshevExpansion(), spd_eigen()[0], dtype,
                   {"coefficients": coefficients, "lower": lower, "upper": upper}, rtol=1e-8,
                   maxiter=RECURRENCE_STEPS)


SERIES_TERMS = 30


def series_case(dtype):
    """``x = q(A) b`` with ``q`` the Chebyshev interpolant of ``t^{-1/2}`` on the spectrum's
    interval; reference: ``A^{-1/2} b`` from ``numpy.linalg.eigh``."""
    a, _ = spd_eigen()
    rhs = randn(B, N, seed=20)
    lam, v = np.linalg.eigh(a.numpy())
    exact = torch.from_numpy(rhs.numpy() @ v @ np.diag(lam ** -0.5) @ v.T)
    lower, upper = _bounds(F64)
    nodes = chebyshev_nodes(lower, upper, SERIES_TERMS)
    coefficients = chebyshev_coefficients_from_nodes(nodes ** -0.5)
    params = {"coefficients": coefficients.to(dtype), "lower": lower.to(dtype),
              "upper": upper.to(dtype)}
    problem = ms.LinearSystem(a.to(dtype), rhs.to(dtype), exact.to(dtype))

    def nan_input():
        bad = rhs.clone()
        bad[0, 0] = float("nan")
        return ms.LinearSystem(a.to(dtype), bad.to(dtype), exact.to(dtype))

    return Setup(ms.ChebyshevSeries(), problem, params,
                 {"rtol": 1e-9, "maxiter": SERIES_TERMS, "monitor": "error"}, _x,
                 lambda: exact, 1e-8, randn(B, N, seed=21, dtype=dtype), nan_input, "rhs")


def subspace_case(dtype):
    """The 2 smallest eigenpairs from a block of 3; reference ``numpy.linalg.eigh``."""
    a, _ = spd_eigen(8, seed=5)
    a = a + torch.diag(torch.linspace(0.0, 0.5, 8, dtype=F64))  # unequal gaps
    start = randn(B, 8, 3, seed=30)
    operator = ms.LinearSystem(a.to(dtype), torch.zeros(B, 8, dtype=dtype))
    upper = torch.full((B,), float(np.linalg.eigvalsh(a.numpy())[-1]) * 1.01, dtype=dtype)
    problem = ms.EigenProblem(operator, start.to(dtype), upper, wanted=2)
    lam = np.linalg.eigvalsh(a.numpy())[:2]

    def answer(problem, solution):  # Rayleigh quotients of the first two Ritz vectors
        x = solution.x[:, :, :2].double()
        return torch.einsum("bni,nm,bmi->bi", x, a, x)

    def nan_input():
        bad = start.clone()
        bad[1, 0, 0] = float("nan")
        return ms.EigenProblem(operator, bad.to(dtype), upper, wanted=2)

    return Setup(ms.FilteredSubspaceIteration(degree=4), problem, {},
                 {"rtol": 1e-10, "maxiter": 200}, answer,
                 lambda: torch.from_numpy(lam).expand(B, 2), 1e-8,
                 randn(B, 8, 3, seed=31, dtype=dtype), nan_input, "start")


def learned_subspace_case(dtype):
    """The same eigenpairs with the learned filter (an untrained engine: Chebyshev's filter) on
    every instance."""
    torch.manual_seed(0)
    setup = subspace_case(dtype)
    method = LearnedFilterSubspaceIteration(AutoSpecEngine(3, 4, "filter", hidden=(4,), modes=0))
    return Setup(method, setup.problem, {"learned_filter": torch.ones(B, dtype=dtype)},
                 *(getattr(setup, f) for f in ("kwargs", "answer", "reference", "tol", "x0",
                                               "nan_input", "nan_name")))


def _nonlinear(method, dtype, params=None, rtol=1e-11, maxiter=2000):
    problem = chandrasekhar(dtype)

    def nan_input():
        bad = problem.start.clone()
        bad[1, 1] = float("nan")
        return ChandrasekharSystem(problem.operator, problem.mask, bad, problem.c)

    x0 = problem.start + 0.05 * randn(B, problem.size, seed=40, dtype=dtype)
    return Setup(method, problem, params or {}, {"rtol": rtol, "maxiter": maxiter}, _x,
                 lambda: chandrasekhar_roots(problem), 1e-8, x0, nan_input, "start")


def newton_sor_case(dtype):
    relaxation = torch.tensor([1.0, 1.1, 0.9], dtype=dtype)
    return _nonlinear(ms.NewtonSOR(), dtype, {"relaxation": relaxation})


def r2n2_fixed_point_case(dtype):
    """One layer with output weight -1: ``x <- x - f(x) = 1 / (1 - A x)``, Chandrasekhar's own
    fixed-point iteration (a contraction for these ``c``)."""
    return _nonlinear(ms.R2N2(layers=1, output_weights=[-1.0]), dtype)


def r2n2_linear_case(dtype):
    """Two layers as Richardson steps: ``theta_10 = -w``, output ``(-w, -w)``: two damped
    Richardson steps ``x <- x - w (A x - b)`` per outer iteration (``w = 2 / (LOW + HIGH)``)."""
    w = 2 / (LOW + HIGH)
    method = ms.R2N2(layers=2, stage_weights=[-w], output_weights=[-w, -w])
    return _linear(method, spd_eigen()[0], dtype, rtol=1e-10, maxiter=200)


def gmres_case(dtype):
    return _linear(ms.GMRES(restart=3), diag_dominant(), dtype, maxiter=100)


def gmres_full_cycle_case(dtype):
    """A cycle of ``N`` Arnoldi steps spans the whole space: the exact solution at once."""
    return _linear(ms.GMRES(restart=N), diag_dominant(), dtype, maxiter=5)


# --- per-instance matrices: dense (B, N, N) and SparseBatch (shared or different patterns) -----


def sparse_instances(seed: int = 2, symmetric: bool = True) -> torch.Tensor:
    """``(B, N, N)``: one sparse matrix per instance, each with its own pattern, strictly
    diagonally dominant with a positive diagonal (symmetric, hence SPD, if ``symmetric``)."""
    out = []
    for b in range(B):
        g = _gen(seed + b)
        a = torch.randn(N, N, generator=g, dtype=F64) * (torch.rand(N, N, generator=g) < 0.5)
        a.fill_diagonal_(0.0)
        if symmetric:
            a = torch.tril(a, -1)
            a = a + a.T
        out.append(a + torch.diag(a.abs().sum(1) + 1.0 + torch.rand(N, generator=g, dtype=F64)))
    return torch.stack(out)


def as_layout(matrices: torch.Tensor, layout: str):
    """``matrices`` ``(B, N, N)`` as stored for a ``LinearSystem``: ``"dense"``, ``"shared"``
    (a SparseBatch on the union of the patterns) or ``"blocks"`` (different patterns)."""
    if layout == "dense":
        return matrices
    if layout == "shared":
        return ms.SparseBatch.from_dense(matrices)
    return ms.SparseBatch.stack([scipy.sparse.csr_matrix(m.numpy()) for m in matrices],
                                dtype=matrices.dtype)


def _per_instance(method, matrices, dtype, layout, params=None, rtol=1e-10, maxiter=500,
                  seed=10, tol=1e-7, reference=None):
    rhs = randn(B, N, seed=seed, dtype=dtype)
    stored = matrices.to(dtype)
    problem = ms.LinearSystem(as_layout(stored, layout), rhs)

    def nan_input():
        bad = rhs.clone()
        bad[1, 2] = float("nan")
        return ms.LinearSystem(as_layout(stored, layout), bad)

    def dense_reference():
        return torch.linalg.solve(matrices, rhs.to(F64))

    return Setup(method, problem, params or {}, {"rtol": rtol, "maxiter": maxiter}, _x,
                 reference or dense_reference, tol, randn(B, N, seed=seed + 1, dtype=dtype),
                 nan_input, "rhs")


def scipy_bicgstab(matrices: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Each instance solved by ``scipy.sparse.linalg.bicgstab``, tightly."""
    out = []
    for a, b in zip(matrices.double().numpy(), rhs.double().numpy(), strict=True):
        x, info = scipy.sparse.linalg.bicgstab(scipy.sparse.csr_matrix(a), b, rtol=1e-13,
                                               atol=0.0, maxiter=1000)
        assert info == 0, info
        out.append(x)
    return torch.from_numpy(np.stack(out))


def sor_case(dtype):
    """Strictly diagonally dominant, nonsymmetric: SOR converges for omega in (0, 1]."""
    omega = torch.tensor([1.0, 0.9, 0.8], dtype=dtype)
    return _linear(ms.SOR(), diag_dominant(), dtype, {"omega": omega})


def sor_sparse_batch_case(dtype):
    """SPD per-instance sparse matrices on a shared pattern, over-relaxed."""
    omega = torch.tensor([1.0, 1.3, 1.6], dtype=dtype)
    return _per_instance(ms.SOR(), sparse_instances(), dtype, "shared", {"omega": omega})


def ssor_case(dtype):
    return _linear(ms.SSOR(omega=1.2), spd_eigen()[0], dtype)


def ssor_sparse_blocks_case(dtype):
    omega = torch.tensor([0.7, 1.0, 1.5], dtype=dtype)
    return _per_instance(ms.SSOR(), sparse_instances(seed=5), dtype, "blocks", {"omega": omega})


def bicgstab_case(dtype):
    matrix = diag_dominant()
    setup = _linear(ms.BiCGStab(), matrix, dtype, maxiter=100)
    setup.reference = lambda: scipy_bicgstab(matrix.expand(B, N, N),
                                             randn(B, N, seed=10))
    return setup


def bicgstab_sparse_batch_case(dtype):
    matrices = sparse_instances(seed=7, symmetric=False)
    return _per_instance(ms.BiCGStab(), matrices, dtype, "blocks", maxiter=100,
                         reference=lambda: scipy_bicgstab(matrices, randn(B, N, seed=10)))


def cg_jacobi_sparse_case(dtype):
    """PCG with the diagonal, on SPD matrices whose diagonal varies over four decades."""
    scale = torch.logspace(0, 2, N, dtype=F64)
    matrices = scale.sqrt()[:, None] * sparse_instances(seed=9) * scale.sqrt()[None, :]
    return _per_instance(ms.ConjugateGradient(preconditioner="jacobi"), matrices, dtype,
                         "shared", maxiter=50)


def cg_ic0_case(layout):
    """PCG with each instance's IC(0) factor (inexact: the patterns have holes)."""
    def case(dtype):
        return _per_instance(ms.ConjugateGradient(preconditioner="ic0"),
                             sparse_instances(seed=15), dtype, layout, maxiter=50)
    return case


def jacobi_sparse_blocks_case(dtype):
    omega = torch.tensor([1.0, 0.9, 0.8], dtype=dtype)
    return _per_instance(ms.Jacobi(), sparse_instances(seed=11), dtype, "blocks",
                         {"omega": omega})


def gmres_sparse_batch_case(dtype):
    return _per_instance(ms.GMRES(restart=3), sparse_instances(seed=13, symmetric=False), dtype,
                         "shared", maxiter=100)


def newton_krylov_case(dtype):
    return _nonlinear(ms.NewtonKrylov(inner=2), dtype, maxiter=200)


def _conic(method_factory, dtype, maxiter=3000, eps=1e-9, params=None):
    problem = planted_cone_program(dtype)
    method = method_factory(problem.size, eps)
    params = {} if params is None else params(problem)

    def answer(problem, solution):
        return primal_dual(problem, solution.x, method.normalize)["x"]

    def nan_input():
        bad = problem.rhs.clone()
        bad[2, 1] = float("nan")
        return ConeProgram(problem.matrix, bad, problem.cost, problem.cones)

    x0 = cold_start(problem) + 0.1 * randn(B, problem.size, seed=50, dtype=dtype)
    x0[:, problem.size // 2 - 1] = 1.0  # tau
    return Setup(method, problem, params, {"maxiter": maxiter}, answer,
                 lambda: scs_reference(problem), 1e-6, x0, nan_input, "rhs")


def scs_case(dtype):
    return _conic(lambda dim, eps: ms.SCS(eps_abs=eps, eps_rel=eps), dtype)


def anderson_case(dtype):
    return _conic(lambda dim, eps: AndersonSCS(memory=5, eps_abs=eps, eps_rel=eps), dtype)


def recurrent_scs_case(dtype):
    torch.manual_seed(0)  # the untrained model's weights (its decoder starts at zero)
    def params(problem):  # a small start correction and a hidden state, as a Psi would give
        return {"start_correction": 0.01 * randn(B, problem.size, seed=51, dtype=dtype),
                "hidden0": 0.1 * randn(B, 8, seed=52, dtype=dtype)}

    return _conic(lambda dim, eps: RecurrentSCS(dim, hidden=8, encoder=(16,), eps_abs=eps,
                                                eps_rel=eps), dtype, params=params)


def intermittent_scs_case(dtype):
    torch.manual_seed(0)
    def params(problem):
        return {"start_correction": 0.01 * randn(B, problem.size, seed=53, dtype=dtype)}

    return _conic(lambda dim, eps: IntermittentSCS(dim, 0, access=(1, 2), hidden=(8,),
                                                   eps_abs=eps, eps_rel=eps), dtype,
                  params=params)


# --- equal-degree references of the fixed-polynomial methods ------------------------------------

DEGREE = 7


def _degree_problem():
    a, _ = spd_eigen()
    return a, ms.LinearSystem(a, randn(B, N, seed=60)), randn(B, N, seed=61)


def chebyshev_at_degree():
    a, problem, x0 = _degree_problem()
    return (ms.Chebyshev(lower=LOW, upper=HIGH), problem, {"x0": x0}, DEGREE,
            chebyshev_iterate(a, problem.rhs, x0, DEGREE, LOW, HIGH), {})


def recurrence_at_degree():
    a, problem, x0 = _degree_problem()
    theta = chebyshev_recurrence_coefficients(*_bounds(F64), RECURRENCE_STEPS)
    return (ms.PolynomialRecurrence(), problem, {**theta, "x0": x0}, DEGREE,
            chebyshev_iterate(a, problem.rhs, x0, DEGREE, LOW, HIGH), {})


def expansion_at_degree():
    a, problem, x0 = _degree_problem()
    lower, upper = _bounds(F64)
    coefficients = chebyshev_solve_expansion(lower, upper, DEGREE)
    return (ms.ChebyshevExpansion(), problem,
            {"coefficients": coefficients, "lower": lower, "upper": upper, "x0": x0}, DEGREE,
            chebyshev_iterate(a, problem.rhs, x0, DEGREE, LOW, HIGH), {})


def series_at_degree():
    a, problem, x0 = _degree_problem()
    lower, upper = _bounds(F64)
    coefficients = randn(B, DEGREE, seed=62)
    expected = x0 + matrix_polynomial(a, problem.rhs, coefficients.numpy(), LOW, HIGH)
    # No residual to monitor: the error monitor, against the expected answer itself.
    problem = ms.LinearSystem(a, problem.rhs, expected)
    return (ms.ChebyshevSeries(), problem,
            {"coefficients": coefficients, "lower": lower, "upper": upper, "x0": x0}, DEGREE,
            expected, {"monitor": "error"})


LEARNED_F64 = "a learned model with float64 weights"

# One row per (problem, method) pair; every registered method needs at least one. A row that
# exposes a bug in its method gets ``marks=(pytest.mark.xfail(strict=True, reason=...),)``
# (this marks every check of the row; to mark one check only, wrap that row in the one test's
# parametrization with ``pytest.param(case, id=case.id, marks=...)``).

CASES = [
    Case("jacobi-diag-dominant", "jacobi", jacobi_case),
    Case("jacobi-sparse-different-patterns", "jacobi", jacobi_sparse_blocks_case),
    Case("sor-diag-dominant", "sor", sor_case),
    Case("sor-sparse-batch-per-instance-omega", "sor", sor_sparse_batch_case),
    Case("ssor-spd", "ssor", ssor_case),
    Case("ssor-sparse-different-patterns", "ssor", ssor_sparse_blocks_case),
    Case("bicgstab-nonsymmetric-scipy", "bicgstab", bicgstab_case),
    Case("bicgstab-sparse-different-patterns-scipy", "bicgstab", bicgstab_sparse_batch_case),
    Case("cg-jacobi-preconditioner-sparse-batch", "cg", cg_jacobi_sparse_case),
    Case("cg-ic0-preconditioner-sparse-batch", "cg", cg_ic0_case("shared")),
    Case("cg-ic0-preconditioner-different-patterns", "cg", cg_ic0_case("blocks")),
    Case("chebyshev-exact-bounds", "chebyshev", chebyshev_case, at_degree=chebyshev_at_degree),
    Case("chebyshev-per-instance-bounds", "chebyshev", chebyshev_per_instance_case),
    Case("cg-spd", "cg", cg_case),
    Case("cg-chebyshev-preconditioner", "cg", cg_polynomial_case),
    Case("iccg-sparse-spd", "iccg", iccg_case),
    Case("iccg-tridiagonal-exact", "iccg", iccg_tridiagonal_case, one_step=True),
    Case("polynomial-recurrence-chebyshev", "polynomial-recurrence", recurrence_case,
         at_degree=recurrence_at_degree),
    Case("chebyshev-expansion-solve", "chebyshev-expansion", expansion_case,
         at_degree=expansion_at_degree),
    Case("chebyshev-series-inverse-sqrt", "chebyshev-series", series_case,
         at_degree=series_at_degree),
    Case("filtered-subspace-smallest-2", "filtered-subspace-iteration", subspace_case),
    Case("learned-filtered-subspace-untrained", "learned-filtered-subspace-iteration",
         learned_subspace_case, float32=LEARNED_F64),
    Case("newton-sor-chandrasekhar", "newton-sor", newton_sor_case),
    Case("r2n2-chandrasekhar-fixed-point", "r2n2", r2n2_fixed_point_case),
    Case("r2n2-linear-richardson", "r2n2", r2n2_linear_case),
    Case("gmres-nonsymmetric", "gmres", gmres_case),
    Case("gmres-full-cycle-exact", "gmres", gmres_full_cycle_case, one_step=True),
    Case("gmres-sparse-batch", "gmres", gmres_sparse_batch_case),
    Case("newton-krylov-chandrasekhar", "newton-krylov", newton_krylov_case),
    Case("scs-planted", "scs", scs_case),
    Case("scs-anderson-planted", "scs-anderson", anderson_case),
    Case("scs-recurrent-untrained", "scs-recurrent", recurrent_scs_case, float32=LEARNED_F64),
    Case("scs-intermittent-untrained", "scs-intermittent", intermittent_scs_case,
         float32=LEARNED_F64),
]


def _params(cases, select=lambda case: True):
    return [pytest.param(case, id=case.id, marks=case.marks) for case in cases if select(case)]


ALL = _params(CASES)


# --- the checks -----------------------------------------------------------------------------------


def test_every_registered_method_has_a_case():
    # Only the library's own methods: other tests register throw-away ones of their own.
    shipped = {name for name in METHODS if METHODS[name].__module__.startswith("metasolve.")}
    covered = {case.method for case in CASES}
    missing = sorted(shipped - covered)
    assert not missing, f"registered methods without a case in CASES: {missing}"
    unknown = sorted(covered - set(METHODS))
    assert not unknown, f"CASES names methods that are not registered: {unknown}"
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", ALL)
def test_case_builds_the_registered_method(case):
    setup = case.build(F64)
    assert type(setup.method) is METHODS[case.method]


@pytest.mark.parametrize("case", ALL)
def test_converges_to_reference(case):
    setup = case.build(F64)
    sol = ms.run(setup.method, setup.problem, params=setup.params, **setup.kwargs)
    assert sol.status.tolist() == [int(Status.CONVERGED)] * B, sol.summary()
    assert (sol.iterations > 0).all()
    if case.one_step:
        assert sol.iterations.tolist() == [1] * B
    got, expected = setup.answer(setup.problem, sol), setup.reference()
    torch.testing.assert_close(got.double(), expected.double(), rtol=0, atol=setup.tol)


@pytest.mark.parametrize("case", _params(CASES, lambda case: not case.one_step))
def test_maxiter_one_is_max_iterations(case):
    setup = case.build(F64)
    kwargs = {**setup.kwargs, "maxiter": 1}
    sol = ms.run(setup.method, setup.problem, params=setup.params, **kwargs)
    assert sol.status.tolist() == [int(Status.MAX_ITERATIONS)] * B, sol.summary()
    assert sol.iterations.tolist() == [1] * B
    assert sol.residual_history.shape[0] == 2


@pytest.mark.parametrize("case", ALL)
def test_callback_once_per_iteration(case):
    setup = case.build(F64)
    calls = []

    def callback(k, state, norms):
        assert isinstance(state, dict) and "x" in state
        assert norms.shape == (B,)
        calls.append(k)

    sol = ms.run(setup.method, setup.problem, params=setup.params, callback=callback,
                 **setup.kwargs)
    iterations = sol.residual_history.shape[0] - 1
    assert iterations == int(sol.iterations.max()) > 0
    assert calls == list(range(iterations))


def _tensors(obj, prefix="problem"):
    """Every tensor an object holds (dataclass fields or attributes, nested problems too)."""
    out = {}
    for key, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}.{key}"] = value
        elif hasattr(value, "__dict__") and not isinstance(value, (type, ConeSpec)):
            out.update(_tensors(value, f"{prefix}.{key}"))
    return out


@pytest.mark.parametrize("case", ALL)
def test_inputs_not_mutated(case):
    setup = case.build(F64)
    inputs = {**_tensors(setup.problem), "x0": setup.x0,
              **{f"params[{k!r}]": v for k, v in setup.params.items()}}
    copies = {name: value.clone() for name, value in inputs.items()}
    kwargs = {**setup.kwargs, "maxiter": 5}
    ms.run(setup.method, setup.problem, params=setup.params, x0=setup.x0, **kwargs)
    ms.run(setup.method, setup.problem, params={**setup.params, "x0": setup.x0}, **kwargs)
    for name, value in inputs.items():
        assert torch.equal(value, copies[name]), f"{name} was modified by the solve"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", ALL)
def test_dtype_and_shape_kept(case, dtype):
    if dtype == torch.float32 and case.float32 is not None:
        pytest.skip(f"no float32: {case.float32}")
    setup = case.build(dtype)
    expected_shape = tuple(setup.x0.shape)
    for x0 in (None, setup.x0):
        sol = ms.run(setup.method, setup.problem, params=setup.params, x0=x0,
                     **{**setup.kwargs, "maxiter": 3})
        assert sol.x.dtype == dtype
        assert tuple(sol.x.shape) == expected_shape
        assert sol.status.shape == sol.iterations.shape == (B,)
        assert sol.residual_history.dtype == dtype


@pytest.mark.parametrize("case", ALL)
def test_bad_input_raises_named_errors(case):
    setup = case.build(F64)
    with pytest.raises(ValueError, match=setup.nan_name):
        setup.nan_input()

    def run(**overrides):
        return ms.run(setup.method, setup.problem, params=setup.params,
                      **{**setup.kwargs, **overrides})

    bad = setup.x0.clone()
    bad.view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match="x0"):
        run(x0=bad)
    with pytest.raises(ValueError, match="rtol"):
        run(rtol=-1e-3)
    wide = torch.cat([setup.x0, setup.x0[:, :1]], dim=1)
    with pytest.raises(ValueError, match="x0"):
        run(x0=wide)
    with pytest.raises(ValueError, match="x0"):
        run(x0=setup.x0[:-1])


@pytest.mark.parametrize("case", _params(CASES, lambda case: case.at_degree is not None))
def test_polynomial_method_at_equal_degree(case):
    method, problem, params, degree, expected, kwargs = case.at_degree()
    sol = ms.run(method, problem, params=params, fixed_iterations=degree, rtol=0.0, **kwargs)
    assert sol.iterations.tolist() == [degree] * B
    torch.testing.assert_close(sol.x, expected, rtol=0, atol=1e-10 * expected.abs().max())


@pytest.mark.parametrize("case", ALL)
def test_bad_parameter_shapes_are_named(case):
    """Every declared parameter of a wrong shape is refused by ``run`` before the first step,
    with a ``ValueError`` naming it; ``params`` that is not a mapping is a ``TypeError``."""
    setup = case.build(F64)
    method = setup.method
    assert set(method.parameter_shapes) >= set(method.parameter_names)
    for name in method.parameter_names:
        for shape in ((B, 2, 2), (B + 1,), ()):
            bad = {**setup.params, name: torch.ones(shape, dtype=F64)}
            with pytest.raises(ValueError, match=rf"params\['{name}'\]"):
                ms.run(method, setup.problem, params=bad, **setup.kwargs)
    with pytest.raises(TypeError, match="params must be a mapping"):
        ms.run(method, setup.problem, params=torch.ones(B, dtype=F64), **setup.kwargs)
    with pytest.raises(TypeError, match="instantiate it"):
        ms.run(type(method), setup.problem, **setup.kwargs)
