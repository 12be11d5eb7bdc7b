"""Thin adapters to reference implementations (SciPy), run per instance, for baselines."""

from .scipy_krylov import gmres_history, newton_krylov_history

__all__ = ["gmres_history", "newton_krylov_history"]
