"""Thin adapters to reference implementations (SciPy), run per instance, for baselines."""

from .scipy_krylov import gmres_history, newton_krylov_history
from .scs_reference import scs_problem_data, solve_batch_with_scs, solve_with_scs

__all__ = ["gmres_history", "newton_krylov_history", "scs_problem_data", "solve_batch_with_scs",
           "solve_with_scs"]
