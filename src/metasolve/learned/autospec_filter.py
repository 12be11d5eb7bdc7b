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

**The pace test** (the safeguarded mode, :meth:`LearnedFilterSubspaceIteration.safeguarded`)
acts inside the iteration, as neural SCS's test of each learned step does. Before each step it
compares, per instance, the decades the learned filter gained over its last two steps with what
Chebyshev's filter is projected to gain per step from the current Ritz values: with ``T_d`` on
``[theta_p, b]``, the ``w``-th Ritz vector (the slowest one monitored) converges at least by
``|T_d(x_w)|`` per step, ``x_w = (b + theta_p - 2 theta_w) / (b - theta_p)``, as long as the
unwanted eigenvalues lie in ``[theta_p, b]`` (once the Ritz values settle, Chebyshev's filter
gains at least the projection less a tenth of a decade on the smoke-scale spectra of the tests;
before they settle the projection can be far off, hence the margin and the slack). An
instance whose learned steps gain less than ``1 - PACE_MARGIN`` of that projection, and at
least ``PACE_SLACK`` decades less, runs Chebyshev's filter for the rest of the solve from its
current block: no iteration is lost to a restart (but the learned steps may have left a block
from which Chebyshev's filter converges more slowly than from the start; docs/RESULTS.md shows
one). The calibrated rate test cannot see this: on spectra much better conditioned than the
training ones (condition numbers 2 to 10), the two filters' calibrated mean counts are equal,
and a few instances stall under the learned filter where Chebyshev's keeps converging.
``Solution.info["rejected_steps"]`` counts the steps run with Chebyshev's filter in place of
the learned one, and ``Solution.fallback`` marks the instances with any. On the quick model's
shifted set of condition numbers 2 to 10 the test brings the safeguarded mean from 1.288 times
Chebyshev's iterations to 1.062, and on its held-out spectra it costs nothing (1.002 against
1.003 unguarded). Run on Chebyshev's filter itself (an engine with zero weights), it refuses
the filter on 16% and 17% of those instances, at no cost: the switch is to the same filter
(``benchmarks/safeguard_pace_test.py``). That quick model's filter only ties Chebyshev's on its
training spectra, so the shipped safeguard does not run it at all (``PAY_MARGIN`` in
:mod:`metasolve.learned.safeguard`); the benchmark turns that rule off to measure the test.

The tasks' features are the filter features (Ritz values, residual norms, upper bound) of the
starting block's Rayleigh-Ritz step, the engine's training states after 0 iterations
(:func:`eigen_tasks`).
"""

from __future__ import annotations

import copy
import math

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

#: The pace test (module docstring) hands an instance to Chebyshev's filter where its learned
#: steps gained less than ``1 - PACE_MARGIN`` of Chebyshev's projected decades per step, and at
#: least ``PACE_SLACK`` decades per step less. The slack keeps instances that both filters
#: converge slowly (a cluster at the end of the wanted set: 0.02 decades per step either way)
#: on the learned filter, where a noisy step is no evidence.
PACE_MARGIN = 0.5
PACE_SLACK = 0.05
#: Learned steps an instance takes before the pace test reads its rate (the first steps from a
#: random block gain a decade or more under any filter).
PACE_WARMUP = 2


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
        self.guarded = False

    def config(self) -> dict:
        return {"engine": self.engine.config()}

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        return AutoSpecEngine.parameter_count(config.get("engine", {}))

    def classical(self, problem_type: type | None = None) -> FilteredSubspaceIteration:
        """Chebyshev-filtered subspace iteration of the engine's degree."""
        return FilteredSubspaceIteration(self.degree)

    def safeguarded(self) -> LearnedFilterSubspaceIteration:
        """A view of this method (the same engine, not a copy of it) that runs the pace test
        before each step (module docstring); the safeguard's budget, rate test and fallback
        act on the run as a whole besides (:mod:`metasolve.learned.safeguard`)."""
        view = copy.copy(self)  # shares the engine
        view.guarded = True
        return view

    def init(self, problem: EigenProblem, x0, params):
        state = super().init(problem, x0, params)
        if self.guarded:
            level = self._level(problem, state)
            # The levels (decades below the reference) before the last two steps, the steps
            # taken, and the steps each instance has run with Chebyshev's filter in place of
            # the learned one.
            state["pace_levels"] = torch.stack([level, level], dim=1)
            state["pace_steps"] = torch.zeros_like(level, dtype=torch.int64)
            state["rejected_steps"] = torch.zeros_like(level, dtype=torch.int64)
        return state

    def _level(self, problem: EigenProblem, state) -> torch.Tensor:
        """``(B,)``: the monitored residual's decades below the reference norm."""
        tiny = torch.finfo(state["residuals"].dtype).tiny
        return -torch.log10((self.residual(problem, state) /
                             self.reference_norm(problem)).clamp_min(tiny))

    def chebyshev_pace(self, problem: EigenProblem, state) -> torch.Tensor:
        """``(B,)``: the decades per step Chebyshev's filter is projected to gain on the
        monitored residual from ``state``'s Ritz values, ``log10 |T_d(x_w)|`` (module
        docstring)."""
        ritz, upper = state["ritz"], problem.upper.to(state["ritz"])
        top = torch.minimum(ritz[:, -1], 0.99 * upper)
        slowest = ritz[:, problem.wanted - 1]
        x = ((upper + top - 2 * slowest) / (upper - top)).clamp_min(1.0)
        # log10 cosh(d arccosh x), without overflow for large d arccosh x.
        t = self.degree * torch.acosh(x)
        return (t + torch.log1p(torch.exp(-2 * t)) - math.log(2.0)) / math.log(10.0)

    def step(self, problem: EigenProblem, state, params):
        features = filter_features(state["ritz"], state["residuals"], problem.upper)
        # Without the parameter, the learned filter everywhere.
        choice = params.get("learned_filter")
        learned = torch.ones(features.shape[0], dtype=torch.bool, device=features.device) \
            if choice is None else choice.reshape(-1) > 0.5
        extra = {}
        if self.guarded:
            level = self._level(problem, state)
            # Chebyshev's filter from the first step the pace test refused on.
            behind = state["rejected_steps"] > 0
            # Over the last two steps (the one step taken, after the first).
            gained = (level - state["pace_levels"][:, 0]) / state["pace_steps"].clamp(1, 2)
            pace = self.chebyshev_pace(problem, state)
            # Where the projection is about zero (a wanted Ritz value near the cut), this
            # switches an instance whose residual rose by more than the slack per step: on the
            # quick model's held-out spectra that rescues one that the learned filter leaves
            # unconverged (the projection is pessimistic there; requiring a projected gain
            # above the slack loses it).
            behind = behind | (learned & (state["pace_steps"] >= PACE_WARMUP) &
                               (gained < (1 - PACE_MARGIN) * pace) &
                               (pace - gained > PACE_SLACK))
            learned = learned & ~behind
            extra = {"pace_levels": torch.stack([state["pace_levels"][:, 1], level], dim=1),
                     "pace_steps": state["pace_steps"] + 1,
                     "rejected_steps": state["rejected_steps"] + behind.long()}
        chosen = self.classical_rule(features)
        if bool(learned.any()):
            mine = self.engine(features)
            chosen = {k: torch.where(learned.reshape(-1, *([1] * (v.ndim - 1))), mine[k], v)
                      for k, v in chosen.items()}
        return {**self.filter_step(problem, state, chosen), **extra}

    def report(self, problem: EigenProblem, state) -> dict:
        """In safeguarded mode: ``rejected_steps`` (per instance, the steps run with
        Chebyshev's filter in place of the learned one after the pace test refused it)."""
        if "rejected_steps" not in state:
            return {}
        return {"rejected_steps": state["rejected_steps"]}


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
