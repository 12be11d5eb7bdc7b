"""metasolve: learn to accelerate iterative numerical solvers on a distribution of problems.

The frame is that of gradient-based meta-solving (GBMS paper, sec. 2.1): a task family, a
classical iterative method ``Phi(tau; theta)``, a meta-solver ``Psi(tau; omega) -> theta``, a loss,
and a trainer. See docs/architecture.md and README.md.

Importing the package is light: it does not import torch. The public names below live in
:mod:`metasolve.api`, which is imported the first time one of them is read (``metasolve.run``,
``from metasolve import Jacobi``); from then on the package holds every name and subpackage, as
an eager import would. This keeps ``metasolve --help`` and ``metasolve list`` fast.
"""

from ._version import __version__

# The same list as metasolve.api.__all__ (tests/test_import_graph.py checks that they agree);
# repeated here so that `from metasolve import *` and documentation tools can read it without
# importing the API.
__all__ = [
    "ArtifactError", "AutoSpecEngine", "BasisHead", "BiCGStab", "BoundedHead",
    "ButcherTableau",
    "ChandrasekharFamily", "Chebyshev", "ChebyshevExpansion", "ChebyshevSeries", "ConeProgram",
    "ConeSpec", "ConjugateGradient", "ConstantMetaSolver", "ConvergenceError", "DiagonalSystem",
    "EULER", "EigenProblem", "ElasticBeamFamily", "FailurePenaltyLoss", "FilterGapLoss",
    "FilterStateFamily", "FilteredSubspaceIteration", "FiniteElementFamily", "FixedIterationLoss",
    "GaussNewtonConfig",
    "GMRES", "GridDiffusionFamily", "GridSineHead", "HEUN", "ICCG", "IdentityHead",
    "InitialValueProblem", "IntervalHead", "IterationSurrogateLoss", "IterativeMethod", "Jacobi",
    "LearnedSolver", "LinearSystem", "LogResidualLoss", "MatrixSetFamily", "MetaSolver",
    "NetworkMetaSolver", "NewtonKrylov", "NewtonSOR", "NonlinearSystem", "Poisson1DFamily",
    "PolynomialRecurrence", "Problem",
    "PositiveHead", "R2N2", "RK3", "RK4", "RelativeLogResidualLoss", "RobertsonFamily", "SCS",
    "SOR", "SSOR", "Solution", "SparseBatch", "SparsePattern", "SpectrumFamily",
    "Status", "TaskBatch", "TaskFamily", "Trainer", "TrainingConfig", "TrainingWarning",
    "VanDerPolFamily",
    "WeightedResidualLoss", "__version__", "bench", "bench_model", "calibrate_condition_limit",
    "chebyshev_filter_rule",
    "compare_wall_clock", "constant_weights", "frozen_r2n2", "load", "make_splits",
    "newton_krylov_history", "r2n2_solver", "register_family", "register_method", "run", "save",
    "set_compile", "sine_basis", "sparse_system", "split_probe"
]


def __getattr__(name: str):
    """Import the API on the first read of a name the package does not hold yet (PEP 562)."""
    if name.startswith("__") or name == "api":
        # Probes such as __path__ or __wrapped__ must not pull in torch; and `from . import api`
        # below asks for "api" first, which must fail for the import system to import it.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # The one function-local import of a metasolve module the import graph allows: the API
    # imports torch and every subpackage, which the command line must not pay for.
    from . import api

    namespace = globals()
    for public in api.__all__:
        namespace.setdefault(public, getattr(api, public))
    if name in namespace:
        return namespace[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
