"""Statuses that are true, and inputs checked before the first step (the hardening issue).

* A method whose stopping norm is a residual it updates by a recurrence (CG, polynomially
  preconditioned CG, Chebyshev iteration, the polynomial recurrence, the Chebyshev expansion)
  never reports ``CONVERGED`` with a true residual ``||A x - b||`` (computed here in float64)
  above ``max(rtol ||b||, atol)``; an unattainable tolerance ends ``ACCURACY_LIMIT``.
* Fixed-iteration runs (training) are bitwise what they were: no confirmation there.
* A Chebyshev run on a wrong interval ends ``DIVERGED``; the stagnation test is opt-in.
* Parameters of a wrong shape, ``params`` that is not a mapping and a method class are refused
  with named errors; ``solution.x`` never aliases ``x0``; a large graph warns.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import metasolve as ms
from metasolve import Status
from metasolve.polynomials import chebyshev_recurrence_coefficients, chebyshev_solve_expansion
from metasolve.solvers.base import GraphMemoryWarning

F64 = torch.float64
N, B = 16, 3


def spd(cond: float, dtype, n: int = N, seed: int = 0) -> torch.Tensor:
    """A dense SPD matrix with eigenvalues geometrically spaced in ``[1, cond]``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    lam = torch.logspace(0.0, float(torch.log10(torch.tensor(cond))), n, dtype=F64)
    a = q @ torch.diag(lam) @ q.T
    return ((a + a.T) / 2).to(dtype)


def system(cond: float, dtype, seed: int = 1) -> ms.LinearSystem:
    rhs = torch.randn(B, N, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return ms.LinearSystem(spd(cond, dtype), rhs.to(dtype))


def true_ratio(problem: ms.LinearSystem, sol) -> torch.Tensor:
    """``||A x - b|| / threshold`` per instance, in float64."""
    a, b = problem.matrix.double(), problem.rhs.double()
    residual = sol.x.double() @ a.T - b
    return torch.linalg.vector_norm(residual, dim=1) / sol.threshold.double()


def _bounds(cond, dtype):
    return torch.full((B,), 1.0, dtype=dtype), torch.full((B,), cond, dtype=dtype)


def methods(cond: float, dtype):
    """(id, method, params, maxiter) of every recurrence-stopped method on ``[1, cond]``."""
    lower, upper = _bounds(cond, dtype)
    steps = 1500
    recurrence = {k: v.to(dtype) for k, v in chebyshev_recurrence_coefficients(
        lower.double(), upper.double(), steps).items()}
    expansion = {"coefficients": chebyshev_solve_expansion(lower.double(), upper.double(),
                                                           steps).to(dtype),
                 "lower": lower, "upper": upper}
    pcg = {"coefficients": chebyshev_solve_expansion(lower.double(), upper.double(), 4).to(dtype),
           "lower": lower, "upper": upper}
    return [("cg", ms.ConjugateGradient(), {}, 400),
            ("pcg", ms.ConjugateGradient(), pcg, 400),
            ("chebyshev", ms.Chebyshev(lower=1.0, upper=cond), {}, steps),
            ("recurrence", ms.PolynomialRecurrence(), recurrence, steps),
            ("expansion", ms.ChebyshevExpansion(), expansion, steps)]


CONDITIONS = [1e6, 1e8, 1e10]
SETTINGS = [(F64, 1e-10), (F64, 1e-12), (torch.float32, 1e-7), (torch.float32, 1e-5)]


@pytest.mark.parametrize("dtype,rtol", SETTINGS, ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("cond", CONDITIONS, ids=lambda c: f"cond{c:.0e}")
def test_converged_means_true_residual_below_threshold(cond, dtype, rtol):
    problem = system(cond, dtype)
    for name, method, params, maxiter in methods(cond, dtype):
        sol = ms.run(method, problem, params=params, rtol=rtol, maxiter=maxiter,
                     divergence_factor=1e300)
        ratio = true_ratio(problem, sol)
        converged = sol.status == Status.CONVERGED
        assert (ratio[converged] <= 1.0).all(), (name, sol.status_names(), ratio.tolist())
        assert sol.info["history_norm"] == "recurrence"


def test_cg_ill_conditioned_no_false_convergence():
    """The audit's case: float64 CG, condition 1e8, rtol 1e-10 (and 1e-12) ended CONVERGED
    with a true residual 23 (2,400) times the threshold."""
    problem = system(1e8, F64)
    for rtol in (1e-10, 1e-12):
        sol = ms.run(ms.ConjugateGradient(), problem, rtol=rtol, maxiter=400)
        ratio = true_ratio(problem, sol)
        assert ((sol.status != Status.CONVERGED) | (ratio <= 1)).all(), ratio.tolist()
        assert (sol.info["confirmations"] >= 1).all()
    sol = ms.run(ms.ConjugateGradient(), problem, rtol=1e-14, maxiter=400)
    assert sol.status_names() == ["accuracy_limit"] * B  # far below attainable accuracy
    assert "attainable accuracy" in Status.ACCURACY_LIMIT.message


def test_well_conditioned_counts_unchanged_and_one_confirmation():
    """A solve whose recurrence residual stays honest stops where it always did, at the cost
    of one true residual per instance."""
    problem = system(1e2, F64)
    sol = ms.run(ms.ConjugateGradient(), problem, rtol=1e-8, maxiter=200)
    assert sol.status_names() == ["converged"] * B
    assert sol.info["confirmations"].tolist() == [1] * B
    # The first iterate whose recurrence residual passes is the one it stops at.
    relative = sol.residual_history / sol.reference_norm
    first = torch.argmax((relative <= 1e-8).to(torch.int8), dim=0)
    assert torch.equal(first, sol.iterations)


def test_fixed_iterations_are_not_confirmed():
    problem = system(1e8, F64)
    sol = ms.run(ms.ConjugateGradient(), problem, fixed_iterations=200, rtol=0.0)
    assert sol.info["confirmations"].tolist() == [0] * B
    assert sol.iterations.tolist() == [200] * B


def test_replacement_keeps_the_method_converging():
    """After a failed confirmation the instance goes on from the true residual and reaches the
    tolerance (float32 CG, a tolerance that the float32 recurrence passes too early)."""
    problem = system(1e3, torch.float32, seed=3)
    sol = ms.run(ms.ConjugateGradient(), problem, rtol=1e-6, maxiter=400)
    ratio = true_ratio(problem, sol)
    converged = sol.status == Status.CONVERGED
    assert (ratio[converged] <= 1).all()
    assert set(sol.status_names()) <= {"converged", "accuracy_limit"}


def test_chebyshev_wrong_interval_diverges():
    problem = system(1e2, F64)
    # [1, 20] misses the eigenvalues above lower + upper = 21 (the spectrum reaches 100): there
    # |T_k((theta - t) / delta)| outgrows T_k(theta / delta) and the residual grows without bound.
    sol = ms.run(ms.Chebyshev(lower=1.0, upper=20.0), problem, rtol=1e-10, maxiter=2000)
    assert sol.status_names() == ["diverged"] * B
    assert (sol.iterations < 2000).all()
    # Callers that switch the test off keep running to maxiter, as before.
    off = ms.run(ms.Chebyshev(lower=1.0, upper=20.0), problem, rtol=1e-10, maxiter=50,
                 divergence_factor=1e300)
    assert off.iterations.tolist() == [50] * B


def test_stagnation_is_opt_in():
    # Richardson-like Jacobi with omega far too small creeps: no new minimum is impossible,
    # so use a method that truly stalls: a recurrence with zero steps after the first.
    problem = system(1e2, F64)
    lower, upper = _bounds(1e2, F64)
    theta = chebyshev_recurrence_coefficients(lower, upper, 200)
    theta = {"initial": theta["initial"], "momentum": torch.zeros_like(theta["momentum"]),
             "step": torch.zeros_like(theta["step"])}
    default = ms.run(ms.PolynomialRecurrence(), problem, params=theta, rtol=1e-10, maxiter=200)
    assert default.status_names() == ["max_iterations"] * B
    stalled = ms.run(ms.PolynomialRecurrence(), problem, params=theta, rtol=1e-10, maxiter=200,
                     stagnation_window=20)
    assert stalled.status_names() == ["stagnated"] * B
    assert (stalled.iterations < 40).all()


# --- checked inputs ---------------------------------------------------------------------------


def jacobi_problem():
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=F64)
    return ms.LinearSystem(a, torch.ones(B, 2, dtype=F64))


@pytest.mark.parametrize("shape", [(B, 2), (B, 5), (), (B + 1,)])
def test_jacobi_omega_shape_checked(shape):
    with pytest.raises(ValueError, match=r"params\['omega'\]"):
        ms.run(ms.Jacobi(), jacobi_problem(), params={"omega": torch.ones(shape, dtype=F64)})


def test_params_must_be_a_mapping():
    with pytest.raises(TypeError, match="params must be a mapping"):
        ms.run(ms.Jacobi(), jacobi_problem(), params=torch.ones(B, dtype=F64))


def test_method_class_is_refused():
    with pytest.raises(TypeError, match=r"instantiate it first: Jacobi\(\)"):
        ms.run(ms.Jacobi, jacobi_problem())


def test_solution_never_aliases_x0():
    x0 = torch.zeros(B, 2, dtype=F64)
    for kwargs in ({"x0": x0}, {"params": {"x0": x0}}):
        sol = ms.run(ms.Jacobi(), jacobi_problem(), maxiter=0, **kwargs)
        assert sol.x is not x0 and sol.x.data_ptr() != x0.data_ptr()
        sol.x.add_(1.0)
        assert torch.equal(x0, torch.zeros(B, 2, dtype=F64))


# --- the autograd graph warning ---------------------------------------------------------------


def graph_problem(n=64, batch=100):
    a = torch.diag(torch.full((n,), 4.0, dtype=F64)) + torch.diag(
        torch.ones(n - 1, dtype=F64), 1) + torch.diag(torch.ones(n - 1, dtype=F64), -1)
    return ms.LinearSystem(a, torch.ones(batch, n, dtype=F64))


def test_large_graph_warns():
    problem = graph_problem()
    omega = torch.full((100,), 0.01, dtype=F64, requires_grad=True)  # slow: runs to maxiter
    with pytest.warns(GraphMemoryWarning, match="torch.no_grad"):
        ms.run(ms.Jacobi(), problem, params={"omega": omega}, rtol=1e-12, maxiter=1400)


def test_graph_warning_silent_when_it_must_be():
    problem = graph_problem()
    omega = torch.full((100,), 0.01, dtype=F64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphMemoryWarning)
        with torch.no_grad():
            ms.run(ms.Jacobi(), problem, params={"omega": omega}, rtol=1e-12, maxiter=1400)
        ms.run(ms.Jacobi(), problem, params={"omega": omega}, fixed_iterations=1400, rtol=0.0)
        ms.run(ms.Jacobi(), problem, params={"omega": omega}, rtol=1e-12, maxiter=1400,
               truncate=50)
        ms.run(ms.Jacobi(), problem, params={"omega": omega}, rtol=1e-12, maxiter=300)
        ms.run(ms.Jacobi(), problem, rtol=1e-12, maxiter=1400)  # nothing requires grad
