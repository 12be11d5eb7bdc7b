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
from .elasticity import ElasticBeamFamily
from .poisson1d import Poisson1DFamily, poisson1d_matrix, sine_basis
from .robertson import RobertsonFamily, RobertsonStep
from .spectra import SPECTRUM_KINDS, FilterStateFamily, SpectrumFamily, probe_features

__all__ = [
    "ElasticBeamFamily", "FAMILIES", "FilterStateFamily", "Poisson1DFamily", "RobertsonFamily",
    "RobertsonStep", "SPECTRUM_KINDS", "SpectrumFamily", "Splits", "TaskBatch", "TaskFamily",
    "family_from_config", "make_splits", "poisson1d_matrix", "probe_features", "register_family",
    "sine_basis"
]
