"""Never worse than the classical method: the safeguard of a learned solve (docs/architecture.md,
sec. 6).

A learned part is used per instance only where a cheap test says it helps, in the spirit of
SCS's safeguarded Anderson acceleration (an accelerated step is kept only if the fixed-point
residual falls); everything it decides is reported in the :class:`~metasolve.Solution`.

* **A learned initial guess** (``x0``, and the method's other ``guess_parameters``) of an
  instance outside the training envelope (below) is used only if it does not start worse than
  the classical guess: one evaluation of the monitored norm for each (``fixed_iterations=0``).
  Inside the envelope the guess is trusted, since its training validated it there: a guess
  trained for fewer iterations often starts with a *larger* norm than the zero guess (its error
  sits in the fast modes the method removes at once) and still needs fewer iterations; tested
  on every instance, the quick Poisson/Jacobi models lost 32% to 147% of their iterations
  (``benchmarks/safeguard_gbms.py ... --check-guess always``). ``check_guess="always"`` tests every
  instance, ``"never"`` none.
* **Other learned parameters** (relaxation factors, shifts, polynomial coefficients): an
  instance the learned run leaves unconverged (diverged, broken down, or out of iterations)
  restarts with the classical method from its last iterate if that is finite and no worse than
  its start, otherwise from the classical start, with the same tolerance and what the learned
  attempt left of the caller's iteration cap (``maxiter`` bounds the whole solve; an attempt
  that used all of it is not rerun). Its iterations and history then include both runs
  (``Solution.fallback`` marks it). The learned
  attempt runs under a budget, so that a failing one costs a bounded number of iterations rather
  than the whole cap: a multiple of a 95th percentile of iterations on the training tasks at the
  asked tolerance (``LearnedSolver.calibration``, measured by :func:`calibrate` at the end of
  training, stored in the artifact): ``BUDGET_FACTOR`` times the classical method's in a batch
  with instances outside the training features, ``BUDGET_FACTOR_INSIDE`` times the larger of the
  classical and the learned method's inside.
  A run that converges, only more slowly than the classical method would, fits any budget: the
  budget's other half, the **rate test** (:class:`RateTest`, ``run``'s ``give_up``), reads the
  run's progress after each iteration and stops an instance where the classical method,
  started from its iterate, is projected to reach the tolerance clearly sooner than the learned
  run at its mean rate so far; the projection of the classical method comes from the same
  calibration (its mean iterations to each tolerance), and it is only trusted where the
  calibration says that the classical method covers the rest of the way faster than the
  learned one on the training tasks too (a Newton method's quadratic tail against a learned
  linear rate), since elsewhere a slow instance is a hard one for both. The stopped instances
  fall back as above (``Solution.fallback``; ``info["rate_handover"]``). On the H-equation with
  ``c`` in {0.85, 0.95} it brings the R2N2 from 1.174 times Newton-Krylov's mean iterations
  to 0.917 (``reproduce r2n2-chandrasekhar --quick --shift ood``); on the model's own test
  set, and on every set of the Robertson models, it hands nothing over.
  Where the learned method's mean count on its training tasks is more than ``SLOWER_MARGIN``
  above the classical method's at that tolerance, or not ``PAY_MARGIN`` below it at any
  calibrated tolerance down to that one, the learned parameters do not pay even where they
  were trained: the batch is solved by the classical method, with a warning
  (``info["learned_skipped"]``, every instance marked in ``Solution.fallback``).
* **Learned steps** (a method with weights of its own that has a safeguarded mode, neural SCS):
  the solve runs ``method.safeguarded()``, which tests each step the network proposes inside the
  iteration and takes the plain SCS step where the fixed-point residual would rise, and tests
  the learned start against the cold start (:mod:`metasolve.learned.neural_scs`, as SCS's
  safeguarded Anderson acceleration). ``Solution.info["rejected_steps"]`` counts the refused
  steps per instance, ``info["guess_rejected"]`` includes the refused starts, and
  ``Solution.fallback`` marks the instances with a refused step (some of their iterations were
  the classical method's) besides those that restarted. The classical method of the fallback
  below is then the plain method (``LearnedSolver.classical_method``: SCS).
  The learned filter of subspace iteration (:mod:`metasolve.learned.autospec_filter`) tests its
  pace the same way: an instance whose learned steps fall well behind what Chebyshev's filter
  is projected to gain from its Ritz values continues with Chebyshev's filter
  (``info["rejected_steps"]``, ``Solution.fallback``).
* **A convergence certificate** (an R2N2 on a linear system, :mod:`metasolve.learned.r2n2`,
  "Safeguarded mode"): before the learned run, the safeguarded view of the method computes per
  instance the spectral radius of the residual iteration its weights define; an instance where
  it is at least 1 (no convergence from a generic start) does not run the learned method at all
  (it stops at once with ``Status.BREAKDOWN``) and goes to the classical method from its start
  (GMRES(n), ``LearnedSolver.classical_method_for``) as any failed instance does below.
  ``Solution.info["certificate_failed"]`` marks those instances, ``info["certificate_radius"]``
  gives the radius (NaN where none was computed: systems of more than
  ``r2n2.CERTIFICATE_MAX_SIZE`` unknowns, nonlinear and initial-value problems).
* **Out of distribution**: the solver stores the envelope of its training features (per-feature
  minimum and maximum); an instance whose features leave it by more than ``ENVELOPE_MARGIN`` of
  the feature's training range is flagged (``Solution.out_of_distribution``) and a warning says
  how many were.

* **A fixed budget** (``fixed_iterations``) has no tolerance to fail, and no cheap test tells in
  advance whether the learned part helps on an instance: the classical method runs on the same
  budget too, and each instance keeps the converged result where only one converged, else the one
  with the smaller final monitored norm (``check_budget="always"``, the default; ``"outside"``
  compares only the instances outside the training envelope, ``"never"`` none). Its non-finite or
  diverged instances, and those whose certificate failed, take the classical result in any case,
  unless that one is non-finite where theirs is not (van der Pol at steps where RK-3 blows up: a
  diverged but finite trajectory is kept rather than traded for NaN).
  The guarantee costs the classical run's time (``info["fallback_time"]``);
  ``info["budget_compared"]`` marks the instances that were compared, and ``Solution.fallback``
  those that kept the classical result. Measured on the experiments' shifted sets, the learned
  part loses at an equal budget on sets its features do not flag (AutoSpec preconditioners on
  spectra with condition numbers outside the training range: 8.6 and 21.7 times the classical
  residual), so comparing only outside the envelope would not keep the promise.

The classical method is ``LearnedSolver.classical_method_for(problem)``: the method itself with
its classical parameters, neural SCS's plain SCS, or an R2N2's counterpart for the problem type
(GMRES, Newton-Krylov or Runge-Kutta, ``R2N2.classical``), stored in the artifact.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from ..problems import InitialValueProblem
from ..solution import ConvergenceError, Solution, Status
from ..solvers.base import default_maxiter, run

#: How far, as a fraction of a feature's training range, a feature may leave the training
#: envelope before its instance is flagged as out of distribution. The extremes of a finite
#: training sample lie inside those of its distribution, more so with many features: at 5%, a
#: quarter of in-distribution Poisson test tasks (16 features, 64 training tasks) were flagged.
ENVELOPE_MARGIN = 0.25


def feature_envelope(features: torch.Tensor) -> torch.Tensor:
    """``(2, F)``: the per-feature minimum and maximum of training features ``(B, F)``."""
    flat = features.detach().reshape(features.shape[0], -1).double()
    return torch.stack([flat.amin(dim=0), flat.amax(dim=0)])


def outside_envelope(features: torch.Tensor, envelope: torch.Tensor,
                     margin: float = ENVELOPE_MARGIN) -> torch.Tensor:
    """``(B,)`` bool: instances with a feature outside ``envelope`` widened by ``margin`` of
    each feature's range (a constant feature is widened by ``margin`` of its magnitude)."""
    flat = features.detach().reshape(features.shape[0], -1).double()
    low, high = envelope[0].to(flat), envelope[1].to(flat)
    if flat.shape[1] != low.shape[0]:
        raise ValueError(f"tasks have {flat.shape[1]} features, the solver was trained on "
                         f"{low.shape[0]}")
    span = (high - low).clamp_min(0.0)
    slack = margin * torch.where(span > 0, span, high.abs().clamp_min(1.0))
    return ((flat < low - slack) | (flat > high + slack)).any(dim=1)


def _take(mask: torch.Tensor, chosen: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per instance (leading dimension): ``chosen`` where ``mask``, else ``other``."""
    return torch.where(mask.reshape(-1, *([1] * (chosen.ndim - 1))), chosen, other)


def _start_norms(solver, problem, params: dict, options: dict) -> torch.Tensor:
    """The monitored norm at the start (no iteration), for the guess test."""
    start = {k: v for k, v in options.items() if k not in ("maxiter", "fixed_iterations",
                                                            "callback", "throw")}
    with torch.no_grad():
        return run(solver.method, problem, params=params, fixed_iterations=0,
                   **start).residual_history[0]


GUESS_CHECKS = ("outside", "always", "never")
#: The same choices for which instances of a fixed-budget solve are compared with the classical
#: method on the same budget.
BUDGET_CHECKS = GUESS_CHECKS

#: The learned attempt of a safeguarded solve may take this many times the classical method's
#: iteration count on the training tasks (the 95th percentile, at the asked tolerance), plus
#: ``BUDGET_SLACK``, before its unconverged instances fall back.
BUDGET_FACTOR = 2.0
BUDGET_SLACK = 10
#: In distribution the factor multiplies the larger of the two methods' counts and is much
#: larger: a learned method's test tasks have a longer tail than its 64 calibration tasks (the
#: quick Robertson L~_eps model: 95th percentile 25 on them, 99th 238 on its test set), and a cut
#: there costs the fallback's whole run. Measured on that model (``reproduce robertson-newton-sor
#: --quick --shift ood``), factors 2, 5, 10, 20 cost 19%, 11%, 4.7% and 0.95% of the unguarded
#: mean in distribution, while on time steps to t = 1e5 (which the features do not flag) the
#: safeguarded mean stays at 0.98 to 0.97 of the classical one.
BUDGET_FACTOR_INSIDE = 20.0
#: The learned method is skipped for a tolerance at which its mean iteration count on the
#: training tasks is more than this fraction above the classical method's.
SLOWER_MARGIN = 0.05
#: ... and where its mean count is not this fraction below the classical method's at any
#: calibrated tolerance down to the one asked: a learned part that only ties the classical
#: method on its own training tasks gains nothing there and can only lose outside them. (The
#: quick autospec-eigen filter takes 0.996 to 1.151 times Chebyshev's mean counts at the
#: calibrated tolerances down to 1e-8, and loses on spectra better conditioned than its
#: training ones; the quick H-equation R2N2, which ties Newton-Krylov at 1e-8 on its 64
#: calibration tasks but is 8% faster on the test set, takes 0.58 to 1.03 of its counts at
#: the looser tolerances, below 0.98 at all but one: so the test is the minimum over the
#: tolerances, not the count at the asked one, which is noisy at a few iterations;
#: ``benchmarks/calibration_ratios.py MODEL`` prints them.)
PAY_MARGIN = 0.02
#: The rate test (:class:`RateTest`) hands an instance over to the classical method only where
#: the learned run's projected remaining iterations exceed the classical method's by more than
#: this fraction of them and by more than ``RATE_SLACK`` iterations.
RATE_MARGIN = 0.25
RATE_SLACK = 1.0
#: Relative tolerances at which :func:`calibrate` records the classical iteration counts.
CALIBRATION_RTOLS = tuple(10.0 ** -k for k in range(1, 11))
#: At most this many training tasks and this many iterations go into the calibration.
CALIBRATION_TASKS = 64
CALIBRATION_MAXITER = 2000


def _counts(solution: Solution, cap: int) -> tuple[list, list]:
    """Per tolerance of ``CALIBRATION_RTOLS``: the 95th percentile of the iterations to reach it
    (``None`` beyond the cap, and then for every stricter tolerance too) and the mean, an
    instance that never got there counting ``cap + 1``, so that neither can fall when a
    stricter tolerance drops the slow instances."""
    p95, means, previous = [], [], 0
    for rtol in CALIBRATION_RTOLS:
        reached = solution.iterations_to(rtol)
        spent = torch.where(reached >= 0, reached, cap + 1).double()
        count = int(torch.quantile(spent, 0.95).ceil())
        previous = None if count > cap or previous is None else max(previous, count)
        p95.append(previous)
        means.append(max(float(spent.mean()), means[-1] if means else 0.0))
    return p95, means


def calibrate(solver, tasks, maxiter: int = CALIBRATION_MAXITER) -> dict | None:
    """Iteration counts of the classical method and of the learned one (unguarded) on (up to
    ``CALIBRATION_TASKS`` of) the training ``tasks``, for each of ``CALIBRATION_RTOLS``: the 95th
    percentile (``iterations``, ``learned_iterations``; ``None`` where fewer than 95% of the tasks
    got there within the cap) and the mean (``mean_iterations``, ``learned_mean_iterations``).
    ``None`` for a solver whose learned part is a starting point only, which needs no budget,
    and for initial-value problems, where an integrator takes the steps the problem asks for,
    not steps to a tolerance. ``maxiter``: the cap of both runs (a method with costly
    iterations is calibrated up to the cap it is used with)."""
    learned = set(solver.metasolver.outputs) - set(solver.guess_parameters)
    if not learned or solver.monitor == "error" and getattr(tasks.problem, "solution",
                                                           None) is None:
        return None
    if isinstance(tasks.problem, InitialValueProblem):
        return None
    # Evenly spread over the set: a family may order its tasks (Robertson: by rate set, then
    # time step, the early steps being the easy ones), so the first few are not a sample.
    count = min(CALIBRATION_TASKS, len(tasks))
    sample = tasks.index(torch.linspace(0, len(tasks) - 1, count).round().long())
    cap = maxiter
    options = {"rtol": min(CALIBRATION_RTOLS), "maxiter": cap}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            classical = solver.solve_baseline(sample, **options)
        except (TypeError, ValueError):
            # No classical method to count: a user's method that needs parameters the
            # meta-solver has no classical values for.
            return None
        learned_run = solver.solve(sample, safeguard=False, **options)
    iterations, means = _counts(classical, cap)
    learned_iterations, learned_means = _counts(learned_run, cap)
    return {"monitor": solver.monitor, "rtols": list(CALIBRATION_RTOLS), "iterations": iterations,
            "mean_iterations": means, "learned_iterations": learned_iterations,
            "learned_mean_iterations": learned_means, "tasks": len(sample), "maxiter": cap}


def _calibrated(calibration: dict | None, options: dict) -> int | None:
    """Index of the nearest calibrated tolerance at least as strict as the one ``options`` asks
    for; ``None`` where the calibration does not apply (an absolute tolerance, a fixed budget,
    another monitor, a tolerance stricter than every calibrated one)."""
    if calibration is None or options.get("atol", 0.0) or options.get("fixed_iterations"):
        return None
    if options.get("monitor") != calibration.get("monitor"):
        return None
    rtol = options.get("rtol", 1e-5)
    for i, r in enumerate(calibration["rtols"]):
        if r <= rtol * (1 + 1e-12):
            return i
    return None


def learned_budget(calibration: dict | None, options: dict,
                   outside: bool = True) -> int | None:
    """The iteration budget of a learned attempt under ``options`` (``None``: no budget, the
    attempt may use the whole cap), a calibrated 95th percentile times a factor plus
    ``BUDGET_SLACK``: ``BUDGET_FACTOR`` times the classical method's for a batch with instances
    ``outside`` the training features; in distribution, ``BUDGET_FACTOR_INSIDE`` times the larger
    of the classical method's and the learned method's own (the classical count alone where the
    learned method did not reach the tolerance on 95% of its training tasks). Only for a relative
    tolerance on the calibrated monitor (see :func:`_calibrated`)."""
    i = _calibrated(calibration, options)
    if i is None or calibration["iterations"][i] is None:
        return None
    count, factor = calibration["iterations"][i], BUDGET_FACTOR
    if not outside:
        if "learned_iterations" not in calibration:  # calibrated before the learned counts
            return None
        learned = calibration["learned_iterations"][i]
        count = count if learned is None else max(count, learned)
        factor = BUDGET_FACTOR_INSIDE
    return int(math.ceil(factor * count)) + BUDGET_SLACK


def learned_does_not_pay(calibration: dict | None, options: dict) -> str | None:
    """Why the learned parameters do not pay at the tolerance ``options`` asks for, judged on
    the calibration's mean iteration counts on the training tasks; ``None`` where they may.

    They do not pay where, at the nearest calibrated tolerance at least as strict as the one
    asked, the learned method's mean exceeds the classical method's by more than
    ``SLOWER_MARGIN``; nor where at no calibrated tolerance down to that one it is
    ``PAY_MARGIN`` below it. The safeguard then runs the classical method."""
    i = _calibrated(calibration, options)
    if i is None or "learned_mean_iterations" not in calibration:
        return None
    learned, classical = calibration["learned_mean_iterations"], calibration["mean_iterations"]
    rtol = options.get("rtol", 1e-5)
    if learned[i] > (1 + SLOWER_MARGIN) * classical[i]:
        return (f"at rtol={rtol:g}, the learned parameters took {learned[i]:.1f} iterations on "
                f"average on the training tasks against {classical[i]:.1f} for the classical "
                "method")
    ratios = [mine / theirs for mine, theirs in zip(learned[:i + 1], classical[:i + 1],
                                                    strict=True) if theirs > 0]
    if ratios and min(ratios) > 1 - PAY_MARGIN:
        return (f"on the training tasks the learned parameters took at least "
                f"{min(ratios):.3f} times the classical method's mean iterations at every "
                f"calibrated tolerance down to rtol={rtol:g} ({learned[i]:.1f} against "
                f"{classical[i]:.1f} there): they do not pay")
    return None


class RateTest:
    """The rate test of a learned attempt, the part of its budget that reads its progress
    (``run(..., give_up=test)``): after each iteration, an instance is stopped, and the
    classical method finishes it from its iterate, where the classical method is projected to
    reach the tolerance from there clearly sooner than the learned run at its observed rate.

    Both projections start from the instance's level ``r_k / reference`` (decades below the
    reference) and end at the level of its stopping threshold:

    * the learned run continues at its mean rate so far, ``log10(r_0 / r_k) / k`` decades per
      iteration;
    * the classical method takes what its calibrated mean iterations to each relative tolerance
      on the training tasks (``calibration["mean_iterations"]``, linear in the decades between
      the calibrated tolerances) say it takes between the two levels. A method that converges
      faster as it gets closer (Newton-Krylov, quadratically) covers the last decades in few
      iterations, where a learned method with a linear rate needs as many per decade as before.

    An instance is handed over only where all of these hold:

    * its level and its target lie within the calibrated tolerances (how the classical method
      fares from further out, a Newton method far from the solution, the calibration does not
      say);
    * on the training tasks, the classical method covers the rest of the way faster than the
      learned method does (``calibration["learned_mean_iterations"]``): where the learned
      method's calibrated tail is the faster one, a slow instance is a hard instance, on which
      the classical method's calibrated rate would be as wrong as the learned one's (the
      Robertson models, whose slow instances the classical method solves slower still);
    * the learned projection exceeds the classical one by more than ``RATE_MARGIN`` of it and
      by more than ``RATE_SLACK`` iterations.
    """

    def __init__(self, rtols, means, learned_means, margin: float | None = None,
                 slack: float | None = None):
        # Levels as decades below the reference (1, 2, ... for rtol 1e-1, 1e-2, ...), ascending.
        self.decades = torch.tensor([-math.log10(r) for r in rtols], dtype=torch.float64)
        self.means = torch.tensor(means, dtype=torch.float64)
        self.learned_means = torch.tensor(learned_means, dtype=torch.float64)
        self.margin = RATE_MARGIN if margin is None else margin
        self.slack = RATE_SLACK if slack is None else slack

    def count(self, decades: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        """Calibrated mean iterations ``means`` to ``decades`` below the reference, linear
        between the calibrated tolerances (clamped to their range)."""
        xs, ys = self.decades.to(decades.device), means.to(decades.device)
        z = decades.clamp(float(xs[0]), float(xs[-1]))
        j = torch.searchsorted(xs, z).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
        return y0 + (y1 - y0) * (z - x0) / (x1 - x0)

    def __call__(self, k: int, norms: torch.Tensor, start: torch.Tensor,
                 threshold: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: the instances to hand over after iteration ``k`` (the signature of
        ``run``'s ``give_up``)."""
        tiny = torch.finfo(torch.float64).tiny
        norms, start = norms.double().clamp_min(tiny), start.double().clamp_min(tiny)
        threshold = threshold.double().clamp_min(tiny)
        reference = reference.double().clamp_min(tiny)
        level = -torch.log10(norms / reference)
        target = -torch.log10(threshold / reference)
        xs = self.decades.to(level.device)
        within = (level >= xs[0]) & (target <= xs[-1] + 1e-9) & (target > level)
        classical = self.count(target, self.means) - self.count(level, self.means)
        learned_usual = self.count(target, self.learned_means) - \
            self.count(level, self.learned_means)
        rate = torch.log10(start / norms) / k
        learned = torch.where(rate > 0, (target - level) / rate.clamp_min(tiny),
                              torch.full_like(rate, math.inf))
        return within & (learned_usual > classical) & \
            (learned > (1 + self.margin) * classical) & (learned - classical > self.slack)


def rate_test(calibration: dict | None, options: dict) -> RateTest | None:
    """The :class:`RateTest` of a learned attempt under ``options``, or ``None`` where it does
    not apply: a fixed budget, no calibration, another monitor than the calibrated one, or a
    calibration without the mean counts of both methods (saved before they were recorded) or
    with fewer than two tolerances to interpolate between."""
    if calibration is None or options.get("fixed_iterations") is not None:
        return None
    if options.get("monitor") != calibration.get("monitor"):
        return None
    means, learned = calibration.get("mean_iterations"), calibration.get("learned_mean_iterations")
    if means is None or learned is None or len(calibration["rtols"]) < 2:
        return None
    return RateTest(calibration["rtols"], means, learned)


def safeguarded_solve(solver, tasks, options: dict, check_guess: str = "outside",
                      check_budget: str = "always",
                      batch_outside: bool | None = None) -> Solution:
    """:meth:`LearnedSolver.solve` with the safeguard on; see the module docstring.
    ``check_guess``: which instances' learned guesses are tested (:data:`GUESS_CHECKS`);
    ``check_budget``: which instances of a fixed-budget solve are compared with the classical
    method on the same budget (:data:`BUDGET_CHECKS`); ``batch_outside``: whether any task of
    the batch these ``tasks`` are a chunk of lies outside the training features (the budget
    is the whole batch's; ``None``: these tasks are the batch)."""
    options = dict(options)
    options.setdefault("monitor", solver.monitor)
    # throw=True is the caller's question about the final result, not about the learned attempt.
    throw = bool(options.pop("throw", False))
    problem, features = tasks.problem, tasks.features
    batch = problem.batch_size
    if batch == 0:  # nothing to guard
        solution = solver._run(tasks, solver.params, dict(options, throw=throw))
        solution.fallback = torch.zeros(0, dtype=torch.bool)
        solution.out_of_distribution = torch.zeros(0, dtype=torch.bool)
        return solution
    start = time.perf_counter()
    learned = dict(solver.params(features, problem))
    classical = solver.classical_params(features)
    inference = time.perf_counter() - start

    out = torch.zeros(batch, dtype=torch.bool, device=features.device)
    if solver.feature_envelope is not None:
        out = outside_envelope(features, solver.feature_envelope)
        if bool(out.any()):
            warnings.warn(f"{int(out.sum())} of {batch} instances lie outside the envelope of "
                          f"the features {solver.method.name} was trained on (see "
                          "Solution.out_of_distribution); the safeguard falls back to the "
                          "classical method where the learned part does not help",
                          stacklevel=3)

    # The guess test: keep a learned start only where it is no worse than the classical one.
    guess_names = [k for k in learned if k in solver.guess_parameters]
    rejected = torch.zeros(batch, dtype=torch.bool, device=features.device)
    tested = {"outside": out, "always": torch.ones_like(out),
              "never": torch.zeros_like(out)}[check_guess]
    if guess_names and bool(tested.any()):
        mine = {k: learned[k] for k in guess_names}
        theirs = {k: classical[k] for k in guess_names if k in classical}
        if "x0" in guess_names and "x0" not in theirs:
            theirs["x0"] = solver.method.zero_guess(problem)
        worse = _start_norms(solver, problem, mine, options) > \
            _start_norms(solver, problem, theirs, options)
        rejected = tested.to(worse.device) & worse
        for k in guess_names:
            fallback_value = theirs.get(k)
            if fallback_value is None:  # no classical value: the method's neutral default
                fallback_value = torch.zeros_like(learned[k])
            learned[k] = _take(rejected.to(learned[k].device), fallback_value.to(learned[k]),
                               learned[k])

    # A method with a safeguarded mode tests its learned steps itself (neural SCS) or its
    # certificate before the first step (R2N2 on a linear system).
    guarded = solver.guarded_method
    attempt = dict(options)
    learned_other = [k for k in learned if k not in solver.guess_parameters]
    reason = learned_does_not_pay(solver.calibration, options) if learned_other else None
    if reason is not None:
        return _classical_instead(solver, tasks, options, out, throw, reason)
    # Outside the training features the budget is the classical method's count; inside, where
    # training validated the learned parameters, the learned method's own count on its training
    # tasks may set it (the classical count alone cut the learned factors' slow tail and cost
    # the quick Robertson models 5% to 19% of their iterations in distribution).
    outside = bool(out.any()) if batch_outside is None else batch_outside
    budget = learned_budget(solver.calibration, options, outside=outside) \
        if learned_other else None
    if budget is not None:
        cap = _cap(problem, options)
        attempt["maxiter"] = (cap.clamp(max=budget) if isinstance(cap, torch.Tensor)
                              else min(cap, budget))
    # The rate test, the budget's other half: an instance whose run falls behind what the
    # classical method is projected to do from its iterate stops there and falls back below.
    # A caller's own give_up applies too.
    pace = rate_test(solver.calibration, options) if learned_other else None
    if pace is not None:
        given = attempt.get("give_up")
        attempt["give_up"] = pace if given is None else (
            lambda *args: pace(*args) | given(*args))
    solution = solver._run(tasks, None, attempt, params=learned, method=guarded)
    solution.wall_time += inference - solution.info["inference_time"]
    solution.info["inference_time"] = inference

    # Every mask on the device of the solution's statuses from here on.
    device = solution.status.device
    out, rejected = out.to(device), rejected.to(device)
    # The parameter test: instances the learned parameters left unconverged start again with
    # the classical method, from their last iterate where that is finite and no worse.
    fixed = options.get("fixed_iterations") is not None
    if fixed:
        failed = ~torch.isfinite(solution.residual) | (solution.status == Status.DIVERGED)
    else:
        failed = ~solution.converged
    if not learned_other and not fixed:
        failed = torch.zeros_like(failed)  # only a guess was learned: the method is classical
    uncertified = solution.info.get("certificate_failed")
    if uncertified is not None:  # never ran the learned method: the classical one must
        failed = failed | uncertified.to(device)
    compared = torch.zeros_like(failed)
    if fixed:
        compared = {"outside": out, "always": torch.ones_like(out),
                    "never": torch.zeros_like(out)}[check_budget] & ~failed
    if bool((failed | compared).any()):
        try:
            solution, failed = _fall_back(solver, tasks, solution, failed, classical, options,
                                          compared)
        except (TypeError, ValueError) as exc:
            # Nothing classical to run (a user's method that needs parameters the meta-solver
            # has no classical values for): say so, keep the result.
            warnings.warn(f"{int(failed.sum())} of {batch} instances did not converge and "
                          f"{solver.method.name} has no classical method to fall back to "
                          f"({exc})", UserWarning, stacklevel=3)
            solution.info["unrescued"] = failed
            failed = torch.zeros_like(failed)
    if "rejected_steps" in solution.info:  # plain steps taken in place of learned ones
        failed = failed | (solution.info["rejected_steps"] > 0)
    if "start_rejected" in solution.info:  # and the cold start in place of the learned one
        rejected = rejected | solution.info["start_rejected"]
    solution.fallback = failed
    solution.out_of_distribution = out
    solution.info["guess_rejected"] = rejected
    solution.info["learned_budget"] = budget
    solution.info["budget_compared"] = compared
    # The instances the rate test (or the caller's give_up) stopped and the classical method
    # finished.
    handed = solution.info.get("given_up") if pace is not None else None
    solution.info["rate_handover"] = failed & (torch.zeros_like(failed) if handed is None
                                               else handed.to(device))
    if throw and not bool(solution.converged.all()):
        raise ConvergenceError(f"{int((~solution.converged).sum())} of {batch} instances did "
                               f"not converge: {solution.summary()}", solution)
    return solution


def _cap(problem, options: dict) -> int | torch.Tensor:
    """The caller's iteration cap of a solve to a tolerance (the driver's default if none; a
    ``(B,)`` tensor where the caller gave one per instance)."""
    cap = options.get("maxiter")
    return default_maxiter(problem) if cap is None else cap


def _classical_instead(solver, tasks, options: dict, out: torch.Tensor, throw: bool,
                       reason: str) -> Solution:
    """The whole batch with the classical method, when :func:`learned_does_not_pay` gives the
    ``reason`` the learned parameters do not pay at the asked tolerance; every instance is
    marked as a fallback."""
    warnings.warn(f"{solver.method.name}: {reason}; the safeguard solves with the classical "
                  "method (Solution.fallback)", UserWarning, stacklevel=4)
    solution = solver.solve_baseline(tasks, throw=throw, **options)
    solution.fallback = torch.ones_like(solution.converged)
    solution.out_of_distribution = out.to(solution.status.device)
    solution.info["guess_rejected"] = torch.zeros_like(solution.converged)
    solution.info["learned_budget"] = None
    solution.info["budget_compared"] = torch.zeros_like(solution.converged)
    solution.info["rate_handover"] = torch.zeros_like(solution.converged)
    solution.info["learned_skipped"] = True
    return solution


def _fall_back(solver, tasks, learned: Solution, failed: torch.Tensor, classical: dict,
               options: dict, compared: torch.Tensor) -> tuple[Solution, torch.Tensor]:
    """Rerun the ``failed`` instances with the classical method and merge the two runs; at a
    fixed budget, also the ``compared`` ones, which keep the classical result only where its
    final monitored norm is smaller. Returns the merged solution and the instances that took the
    classical result."""
    fixed = options.get("fixed_iterations") is not None
    rerun = failed | compared
    if not fixed:
        # The caller's cap bounds the whole solve: the classical run gets what the learned
        # attempt left of it, and an instance that used it all stays as the attempt left it.
        cap = _cap(tasks.problem, options)
        left = (cap.to(learned.iterations.device) if isinstance(cap, torch.Tensor) else cap) \
            - learned.iterations
        rerun = rerun & (left > 0)
    idx = torch.nonzero(rerun).flatten()
    if not len(idx):
        return learned, torch.zeros_like(failed)
    sub = tasks.index(idx)
    params = {k: v[idx] for k, v in classical.items()}
    options = dict(options)
    given = options.pop("x0", None)  # the caller's start, for the whole batch
    if given is not None and "x0" not in params:
        params["x0"] = given[idx]
    if not fixed:
        options["maxiter"] = left[idx]
    classical_method = solver.classical_method_for(sub.problem)
    last = learned.x[idx].detach()
    finite = torch.isfinite(last).reshape(len(idx), -1).all(dim=1)
    usable = finite & (learned.residual[idx] <= learned.residual_history[0][idx])
    if not fixed and bool(usable.any()):
        start = params.get("x0", classical_method.zero_guess(sub.problem))
        params["x0"] = _take(usable, torch.nan_to_num(last), start)
    with torch.no_grad():
        again = run(classical_method, sub.problem, params=params, **options)
    # A compared instance keeps the learned result unless the classical one converged where it
    # did not, or ends lower with the same status (a non-finite classical norm compares false).
    # Convergence comes first: a conic method's stopping test reads its primal and dual
    # residuals and gap, not the fixed-point residual it monitors.
    mine, theirs = learned.converged[idx], again.converged.to(learned.converged.device)
    lower = again.residual.to(learned.residual) < learned.residual[idx]
    # A failed instance takes the classical result, unless that one ends non-finite where the
    # learned one does not (van der Pol at steps beyond the training range, where RK-3 blows
    # up: a diverged but finite learned trajectory is kept rather than traded for NaN).
    blown = torch.isfinite(learned.residual[idx]) & ~torch.isfinite(
        again.residual.to(learned.residual))
    take = (failed[idx] & ~blown) | (theirs & ~mine) | ((theirs == mine) & lower)
    pos = torch.nonzero(take).flatten()  # the rerun instances that take the classical result
    idx = idx[pos]
    replaced = torch.zeros_like(failed)
    replaced[idx] = True
    history = learned.residual_history.detach()
    iterations = learned.iterations.clone()
    if fixed:
        # An equal budget: the classical run replaces the learned one. Either run may have
        # ended early (every instance stopped); the shorter history repeats its last row.
        again_history = again.residual_history[:, pos]
        length = max(history.shape[0], again_history.shape[0])
        history = torch.cat([history, history[-1:].repeat(length - history.shape[0], 1)])
        again_history = torch.cat([again_history, again_history[-1:].repeat(
            length - again_history.shape[0], 1)])
        history[:, idx] = again_history
        iterations[idx] = again.iterations[pos]
    elif learned.info.get("history", True) is False:
        # No history kept (run(..., history=False)): the first row and the last.
        history = history.clone()
        history[-1, idx] = again.residual_history[-1, pos].to(history)
        iterations[idx] = iterations[idx] + again.iterations[pos]
    else:
        # Each instance that fell back continues its own history where its learned run
        # stopped, with the classical run's rows; every row after an instance's last one
        # repeats its final value, as the driver freezes a stopped instance.
        stops = iterations[idx]
        total = stops + again.iterations[pos]
        length = max(history.shape[0], int(total.max()) + 1)
        merged = history[-1:].repeat(length, 1)
        merged[:history.shape[0]] = history
        for j, i in zip(pos.tolist(), idx.tolist(), strict=True):
            start, steps = int(iterations[i]), int(again.iterations[j])
            merged[start + 1:start + steps + 1, i] = again.residual_history[1:steps + 1, j]
            merged[start + steps + 1:, i] = again.residual_history[steps, j]
        history = merged
        iterations[idx] = total
    x = learned.x.detach().clone()
    x[idx] = again.x[pos]
    status = learned.status.clone()
    status[idx] = again.status[pos]
    threshold = learned.threshold.clone()
    threshold[idx] = again.threshold[pos]
    info = dict(learned.info)
    info["fallback_time"] = again.wall_time
    return Solution(x=x, status=status, iterations=iterations, residual_history=history,
                    reference_norm=learned.reference_norm, threshold=threshold,
                    wall_time=learned.wall_time + again.wall_time, info=info), replaced
