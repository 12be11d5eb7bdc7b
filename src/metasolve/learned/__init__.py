"""Meta-solvers (what is learned) and their constrained heads."""

from .autospec import AutoSpecEngine, calibrate_condition_limit, probe_inputs, split_probe
from .autospec_filter import LearnedFilterSubspaceIteration, filter_eigen_solver
from .heads import (
    BasisHead,
    BoundedHead,
    GridSineHead,
    Head,
    IdentityHead,
    IntervalHead,
    PositiveHead,
)
from .metasolver import (
    METASOLVERS,
    ConstantMetaSolver,
    MetaSolver,
    NetworkMetaSolver,
    metasolver_from_config,
    register_metasolver,
)
from .neural_scs import IntermittentSCS, RecurrentSCS
from .r2n2 import (
    CLASSICAL_TABLEAUS,
    EULER,
    HEUN,
    R2N2,
    RK3,
    RK4,
    ButcherTableau,
    Certificate,
    constant_weights,
    frozen_r2n2,
    r2n2_solver,
)
from .solver import LearnedSolver

__all__ = [
    "CLASSICAL_TABLEAUS", "EULER", "HEUN", "METASOLVERS", "AutoSpecEngine", "BasisHead",
    "BoundedHead", "ButcherTableau", "Certificate",
    "ConstantMetaSolver", "GridSineHead", "Head", "IdentityHead", "IntermittentSCS", "IntervalHead",
    "LearnedFilterSubspaceIteration", "LearnedSolver", "MetaSolver", "NetworkMetaSolver",
    "PositiveHead", "R2N2", "RK3", "RK4", "RecurrentSCS", "constant_weights",
    "calibrate_condition_limit", "filter_eigen_solver", "frozen_r2n2", "metasolver_from_config",
    "probe_inputs",
    "r2n2_solver", "register_metasolver", "split_probe"
]
