"""Batched, differentiable iterative methods sharing one driver loop (:func:`run`)."""

from .anderson import AndersonSCS
from .base import IterativeMethod, run
from .bicgstab import BiCGStab
from .cg import ConjugateGradient
from .chebyshev import Chebyshev
from .chebyshev_expansion import ChebyshevExpansion, ChebyshevSeries
from .gmres import GMRES, gmres_cycle
from .iccg import ICCG, incomplete_cholesky
from .jacobi import Jacobi
from .newton_krylov import NewtonKrylov, forward_difference
from .newton_sor import NewtonSOR
from .recurrence import PolynomialRecurrence, residual_polynomial
from .registry import METHODS, method_from_config, register_method
from .scs import SCS
from .sor import SOR, SSOR, Splitting
from .subspace import FilteredSubspaceIteration, chebyshev_filter_rule, filter_features

__all__ = [
    "AndersonSCS", "BiCGStab", "Chebyshev", "ChebyshevExpansion", "ChebyshevSeries",
    "ConjugateGradient", "FilteredSubspaceIteration", "GMRES", "ICCG", "IterativeMethod",
    "Jacobi", "METHODS", "NewtonKrylov", "NewtonSOR", "PolynomialRecurrence", "SCS", "SOR", "SSOR",
    "Splitting", "chebyshev_filter_rule", "filter_features", "forward_difference", "gmres_cycle",
    "incomplete_cholesky", "method_from_config", "register_method", "residual_polynomial", "run"
]
