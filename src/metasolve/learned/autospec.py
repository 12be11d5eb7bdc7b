"""The AutoSpec engine: a network that maps a spectral probe of an operator to the coefficients of
a polynomial method in that operator (AutoSpec summary, "AutoSpec: algorithm discovery";
the issue's two paradigms).

**Inputs.** The features are a probe with ``s`` Ritz values (an ``s``-step Lanczos probe,
:func:`metasolve.tasks.probe_features`, or a subspace-iteration probe with a block of ``s``):
Ritz values ``theta_1 <= ... <= theta_s`` and residual norms ``rho_i`` of the Ritz pairs. The
network sees them scale free, :func:`probe_inputs`: ``log10(theta_i / u)``, ``log10(rho_i / u)``
and ``log10(theta_s / theta_1)`` (the estimated condition number), divided by 3, with
``u = theta_s + rho_s`` an estimate of ``lambda_max`` (not a guaranteed upper bound:
:meth:`metasolve.probes.Probe.interval`). An operator and any positive
multiple of it get the same inputs, and the coefficients below scale with ``1 / u`` exactly as a
polynomial method's must, so an engine trained on small synthetic spectra applies unchanged to a
large sparse matrix.

**Outputs.** A polynomial method of degree ``K`` (``K`` products ``A @ v``), built around
Chebyshev iteration on an interval ``[a, b]`` that the network places:

* ``a = a_0 exp(r tanh(z_a))`` and ``b = u``, where ``[a_0, u]`` is
  :meth:`metasolve.probes.Probe.interval`. The upper end is not learned: an interval that cuts
  off the top of the spectrum makes a Chebyshev-like method of degree ``K`` amplify it by up to
  ``T_K`` outside ``[-1, 1]``, and an engine that had learned to trim ``u`` on small training
  operators (whose top Ritz value the probe resolves to round-off) did exactly that on the
  102,400-unknown Poisson matrix (whose top it resolves to a few 1e-3 only), where it ended 1.6
  times worse than Chebyshev on the probe's interval;
* paradigm ``"recurrence"``: the three-term recurrence of
  :class:`~metasolve.solvers.recurrence.PolynomialRecurrence` with every coefficient (``gamma``,
  ``mu_k``, ``nu_k``) Chebyshev's on ``[a, b]`` times a learned factor ``exp(c tanh(w(k)))``;
* paradigm ``"basis"``: the solve polynomial ``q`` of
  :class:`~metasolve.solvers.chebyshev_expansion.ChebyshevExpansion` in the Chebyshev basis of
  ``[a, b]``, fitted (least squares, degree ``K - 1``) to ``q(t_j) = (1 - rho_j) / t_j`` at the
  ``K + 1`` extrema ``t_j`` of ``T_K``, where ``rho_j = +-1 / T_K(sigma)`` is the Chebyshev
  residual polynomial's value times ``exp(c tanh(w(j)))`` (without correction the fit is exact
  and the method is Chebyshev iteration);
* paradigm ``"filter"`` (task (b)): a filter for
  :class:`~metasolve.solvers.subspace.FilteredSubspaceIteration`, read each iteration from the
  block's Ritz values ``theta_1..theta_p``, their residual norms and the upper bound ``b``
  (:func:`~metasolve.solvers.subspace.filter_features`); inputs ``log10(theta_i / theta_p)``,
  ``log10(theta_p / b)``, ``log10(rho_i / theta_p)`` (divided by 3). Output: ``T_d`` on
  ``[a, b]`` with the cut ``a = theta_p exp(r tanh(z_a))`` (untrained: ``theta_p``, Chebyshev-
  filtered subspace iteration) and the problem's upper bound ``b``, plus smooth lower-degree
  terms when ``modes > 0``;
* paradigm ``"invsqrt"``: the same for a matrix function
  (:class:`~metasolve.solvers.chebyshev_expansion.ChebyshevSeries`): the values of
  ``t^{-1/2}`` at the nodes times the learned factors, so the untrained engine is the Chebyshev
  interpolant of ``t^{-1/2}`` on the probe's interval.

The correction profiles ``w`` are smooth: ``w(k) = sum_{m < M} w_m T_m(x_k)`` over the step (or
node) index mapped to ``x_k in [-1, 1]``, with ``M`` (``modes``) weights per profile output by the
network. A per-step free correction over ``K = 150`` steps made training unstable (each step's
error compounds in a recurrence); a handful of smooth modes keeps the method close to a stable
Chebyshev-like one while letting it reshape the polynomial, and makes the output size independent
of ``K``.

The last layer starts at zero, so an untrained engine *is* Chebyshev iteration on the probe's
interval (the classical baseline); training moves it only where the loss says so.

**Where the engine is trusted** (``condition_limit``, set by :func:`calibrate_condition_limit`).
A spectrum outside the training distribution can turn a move that pays on the training spectra
into a loss. For the degree-8 preconditioner inside CG the lower end is the case in point: raised
above the probe's estimate it turns the eigenvalues below it into outliers, which CG resolves
one by one; that pays where the bottom of the spectrum is thin (3D Poisson, elasticity) and costs
iterations where it is dense (random sparse SPD, large 2D grids), while synthetic training
spectra of 4,096 eigenvalues reward it everywhere. With a limit, an operator whose probe
estimates a condition number ``theta_s / theta_1`` above it gets the classical parameters (the
network's outputs are zero there); :func:`calibrate_condition_limit` chooses the largest limit at
which the engine costs no iterations on any of a set of held-out operators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..polynomials import (
    chebyshev_coefficients_from_nodes,
    chebyshev_extrema,
    chebyshev_fit_at_extrema,
    chebyshev_nodes,
    chebyshev_recurrence_coefficients,
)
from ..probes import Probe
from ..validation import check_choice, check_count, check_counts, check_positive, check_tensor
from .heads import IdentityHead
from .metasolver import ACTIVATIONS, MetaSolver, dense_parameters, register_metasolver

PARADIGMS = {"recurrence": ("initial", "momentum", "step"),
             "basis": ("coefficients", "lower", "upper"),
             "invsqrt": ("coefficients", "lower", "upper"),
             "filter": ("coefficients", "lower", "upper")}


def split_probe(features: torch.Tensor, probe_steps: int) -> Probe:
    """The :class:`~metasolve.probes.Probe` stored in ``features`` ``(B, 2 s)``; the Ritz values
    must be positive (the operator symmetric positive definite). Its ``matvecs`` is ``s``, the
    cost of a Lanczos probe; a subspace probe's features cost more
    (:attr:`metasolve.tasks.SpectrumFamily.probe_matvecs`)."""
    check_tensor("features", features, ndim=2)
    if features.shape[1] != 2 * probe_steps:
        raise ValueError(f"features must have 2 * probe_steps = {2 * probe_steps} columns (Ritz "
                         f"values, then residual norms), got shape {tuple(features.shape)}")
    ritz, residuals = features[:, :probe_steps], features[:, probe_steps:]
    if not bool((ritz > 0).all()):
        raise ValueError("the probe found a non-positive Ritz value: the operator is not "
                         "symmetric positive definite")
    return Probe(ritz_values=ritz, residual_norms=residuals, matvecs=probe_steps)


def _check_condition_limit(limit, paradigm: str) -> float | None:
    if limit is None:
        return None
    if paradigm == "filter":
        raise ValueError("condition_limit is not available for the 'filter' paradigm: its "
                         "inputs hold no probe condition estimate")
    limit = check_positive("condition_limit", limit)
    if limit < 1:
        raise ValueError(f"condition_limit must be at least 1 (a ratio of Ritz values), got "
                         f"{limit}")
    return limit


def condition_estimate(probe: Probe) -> torch.Tensor:
    """``(B,)`` the probe's estimate of the condition number, ``theta_s / theta_1``."""
    return probe.ritz_values[:, -1] / probe.ritz_values[:, 0]


def probe_inputs(probe: Probe) -> torch.Tensor:
    """Scale-free network inputs ``(B, 2 s + 1)`` of a probe (module doc)."""
    ritz, residuals = probe.ritz_values, probe.residual_norms
    top = (ritz[:, -1] + residuals[:, -1]).unsqueeze(1)
    # Decades, divided by 3: a probe of a condition number up to 1e6 gives inputs of order one.
    return torch.cat([torch.log10(ritz / top), torch.log10(residuals / top + 1e-12),
                      torch.log10(ritz[:, -1:] / ritz[:, :1])], dim=1) / 3


@register_metasolver
class AutoSpecEngine(MetaSolver):
    """Probe features -> coefficients of a degree-``degree`` polynomial method (module doc).

    Args:
        probe_steps: ``s`` of the probe whose features it reads (``2 s`` features).
        degree: ``K``, products ``A @ v`` of the polynomial method it outputs.
        paradigm: ``"recurrence"`` (for :class:`~metasolve.PolynomialRecurrence`), ``"basis"``
            (for :class:`~metasolve.ChebyshevExpansion`), ``"invsqrt"`` (for
            :class:`~metasolve.ChebyshevSeries`, ``q(t) ~ t^{-1/2}``) or ``"filter"`` (a filter
            of degree ``degree`` for :class:`~metasolve.FilteredSubspaceIteration`, which reads
            ``2 probe_steps + 1`` features: ``probe_steps`` is the block size ``p``).
        hidden: widths of the hidden layers; ``activation`` their nonlinearity.
        correction: ``c``, the largest log-factor a per-coefficient correction may apply.
        modes: ``M``, smooth modes per correction profile (0: the engine only places the
            interval).
        lower_range: ``r``, the largest log-factor by which the lower end of the interval may
            move from the probe's estimate.
        condition_limit: the largest probe condition estimate ``theta_s / theta_1`` at which
            the network's outputs are used; above it the engine gives the classical parameters
            (module doc). ``None``: no limit. Not for the ``"filter"`` paradigm, whose inputs
            hold no such estimate.
    """

    kind = "autospec"

    def __init__(self, probe_steps: int, degree: int, paradigm: str = "recurrence",
                 hidden: Sequence[int] = (64, 64), activation: str = "silu",
                 correction: float = 0.5, lower_range: float = math.log(1e3), modes: int = 8,
                 condition_limit: float | None = None):
        self.probe_steps = check_count("probe_steps", probe_steps, minimum=2)
        self.degree = check_count("degree", degree, minimum=1)
        self.paradigm = check_choice("paradigm", paradigm, tuple(PARADIGMS))
        self.modes = check_count("modes", modes)
        profiles = 2 if self.paradigm == "recurrence" else 1
        heads = {"interval": IdentityHead(1 + (self.paradigm == "recurrence"))}
        if self.modes:
            heads["shape"] = IdentityHead(profiles * self.modes)
        super().__init__(heads)
        self.in_features = 2 * self.probe_steps + (self.paradigm == "filter")
        self.hidden = [check_count("hidden", w, minimum=1) for w in hidden]
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.correction = check_positive("correction", correction)
        self.lower_range = check_positive("lower_range", lower_range)
        self.condition_limit = condition_limit  # checked by the setter
        layers, width = [], 2 * self.probe_steps + 1
        for w in self.hidden:
            layers += [nn.Linear(width, w, dtype=torch.float64), ACTIVATIONS[activation]()]
            width = w
        layers.append(nn.Linear(width, self.n_outputs, dtype=torch.float64))
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    @property
    def outputs(self) -> tuple[str, ...]:
        return PARADIGMS[self.paradigm]

    def config(self) -> dict:
        return {"kind": self.kind, "probe_steps": self.probe_steps, "degree": self.degree,
                "paradigm": self.paradigm, "hidden": self.hidden, "activation": self.activation,
                "correction": self.correction, "lower_range": self.lower_range,
                "modes": self.modes, "condition_limit": self.condition_limit}

    @classmethod
    def from_config(cls, config: dict) -> AutoSpecEngine:
        return cls(**config)  # the heads follow from the paradigm; the config holds none

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        probe_steps = check_count("probe_steps", config.get("probe_steps"), minimum=2)
        check_count("degree", config.get("degree"), minimum=1)
        paradigm = check_choice("paradigm", config.get("paradigm", "recurrence"),
                                tuple(PARADIGMS))
        modes = check_count("modes", config.get("modes", 8))
        hidden = check_counts("hidden", config.get("hidden", [64, 64]), minimum=1)
        check_choice("activation", config.get("activation", "silu"), tuple(ACTIVATIONS))
        # The heads __init__ builds: the interval (2 entries for a recurrence) and the profiles.
        recurrence = paradigm == "recurrence"
        outputs = 1 + recurrence + (2 if recurrence else 1) * modes
        return dense_parameters([2 * probe_steps + 1, *hidden, outputs])

    @property
    def condition_limit(self) -> float | None:
        """The largest probe condition estimate at which the network's outputs are used
        (``None``: no limit); checked when set."""
        return self._condition_limit

    @condition_limit.setter
    def condition_limit(self, limit: float | None) -> None:
        self._condition_limit = _check_condition_limit(limit, self.paradigm)

    def _raw(self, inputs: torch.Tensor, baseline: bool,
             probe: Probe | None = None) -> dict[str, torch.Tensor]:
        """The network's outputs split by head; all zero for the baseline (the untrained engine)
        and for the operators whose ``probe`` estimates a condition number above the limit."""
        if baseline:
            return self._split(inputs.new_zeros(inputs.shape[0], self.n_outputs))
        outputs = self.net(inputs)
        if self.condition_limit is not None and probe is not None:
            trusted = condition_estimate(probe) <= self.condition_limit
            outputs = torch.where(trusted.unsqueeze(1), outputs, torch.zeros_like(outputs))
        return self._split(outputs)

    def interval(self, features: torch.Tensor, baseline: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``(a, b, parts)``: the learned interval and the network's raw outputs (with
        ``baseline``, the probe's interval and zeros)."""
        probe = split_probe(features.to(torch.float64), self.probe_steps)
        parts = self._raw(probe_inputs(probe), baseline, probe)
        lower0, upper0 = probe.interval()
        z = parts["interval"]
        lower = lower0 * torch.exp(self.lower_range * torch.tanh(z[:, 0]))
        return torch.minimum(lower, 0.9 * upper0), upper0, parts

    def _profiles(self, parts: dict, count: int) -> torch.Tensor:
        """``(B, P, count)`` learned log-factors ``c tanh(w(x_k))`` (zero without modes)."""
        batch = parts["interval"].shape[0]
        profiles = 2 if self.paradigm == "recurrence" else 1
        if not self.modes:
            return parts["interval"].new_zeros(batch, profiles, count)
        device = parts["interval"].device
        x = torch.linspace(-1.0, 1.0, count, dtype=torch.float64, device=device) if count > 1 \
            else torch.zeros(1, dtype=torch.float64, device=device)
        basis = torch.cos(torch.arange(self.modes, dtype=torch.float64, device=device).unsqueeze(1)
                          * torch.arccos(x).unsqueeze(0))  # T_m(x_k), (M, count)
        weights = parts["shape"].reshape(batch, profiles, self.modes)
        return self.correction * torch.tanh(weights @ basis)

    def _filter(self, features: torch.Tensor, baseline: bool) -> dict[str, torch.Tensor]:
        check_tensor("features", features, ndim=2)
        p = self.probe_steps
        if features.shape[1] != 2 * p + 1:
            raise ValueError(f"features must have 2 p + 1 = {2 * p + 1} columns (Ritz values, "
                             f"residual norms, upper bound), got shape {tuple(features.shape)}")
        features = features.to(torch.float64)
        ritz, residuals, upper = features[:, :p], features[:, p:2 * p], features[:, -1]
        if not bool((ritz > 0).all()):
            raise ValueError("a non-positive Ritz value: the operator is not symmetric positive "
                             "definite")
        top = ritz[:, -1:]
        inputs = torch.cat([torch.log10(ritz / top), torch.log10(top / upper.unsqueeze(1)),
                            torch.log10(residuals / top + 1e-12)], dim=1) / 3
        parts = self._raw(inputs, baseline)
        z = parts["interval"]
        lower = torch.minimum(ritz[:, -1] * torch.exp(self.lower_range * torch.tanh(z[:, 0])),
                              0.99 * upper)
        top_term = torch.ones(features.shape[0], 1, dtype=torch.float64,
                              device=features.device)  # T_d itself
        # Terms of degree below d: zero, or learned smooth profiles of size at most c.
        lower_terms = self._profiles(parts, self.degree)[:, 0] if self.modes \
            else torch.zeros(features.shape[0], self.degree, dtype=torch.float64,
                             device=features.device)
        return {"coefficients": torch.cat([lower_terms, top_term], dim=1), "lower": lower,
                "upper": upper}

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._method_params(features, baseline=False)

    def baseline_params(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters of the classical method the untrained engine is, for the same
        features: Chebyshev iteration, or the Chebyshev interpolant of ``t^{-1/2}``, on the
        probe's interval ``[min(a_0, 0.9 u), u]``; for the filter paradigm, the Chebyshev
        filter ``T_d`` on ``[theta_p, b]`` (Chebyshev-filtered subspace iteration's). A loss
        relative to it (:class:`~metasolve.training.RelativeLogResidualLoss`) reads it."""
        with torch.no_grad():
            return self._method_params(features, baseline=True)

    def _method_params(self, features: torch.Tensor, baseline: bool) -> dict[str, torch.Tensor]:
        if self.paradigm == "filter":
            return self._filter(features, baseline)
        lower, upper, parts = self.interval(features, baseline)
        k = self.degree
        factors = torch.exp(self._profiles(parts, k))
        if self.paradigm == "recurrence":
            base = chebyshev_recurrence_coefficients(lower, upper, k)
            initial = torch.exp(self.correction * torch.tanh(parts["interval"][:, 1]))
            return {"initial": base["initial"] * initial,
                    "momentum": base["momentum"] * factors[:, 0],
                    "step": base["step"] * factors[:, 1]}
        if self.paradigm == "basis":
            # The factors scale the residual polynomial 1 - t q(t), not q: q must match 1/t to
            # the accuracy of the residual, so a 1% change of q costs a residual of 1%, while the
            # residual's own values may change by any factor near 1. They act at the K + 1
            # extrema of T_K, where Chebyshev's residual is +-1 / T_K(sigma) (at the K nodes it
            # is zero, and a factor there would do nothing), and q is the least-squares fit of
            # degree K - 1 to the corrected values (exact when no correction is applied).
            points = chebyshev_extrema(lower, upper, k + 1)
            sign = (-1.0) ** (k - torch.arange(k + 1, dtype=torch.float64, device=lower.device))
            sigma = (upper + lower) / (upper - lower)
            growth = torch.cosh((k * torch.acosh(sigma)).clamp_max(700.0)).unsqueeze(1)
            ratio = sign / growth * torch.exp(self._profiles(parts, k + 1))[:, 0]
            return {"coefficients": chebyshev_fit_at_extrema((1 - ratio) / points, k),
                    "lower": lower, "upper": upper}
        nodes = chebyshev_nodes(lower, upper, k)
        values = nodes.rsqrt() * factors[:, 0]
        return {"coefficients": chebyshev_coefficients_from_nodes(values), "lower": lower,
                "upper": upper}


def calibrate_condition_limit(solver, task_sets, **run_options) -> tuple[float, list[dict]]:
    """The largest condition limit at which an AutoSpec engine costs no iterations on any of
    ``task_sets`` (module doc, "Where the engine is trusted").

    ``solver`` is a :class:`~metasolve.LearnedSolver` around an :class:`AutoSpecEngine`, as it
    will be used (for a preconditioner, ``model.deployed(ConjugateGradient())``); ``task_sets``
    is a sequence of ``(name, TaskBatch)``, operators *held out* from the ones it will be judged
    on; ``run_options`` go to both solves (``rtol``, ``maxiter``). Each set is solved with the
    engine's outputs everywhere and with the classical parameters; an instance that does not
    converge counts as its iteration cap. The limit is the largest of the instances' probe
    estimates ``theta_s / theta_1`` below that of the first instance (in the order of the
    estimates, over all sets) on which the engine needs more iterations than the classical
    parameters: under it the engine made no instance slower, not one iteration. It is the
    largest estimate where the engine made none slower, and 1.0 (the engine never used) where
    it made the instance of the smallest estimate slower.

    Returns ``(limit, report)``, ``report`` a dict per set: ``name``, ``classical``,
    ``learned`` and ``limited`` (mean iterations of the classical parameters, of the engine
    everywhere, and of the engine under the limit), ``trusted`` (instances under it) and
    ``first_slower`` (the smallest estimate of an instance the engine made slower, ``None`` if
    none). The engine's own ``condition_limit`` is left as it was; set it to the result to use
    it.
    """
    engine = solver.metasolver
    if not isinstance(engine, AutoSpecEngine):
        raise TypeError(f"solver must be a LearnedSolver around an AutoSpecEngine, got one "
                        f"around {type(engine).__name__}")
    if engine.paradigm == "filter":
        raise ValueError("the 'filter' paradigm has no condition limit")
    if not task_sets:
        raise ValueError("task_sets must hold at least one (name, TaskBatch)")
    cap = run_options.get("maxiter")
    sets, previous = [], engine.condition_limit
    try:
        engine.condition_limit = None
        for name, tasks in task_sets:
            estimate = condition_estimate(split_probe(tasks.features.to(torch.float64),
                                                      engine.probe_steps))
            with torch.no_grad():
                counts = [_cost(solution, cap) for solution in (
                    solver.solve_baseline(tasks, **run_options),
                    solver.solve(tasks, safeguard=False, **run_options))]
            sets.append((name, estimate, *counts))
    finally:
        engine.condition_limit = previous

    estimates = torch.cat([estimate for _, estimate, _, _ in sets])
    losing = torch.cat([learned > classical for _, _, classical, learned in sets])
    # Below the smallest estimate of an instance that the engine made slower, the largest
    # estimate; every instance if none.
    if bool(losing.any()):
        first = float(estimates[losing].min())
        below = estimates[estimates < first]
        limit = float(below.max()) if len(below) else 1.0
    else:
        limit = float(estimates.max())
    report = []
    for name, estimate, classical, learned in sets:
        trusted, slower = estimate <= limit, estimate[learned > classical]
        report.append({"name": name, "classical": float(classical.mean()),
                       "learned": float(learned.mean()),
                       "limited": float(torch.where(trusted, learned, classical).mean()),
                       "trusted": int(trusted.sum()), "instances": len(estimate),
                       "first_slower": float(slower.min()) if len(slower) else None})
    return max(limit, 1.0), report


def _cost(solution, cap) -> torch.Tensor:
    """Iterations per instance, an unconverged one counted as the cap (its own count without
    one)."""
    iterations = solution.iterations.to(torch.float64)
    if cap is None:
        return iterations
    return torch.where(solution.converged, iterations, torch.full_like(iterations, cap))
