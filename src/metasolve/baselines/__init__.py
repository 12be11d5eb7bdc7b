"""Thin adapters to reference implementations (SciPy, pyamg, scs), run per instance, for
baselines; the strong classical solvers of ``metasolve bench`` (:mod:`.strong`) and the
deployment of learned parts into them (:mod:`.deploy`)."""

from .deploy import (
    Deployment,
    chebyshev_polynomial_operator,
    eigen_blocks,
    ic_preconditioners,
    learned_guess,
    linear_starts,
    nonlinear_guess,
    nonlinear_starts,
    polynomial_preconditioners,
    scs_warm_starts,
)
from .scipy_krylov import gmres_history, newton_krylov_history
from .scs_reference import scs_problem_data, solve_batch_with_scs, solve_with_scs

__all__ = ["Deployment", "chebyshev_polynomial_operator", "eigen_blocks", "gmres_history",
           "ic_preconditioners", "learned_guess", "linear_starts", "newton_krylov_history",
           "nonlinear_guess", "nonlinear_starts", "polynomial_preconditioners", "scs_problem_data",
           "scs_warm_starts", "solve_batch_with_scs", "solve_with_scs"]
