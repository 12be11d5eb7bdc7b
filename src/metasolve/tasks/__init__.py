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

__all__ = ["FAMILIES", "ElasticBeamFamily", "Poisson1DFamily", "Splits", "TaskBatch", "TaskFamily",
           "family_from_config", "make_splits", "poisson1d_matrix", "register_family",
           "sine_basis"]
