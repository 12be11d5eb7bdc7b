"""Batched, differentiable iterative methods sharing one driver loop (:func:`run`)."""

from .base import IterativeMethod, run
from .jacobi import Jacobi
from .registry import METHODS, method_from_config, register_method

__all__ = ["IterativeMethod", "Jacobi", "METHODS", "method_from_config", "register_method", "run"]
