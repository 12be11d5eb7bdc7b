"""The public API, in one module: every name ``metasolve.X`` a user reads.

``import metasolve`` itself is light (no torch): the package's ``__init__`` imports this module
the first time any of these names is read (``metasolve.run``, ``from metasolve import Jacobi``),
so that the command line starts fast (docs/architecture.md, section 2.1).
"""

from ._version import __version__
from .artifact import ArtifactError
from .baselines.scipy_krylov import newton_krylov_history
from .benchmark import bench, bench_model
from .evaluation.metrics import compare_wall_clock
from .kernels import set_compile
from .learned import (
    EULER,
    HEUN,
    R2N2,
    RK3,
    RK4,
    AutoSpecEngine,
    BasisHead,
    BoundedHead,
    ButcherTableau,
    ConstantMetaSolver,
    GridSineHead,
    IdentityHead,
    IntervalHead,
    LearnedSolver,
    MetaSolver,
    NetworkMetaSolver,
    PositiveHead,
    constant_weights,
    frozen_r2n2,
    r2n2_solver,
)
from .learned.autospec import calibrate_condition_limit, split_probe
from .learned.solver import load, save
from .problems import (
    ConeProgram,
    ConeSpec,
    DiagonalSystem,
    EigenProblem,
    InitialValueProblem,
    LinearSystem,
    NonlinearSystem,
    Problem,
)
from .solution import ConvergenceError, Solution, Status
from .solvers import (
    GMRES,
    ICCG,
    SCS,
    SOR,
    SSOR,
    BiCGStab,
    Chebyshev,
    ChebyshevExpansion,
    ChebyshevSeries,
    ConjugateGradient,
    FilteredSubspaceIteration,
    IterativeMethod,
    Jacobi,
    NewtonKrylov,
    NewtonSOR,
    PolynomialRecurrence,
    chebyshev_filter_rule,
    register_method,
    run,
)
from .sparse import SparseBatch, SparsePattern
from .tasks import (
    ChandrasekharFamily,
    ElasticBeamFamily,
    FilterStateFamily,
    FiniteElementFamily,
    GridDiffusionFamily,
    MatrixSetFamily,
    Poisson1DFamily,
    RobertsonFamily,
    SpectrumFamily,
    TaskBatch,
    TaskFamily,
    VanDerPolFamily,
    make_splits,
    register_family,
    sine_basis,
)
from .tasks.operators import sparse_system
from .training import (
    FailurePenaltyLoss,
    FilterGapLoss,
    FixedIterationLoss,
    GaussNewtonConfig,
    IterationSurrogateLoss,
    LogResidualLoss,
    RelativeLogResidualLoss,
    Trainer,
    TrainingConfig,
    TrainingWarning,
    WeightedResidualLoss,
)

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
    "compare_wall_clock",
    "constant_weights",
    "frozen_r2n2", "load", "make_splits", "newton_krylov_history", "r2n2_solver",
    "register_family", "register_method", "run", "save", "set_compile", "sine_basis",
    "sparse_system", "split_probe"
]
