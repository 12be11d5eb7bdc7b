"""Batched, differentiable iterative methods sharing one driver loop (:func:`run`)."""

from .base import IterativeMethod, run
from .jacobi import Jacobi
from .newton_sor import NewtonSOR
from .registry import METHODS, method_from_config, register_method

__all__ = ["IterativeMethod", "Jacobi", "METHODS", "NewtonSOR", "method_from_config",
           "register_method", "run"]
