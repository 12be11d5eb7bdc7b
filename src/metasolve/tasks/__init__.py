"""Task families (the GBMS paper's task space) and the built-in ones."""

from .base import (
                   FAMILIES,
                   Splits,
                   TaskBatch,
                   TaskFamily,
                   family_from_config,
                   make_splits,
                   register_family,
)
from .chandrasekhar import ChandrasekharFamily, ChandrasekharSystem
from .conic import PAPER_SIZES, CanonicalConeProgram, DynamicLassoFamily, KalmanFamily, LassoFamily
from .elasticity import ElasticBeamFamily
from .fem import FiniteElementFamily
from .grid_diffusion import GridDiffusionFamily
from .matrix_set import MatrixSetFamily, r2n2_matrices
from .poisson1d import Poisson1DFamily, poisson1d_matrix, sine_basis
from .robertson import RobertsonFamily, RobertsonStep
from .spectra import SPECTRUM_KINDS, FilterStateFamily, SpectrumFamily, probe_features
from .van_der_pol import VanDerPolFamily, VanDerPolSteps

__all__ = [
    "CanonicalConeProgram", "ChandrasekharFamily", "ChandrasekharSystem", "DynamicLassoFamily",
    "ElasticBeamFamily", "FAMILIES", "FilterStateFamily", "FiniteElementFamily",
    "GridDiffusionFamily", "KalmanFamily",
    "LassoFamily",
    "MatrixSetFamily", "PAPER_SIZES", "Poisson1DFamily", "RobertsonFamily", "RobertsonStep",
    "SPECTRUM_KINDS", "SpectrumFamily", "Splits", "TaskBatch", "TaskFamily", "VanDerPolFamily",
    "VanDerPolSteps", "family_from_config", "make_splits", "poisson1d_matrix", "probe_features",
    "r2n2_matrices", "register_family", "sine_basis"
]
