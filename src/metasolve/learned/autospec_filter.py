"""The AutoSpec filter (task (b)) as a learned solver of eigenvalue problems, so that its solves
go through :meth:`LearnedSolver.solve` and its safeguard like every other learned solve.

The filter engine (:class:`~metasolve.learned.autospec.AutoSpecEngine`, paradigm ``"filter"``)
is trained on states of Chebyshev-filtered subspace iteration and called by the iteration
itself, every step, on the current Ritz values: it is part of the method, not a prediction made
once per task. :class:`LearnedFilterSubspaceIteration` is therefore a method with weights of
its own (the engine), like neural SCS, whose one per-instance parameter ``learned_filter`` says
whether an instance runs the learned filter (1) or Chebyshev's ``T_d`` on ``[theta_p, b]`` (0).
:func:`filter_eigen_solver` wraps it in a :class:`LearnedSolver` whose constant meta-solver asks
for the learned filter everywhere and whose classical method is Chebyshev-filtered subspace
iteration of the same degree (:class:`~metasolve.solvers.FilteredSubspaceIteration`), with the
envelope of the engine's training states and the two methods' iteration counts on eigenproblems
of the training spectra (:func:`~metasolve.learned.safeguard.calibrate`). The safeguard then
acts as on any learned parameter: a budget from those counts, the rate test, and a restart with
the classical filter from the best Ritz block for an instance the learned filter leaves
unconverged.

The tasks' features are the filter features (Ritz values, residual norms, upper bound) of the
starting block's Rayleigh-Ritz step, the engine's training states after 0 iterations
(:func:`eigen_tasks`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..problems import EigenProblem
from ..solvers.registry import register_method
from ..solvers.subspace import FilteredSubspaceIteration, chebyshev_filter_rule, filter_features
from ..tasks.base import TaskBatch
from ..tasks.spectra import FilterStateFamily, diagonal_eigen_start
from .autospec import AutoSpecEngine
from .heads import IdentityHead
from .metasolver import ConstantMetaSolver
from .safeguard import CALIBRATION_MAXITER, calibrate
from .solver import LearnedSolver


@register_method
class LearnedFilterSubspaceIteration(FilteredSubspaceIteration, nn.Module):
    """Subspace iteration with a learned filter ``engine`` (paradigm ``"filter"``) where
    ``params["learned_filter"]`` is above 1/2, else Chebyshev's filter of the engine's degree.

    Args:
        engine: the filter engine, or its config (an artifact rebuilds it from that).
    """

    name = "learned-filtered-subspace-iteration"
    parameter_names = ("learned_filter",)
    parameter_shapes = {"learned_filter": "instance"}

    def __init__(self, engine: AutoSpecEngine | dict):
        nn.Module.__init__(self)
        if isinstance(engine, dict):
            engine = AutoSpecEngine.from_config({k: v for k, v in engine.items() if k != "kind"})
        if not isinstance(engine, AutoSpecEngine) or engine.paradigm != "filter":
            raise TypeError("engine must be an AutoSpecEngine of paradigm 'filter'")
        self.degree = engine.degree
        self.engine = engine
        self.classical_rule = chebyshev_filter_rule(engine.degree)

    def config(self) -> dict:
        return {"engine": self.engine.config()}

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        return AutoSpecEngine.parameter_count(config.get("engine", {}))

    def classical(self, problem_type: type | None = None) -> FilteredSubspaceIteration:
        """Chebyshev-filtered subspace iteration of the engine's degree."""
        return FilteredSubspaceIteration(self.degree)

    def safeguarded(self) -> LearnedFilterSubspaceIteration:
        """No test inside the iteration: the safeguard's budget, rate test and fallback act on
        the run as a whole (:mod:`metasolve.learned.safeguard`)."""
        return self

    def step(self, problem: EigenProblem, state, params):
        features = filter_features(state["ritz"], state["residuals"], problem.upper)
        # Without the parameter, the learned filter everywhere.
        choice = params.get("learned_filter")
        learned = torch.ones(features.shape[0], dtype=torch.bool, device=features.device) \
            if choice is None else choice.reshape(-1) > 0.5
        chosen = self.classical_rule(features)
        if bool(learned.any()):
            mine = self.engine(features)
            chosen = {k: torch.where(learned.reshape(-1, *([1] * (v.ndim - 1))), mine[k], v)
                      for k, v in chosen.items()}
        return self.filter_step(problem, state, chosen)


def eigen_tasks(problem: EigenProblem) -> TaskBatch:
    """``problem`` with the features the filter engine reads, taken at its starting block: the
    Ritz values, residual norms and upper bound after the first Rayleigh-Ritz step (``p``
    products, the same the iteration spends on it)."""
    with torch.no_grad():
        state = FilteredSubspaceIteration._rayleigh_ritz(problem, problem.start)
    return TaskBatch(problem, filter_features(state["ritz"], state["residuals"], problem.upper))


def spectrum_eigen_tasks(family: FilterStateFamily, count: int, wanted: int, seed: int,
                         kappa_min: float | None = None,
                         kappa_max: float | None = None) -> TaskBatch:
    """``count`` eigenproblems ``diag(lambda)`` of the spectra of ``family`` (its condition
    number range unless ``kappa_min`` / ``kappa_max`` are given): the ``wanted`` smallest
    eigenpairs from a random block of ``family.block`` vectors, with the upper bound of the
    family's Lanczos probe."""
    config = family.spectra.config()
    if kappa_min is not None:
        config["kappa_min"] = kappa_min
    if kappa_max is not None:
        config["kappa_max"] = kappa_max
    spectra_family = type(family.spectra)(**config)
    generator = torch.Generator().manual_seed(seed)
    operator, start, upper = diagonal_eigen_start(spectra_family.sample_with(count, generator),
                                                  family.block, generator)
    return eigen_tasks(EigenProblem(operator, start, upper, wanted))


def filter_eigen_solver(engine: AutoSpecEngine, family: FilterStateFamily, wanted: int,
                        training_features: torch.Tensor | None = None,
                        calibration_tasks: TaskBatch | None = None,
                        calibration_maxiter: int = CALIBRATION_MAXITER, **settings):
    """The :class:`LearnedSolver` of eigenproblems that runs ``engine``'s filter (module
    docstring), with the envelope of ``training_features`` (the engine's training states) and
    the calibration on ``calibration_tasks`` (by default 32 eigenproblems of ``family``'s
    spectra with ``wanted`` eigenpairs) up to ``calibration_maxiter`` iterations (an iteration
    costs ``d p + p`` products: calibrate up to the cap the solver is used with)."""
    method = LearnedFilterSubspaceIteration(engine)
    selector = ConstantMetaSolver({"learned_filter": IdentityHead(1)},
                                  init={"learned_filter": 1.0}, in_features=family.feature_dim)
    selector.requires_grad_(False)
    solver = LearnedSolver(method, selector, family=family, settings=settings,
                           classical_method=method.classical())
    if training_features is not None:
        solver.record_training_features(training_features)
    if calibration_tasks is None:
        calibration_tasks = spectrum_eigen_tasks(family, 32, wanted, seed=12345)
    solver.calibration = calibrate(solver, calibration_tasks, maxiter=calibration_maxiter)
    return solver
