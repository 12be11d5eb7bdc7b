"""A classical method plus a meta-solver: the object users train, save, load and solve with."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..solution import Solution
from ..solvers.base import MONITORS, IterativeMethod, run
from ..tasks.base import TaskBatch, TaskFamily
from ..validation import check_choice
from .metasolver import MetaSolver


class LearnedSolver:
    """``Phi(tau; Psi(tau; omega))``: run ``method`` with the parameters ``metasolver`` predicts.

    ``model`` holds what is trained and saved: the meta-solver, plus the method when the method
    is itself an ``nn.Module`` with learned weights.

    Args:
        method: the classical iterative method ``Phi``.
        metasolver: the trained (or to-be-trained) ``Psi``.
        family: the task family it was trained on (stored in the artifact; optional).
        monitor: ``"residual"`` or ``"error"``, the norm the stopping test reads.
        settings: free-form, JSON-serialisable record of how it was trained.

    Example:
        >>> import metasolve as ms
        >>> fam = ms.Poisson1DFamily(n=16)
        >>> psi = ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16))})
        >>> solver = ms.LearnedSolver(ms.Jacobi(), psi, family=fam)
        >>> sol = solver.solve(fam.sample(4, seed=1), rtol=1e-6, maxiter=2000)
        >>> sol.x.shape
        torch.Size([4, 16])
    """

    def __init__(self, method: IterativeMethod, metasolver: MetaSolver,
                 family: TaskFamily | None = None, monitor: str = "residual",
                 settings: dict[str, Any] | None = None):
        if not isinstance(method, IterativeMethod):
            raise TypeError(f"method must be an IterativeMethod, got {type(method).__name__}")
        if not isinstance(metasolver, MetaSolver):
            raise TypeError(f"metasolver must be a MetaSolver, got {type(metasolver).__name__}")
        unknown = sorted(set(metasolver.outputs) - set(method.parameter_names) - {"x0"})
        if unknown:
            raise ValueError(f"metasolver outputs {unknown} are not parameters of {method.name} "
                             f"(allowed: {sorted(set(method.parameter_names) | {'x0'})})")
        if family is not None and getattr(metasolver, "in_features", None) not in (
                None, family.feature_dim):
            raise ValueError(f"metasolver expects {metasolver.in_features} features but family "
                             f"{family.name} provides {family.feature_dim}")
        self.method = method
        self.metasolver = metasolver
        # Everything trainable, under stable names: the meta-solver, and the method itself when
        # it carries learned weights (an acceleration model applied inside each step).
        parts = {"metasolver": metasolver}
        if isinstance(method, nn.Module):
            parts["method"] = method
        self.model = nn.ModuleDict(parts)
        self.family = family
        self.monitor = check_choice("monitor", monitor, MONITORS)
        self.settings = dict(settings or {})

    def params(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``theta = Psi(tau; omega)`` for a batch of task features."""
        return self.metasolver(features)

    @property
    def method_is_trainable(self) -> bool:
        """Whether the method carries trainable weights of its own (a learned acceleration
        model), besides the meta-solver's."""
        return isinstance(self.method, nn.Module) and any(
            p.requires_grad for p in self.method.parameters())

    def solve(self, tasks: TaskBatch, params: dict[str, torch.Tensor] | None = None,
              **run_options) -> Solution:
        """Predict ``theta`` for ``tasks`` and run the method; options go to :func:`metasolve.run`.

        ``solution.info["inference_time"]`` is the meta-solver's time and ``wall_time`` includes
        it, so wall-clock comparisons with the classical method are fair.

        ``params``, if given, is run instead of the prediction: a dict like :meth:`params`
        returns, one row per task. Training uses it to differentiate with respect to ``theta``
        itself (the Gauss-Newton refinement); no meta-solver runs, so ``inference_time`` is 0.
        """
        if params is not None:
            return self._run(tasks, None, run_options, params=params)
        return self._run(tasks, self.params, run_options)

    def solve_baseline(self, tasks: TaskBatch, **run_options) -> Solution:
        """Run the method with :meth:`MetaSolver.baseline_params` (the classical method the
        untrained meta-solver is) instead of the predicted ``theta``; no gradient."""
        with torch.no_grad():
            return self._run(tasks, self.metasolver.baseline_params, run_options)

    def _run(self, tasks: TaskBatch, params_of, run_options: dict,
             params: dict[str, torch.Tensor] | None = None) -> Solution:
        # The one place where a meta-solver's parameters meet the method: prediction,
        # baseline and training solves all come through here with the same defaults.
        if not isinstance(tasks, TaskBatch):
            raise TypeError(f"tasks must be a TaskBatch, got {type(tasks).__name__}")
        run_options.setdefault("monitor", self.monitor)
        inference = 0.0
        if params is None:
            start = time.perf_counter()
            params = params_of(tasks.features)
            inference = time.perf_counter() - start
        solution = run(self.method, tasks.problem, params=params, **run_options)
        solution.wall_time += inference
        solution.info["inference_time"] = inference
        return solution

    def save(self, path) -> None:
        """Write ``path`` (safetensors) and its JSON description; see :mod:`metasolve.artifact`."""
        from ..artifact import save

        save(self, path)

    @classmethod
    def load(cls, path, family: TaskFamily | None = None) -> LearnedSolver:
        from ..artifact import load

        return load(path, family=family)

    def __repr__(self) -> str:
        return (f"LearnedSolver(method={self.method!r}, metasolver={self.metasolver.config()}, "
                f"family={self.family!r})")
