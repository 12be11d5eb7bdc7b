"""Training losses of gradient-based meta-solving (GBMS paper, sec. 2.2 and 3.2).

A loss says how the solver is run while training (``run_options()``: a fixed number of iterations
``m``, or a tolerance with a cap) and how the resulting :class:`~metasolve.solution.Solution` is
scored per instance (``__call__``). Both are chosen per experiment, never hard-wired.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..registry import Registry
from ..solution import Solution, Status
from ..validation import check_count, check_nonnegative, check_positive

LOSSES = Registry("loss kind", key="kind")
_register = LOSSES.register


class Loss:
    kind: ClassVar[str] = ""
    #: Whether ``__call__`` also needs the solution of the classical baseline on the same tasks
    #: (:meth:`~metasolve.learned.LearnedSolver.solve_baseline`); the trainer supplies it.
    needs_baseline: ClassVar[bool] = False

    def run_options(self) -> dict:
        raise NotImplementedError

    def __call__(self, solution: Solution) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError


@_register
class FixedIterationLoss(Loss):
    """``L_m``: the squared relative error (or residual) after exactly ``m`` iterations.

    GBMS paper, sec. 2.2.1: ``L_m = ||u^(m) - A^{-1} f||^2 / ||A^{-1} f||^2`` under the error
    monitor; ``m = 0`` is supervised learning of the solution itself. With ``squared=False`` it
    is the plain relative norm, ``L_m = ||A u^(m) - f|| / ||f||`` of sec. 4.2 under the residual
    monitor.
    """

    kind = "fixed"

    def __init__(self, m: int, squared: bool = True):
        self.m = check_count("m", m)
        if not isinstance(squared, bool):
            raise TypeError(f"squared must be a bool, got {type(squared).__name__}")
        self.squared = squared

    def run_options(self) -> dict:
        return {"fixed_iterations": self.m, "rtol": 0.0}

    def __call__(self, solution: Solution) -> torch.Tensor:
        relative = solution.relative_history[-1]
        return relative ** 2 if self.squared else relative

    def config(self) -> dict:
        # The default is left out, so checkpoints written before the option still resume.
        return {"kind": self.kind, "m": self.m, **({} if self.squared else {"squared": False})}

    @property
    def label(self) -> str:
        return f"L_m (m={self.m})"


@_register
class LogResidualLoss(Loss):
    """``log(||r_m|| / ||r_0||)`` after exactly ``m`` iterations: the AutoSpec summary's
    self-supervised loss on the final state of a linear solve (task (a)). Under the error
    monitor from ``x_0 = 0`` it is the log of the relative error ``||x_m - x*|| / ||x*||`` (the
    matrix-function task (c)).

    A logarithm weighs a residual reduction of ``10^-2`` to ``10^-3`` as much as one of ``10^-8``
    to ``10^-9``, so operators of every condition number count in a batch. Reductions below
    ``floor`` (round-off level) are clamped: they carry no gradient, only noise.
    """

    kind = "log-residual"

    def __init__(self, m: int, floor: float = 1e-13):
        self.m = check_count("m", m, minimum=1)
        self.floor = check_positive("floor", floor)

    def run_options(self) -> dict:
        return {"fixed_iterations": self.m, "rtol": 0.0}

    def __call__(self, solution: Solution) -> torch.Tensor:
        history = solution.residual_history
        ratio = history[-1] / history[0].clamp_min(torch.finfo(history.dtype).tiny)
        return torch.log(ratio.clamp_min(self.floor))

    def config(self) -> dict:
        return {"kind": self.kind, "m": self.m, "floor": self.floor}

    @property
    def label(self) -> str:
        return f"log residual (m={self.m})"


@_register
class RelativeLogResidualLoss(LogResidualLoss):
    """``softplus(beta d) / beta`` with ``d = l - l_base``, the :class:`LogResidualLoss`
    ``l = log(||r_m|| / ||r_0||)`` (clamped at ``floor``) minus the same for the classical
    baseline on the same task (the method the untrained meta-solver is: for AutoSpec, Chebyshev
    iteration on the probe's interval), with ``beta`` the ``sharpness``. With the same ``r_0``,
    ``d = log(||r_m|| / ||r_m^base||)``.

    Why not the plain log residual: its mean lets one hundredfold gain (``log 100 = 4.6``)
    outweigh 1% losses on 460 other tasks, and the AutoSpec engine trained with it bought large
    gains on a minority of spectra with small losses on most (median ratio to Chebyshev above
    1). The softplus charges a loss against the baseline at full weight (slope 1 for
    ``d >> 1 / beta``) and stops paying for a gain once it is clear (slope ``e^{beta d}`` for
    ``d << -1 / beta``): it asks to be no worse than the classical method on as many tasks as
    possible, and better where that is safe. (As ``beta -> 0`` its gradient tends to that of
    ``d / 2``, the plain loss's up to a factor.) The baseline carries no gradient.
    """

    kind = "relative-log-residual"
    needs_baseline = True

    def __init__(self, m: int, sharpness: float = 4.0, floor: float = 1e-13):
        super().__init__(m, floor)
        self.sharpness = check_positive("sharpness", sharpness)

    def __call__(self, solution: Solution, baseline: Solution | None = None) -> torch.Tensor:
        if baseline is None:
            raise ValueError("a relative log-residual loss needs the baseline's solution on the "
                             "same tasks (LearnedSolver.solve_baseline)")
        if baseline.residual_history.shape != solution.residual_history.shape:
            raise ValueError(f"the baseline's residual history has shape "
                             f"{tuple(baseline.residual_history.shape)}, the solution's "
                             f"{tuple(solution.residual_history.shape)}: run both on the same "
                             f"tasks for the same iterations")
        gap = super().__call__(solution) - super().__call__(baseline).detach()
        return torch.nn.functional.softplus(self.sharpness * gap) / self.sharpness

    def config(self) -> dict:
        return {**super().config(), "sharpness": self.sharpness}

    @property
    def label(self) -> str:
        return f"log residual relative to the baseline (m={self.m})"


@_register
class FilterGapLoss(Loss):
    """The filtered gap ratio of a polynomial filter for subspace iteration (AutoSpec task (b)):
    ``log(max_{j > p} |f(lambda_j)| / min_{j <= k} |f(lambda_j)|)``, the per-iteration rate at
    which the ``k`` wanted eigenvectors converge with a block of ``p``.

    The solution must hold ``f(lambda)`` at the operator's eigenvalues in ascending order: the
    filter as a :class:`~metasolve.solvers.chebyshev_expansion.ChebyshevSeries` of ``m`` terms run
    on ``diag(lambda)`` with ``b = 1`` (:class:`~metasolve.tasks.spectra.FilterStateFamily`).
    """

    kind = "filter-gap"

    def __init__(self, m: int, wanted: int, block: int):
        self.m = check_count("m", m, minimum=1)
        self.wanted = check_count("wanted", wanted, minimum=1)
        self.block = check_count("block", block, minimum=self.wanted)

    def run_options(self) -> dict:
        return {"fixed_iterations": self.m, "rtol": 0.0, "monitor": "error"}

    def __call__(self, solution: Solution) -> torch.Tensor:
        values = solution.x.abs()
        if values.shape[1] <= self.block:
            raise ValueError(f"need more than block = {self.block} eigenvalues, got "
                             f"{values.shape[1]}")
        tiny = torch.finfo(values.dtype).tiny
        return (torch.log(values[:, self.block:].amax(dim=1).clamp_min(tiny))
                - torch.log(values[:, :self.wanted].amin(dim=1).clamp_min(tiny)))

    def config(self) -> dict:
        return {"kind": self.kind, "m": self.m, "wanted": self.wanted, "block": self.block}

    @property
    def label(self) -> str:
        return f"filtered gap ratio (k={self.wanted}, p={self.block})"


@_register
class IterationSurrogateLoss(Loss):
    """``L~_eps^(m)`` of eq. (10): a smooth count of the iterations spent above tolerance.

    ``L~ = sum_{k < K_i} sigmoid(a * (log L_k - log eps))``, where ``L_k`` is the monitored norm
    at iteration ``k``, ``eps`` its stopping threshold (``max(rtol * reference, atol)``) and ``K_i``
    the iterations instance ``i`` ran before it converged or hit the cap ``m`` (``Phi_{eps,m}`` of
    sec. 3.2). Each term replaces the indicator ``1[L_k > eps]`` of eq. (9).

    We compare on a log scale: the paper leaves the gain ``a`` open, and a linear-scale
    sigmoid of ``L_k - eps`` would need ``a`` of order ``1/eps`` at every ``eps``, with gradients
    that vanish for all but the last iterate. On the log scale one gain serves every
    tolerance, and the sigmoid's width, about ``4/a`` in ``log L``, spans the several
    iterations around the crossing. ``log_scale=False`` gives the literal form
    ``sigmoid(a * (L_k / reference - eps))`` on the relative norm.

    An instance the driver stopped early because it diverged or broke down is charged one full
    count for each iteration up to the cap, as the indicator would; otherwise stopping early
    would make divergence look cheap.
    """

    kind = "surrogate"

    def __init__(self, eps: float, maxiter: int, gain: float = 1.0, log_scale: bool = True):
        self.eps = check_positive("eps", eps)
        self.maxiter = check_count("maxiter", maxiter, minimum=1)
        self.gain = check_positive("gain", gain)
        self.log_scale = bool(log_scale)

    def run_options(self) -> dict:
        return {"rtol": self.eps, "maxiter": self.maxiter}

    def __call__(self, solution: Solution) -> torch.Tensor:
        history = solution.residual_history[:-1]  # L_0 .. L_{K-1}
        steps = torch.arange(history.shape[0], device=history.device).unsqueeze(1)
        counted = steps < solution.iterations.unsqueeze(0)
        if self.log_scale:
            tiny = torch.finfo(history.dtype).tiny
            gap = torch.log(history.clamp_min(tiny)) - torch.log(solution.threshold)
        else:
            gap = (history - solution.threshold) / solution.reference_norm
        terms = torch.sigmoid(self.gain * gap)
        # where() rather than a product: a diverged instance's terms may be NaN.
        count = torch.where(counted & torch.isfinite(terms), terms,
                            torch.zeros_like(terms)).sum(dim=0)
        failed = (solution.status == Status.DIVERGED) | (solution.status == Status.BREAKDOWN)
        remaining = (self.maxiter - solution.iterations).clamp_min(0).to(count.dtype)
        return count + torch.where(failed, remaining, torch.zeros_like(remaining))

    def config(self) -> dict:
        return {"kind": self.kind, "eps": self.eps, "maxiter": self.maxiter, "gain": self.gain,
                "log_scale": self.log_scale}

    @property
    def label(self) -> str:
        return f"L~_eps (eps={self.eps:g})"


@_register
class FailurePenaltyLoss(Loss):
    """``1_success L + gamma 1_fail (-log theta)``: a loss ``L`` plus a penalty on a failed
    setup, the GBMS paper's training loss for ICCG(alpha) (sec. 4.2, ``gamma = 500``).

    An instance whose solve ended in ``Status.BREAKDOWN`` is scored ``gamma * -log(theta)``
    instead of ``L``. For ICCG that is almost always a failed incomplete Cholesky factorization
    of ``A + alpha I``; a CG breakdown later in the solve (``p^T A p <= 0``, which an SPD matrix
    rules out in exact arithmetic) is penalized the same way,
    where ``theta`` is its parameter ``parameter`` (``alpha``), read from the
    ``solution.info["params"]`` the driver records. The penalty has a gradient where ``L`` has
    none (the solve never started) and pushes ``alpha`` up, towards factorizations that succeed.
    It assumes ``theta`` in ``(0, 1)``, as the paper's sigmoid head gives; ``theta`` is clamped
    away from 0 inside the log.

    Args:
        base: the loss of a successful solve (``L_m`` or ``L~_eps``), or its config dict.
        gamma: weight of the penalty.
        parameter: the name of the solver parameter in the penalty.
    """

    kind = "failure_penalty"

    def __init__(self, base: Loss | dict, gamma: float = 500.0, parameter: str = "alpha"):
        if isinstance(base, dict):
            base = loss_from_config(base)
        if not isinstance(base, Loss):
            raise TypeError(f"base must be a metasolve Loss or its config, got "
                            f"{type(base).__name__}")
        if not isinstance(parameter, str) or not parameter:
            raise TypeError(f"parameter must be a non-empty str, got {parameter!r}")
        if base.needs_baseline:
            raise ValueError(f"base loss {base.kind!r} compares with a baseline solve, which "
                             f"FailurePenaltyLoss does not pass on")
        self.base = base
        self.gamma = check_nonnegative("gamma", gamma)
        self.parameter = parameter

    def run_options(self) -> dict:
        return self.base.run_options()

    def __call__(self, solution: Solution) -> torch.Tensor:
        params = solution.info.get("params", {})
        if self.parameter not in params:
            raise ValueError(f"FailurePenaltyLoss needs the solver parameter "
                             f"{self.parameter!r}, but the solve ran with {sorted(params)}")
        theta = params[self.parameter].reshape(-1)
        failed = solution.status == Status.BREAKDOWN
        # The log only sees the failed instances' theta, so a successful one's value (whatever
        # it is) never makes a NaN that where() would pass on to the gradient.
        safe = torch.where(failed, theta, torch.ones_like(theta))
        penalty = -torch.log(safe.clamp_min(torch.finfo(theta.dtype).tiny))
        return torch.where(failed, self.gamma * penalty, self.base(solution))

    def config(self) -> dict:
        return {"kind": self.kind, "base": self.base.config(), "gamma": self.gamma,
                "parameter": self.parameter}

    @property
    def label(self) -> str:
        return f"{self.base.label} + {self.gamma:g} fail penalty"


@_register
class WeightedResidualLoss(Loss):
    """The R2N2 paper's loss over ``T`` outer iterations (eq. 17-18):
    ``sum_{k=1}^{T} w_k (||.||_k / s)^2`` with ``w_k = growth^k``, ``||.||_k`` the monitored norm
    after iteration ``k`` (``||f(x_k)||`` for equations, eq. 17b/18; the error against the
    reference trajectory for an initial-value problem, eq. 17a) and ``s`` the reference norm
    (``||b||`` for a linear system, 1 for a nonlinear one, ``h^(p/2)`` for an IVP whose family
    sets it: the ``h^-p`` weighting of sec. 4.3). Sec. 4.1 trains with ``growth = 4``.

    With ``final_only=True`` only the last iterate counts (supplement SM3.3).
    """

    kind = "weighted-residual"

    def __init__(self, iterations: int, growth: float = 1.0, final_only: bool = False):
        self.iterations = check_count("iterations", iterations, minimum=1)
        self.growth = check_positive("growth", growth)
        if not isinstance(final_only, bool):
            raise TypeError(f"final_only must be a bool, got {type(final_only).__name__}")
        self.final_only = final_only

    def run_options(self) -> dict:
        return {"fixed_iterations": self.iterations, "rtol": 0.0}

    def __call__(self, solution: Solution) -> torch.Tensor:
        squared = solution.relative_history[1:] ** 2
        if self.final_only:
            return squared[-1]
        k = torch.arange(1, squared.shape[0] + 1, dtype=squared.dtype, device=squared.device)
        return (self.growth ** k).unsqueeze(1).mul(squared).sum(dim=0)

    def config(self) -> dict:
        return {"kind": self.kind, "iterations": self.iterations, "growth": self.growth,
                "final_only": self.final_only}

    @property
    def label(self) -> str:
        return (f"final residual (T={self.iterations})" if self.final_only
                else f"weighted residual (T={self.iterations}, w_k={self.growth:g}^k)")


@_register
class ResidualSumLoss(Loss):
    """A sum of (log) relative monitored norms over iterations, for fixed-point accelerators.

    * ``windows=None``: ``sum_{k=0}^{T} R_k / R_0`` (neural SCS paper, eq. 7, Algorithm 1), with
      ``R_0`` the method's reference norm (for SCS the cold start's fixed-point residual, a
      constant of the problem, so a learned initializer cannot shrink it).
    * ``windows = [(t, r), ...]``: sec. 5.2's loss for intermittent access: each access at
      iteration ``t`` (``t = 0`` the initializer) is charged the residuals of the ``r`` iterates
      from its own on, ``sum_{(t, r)} sum_{j<r} log R_{t+j}``; overlapping windows count twice.
      Gradients flow through the whole unrolled run (the paper truncates them per window; pass
      the driver's ``truncate`` for that).

    ``log=True`` uses ``log(R_k / R_0)`` (clamped below at ``floor``), which keeps late, tiny
    residuals from vanishing from the sum.
    """

    kind = "residual-sum"

    def __init__(self, iterations: int, log: bool = False, windows=None, floor: float = 1e-12):
        self.iterations = check_count("iterations", iterations, minimum=1)
        if not isinstance(log, bool):
            raise TypeError(f"log must be a bool, got {type(log).__name__}")
        self.log = log
        self.floor = check_positive("floor", floor)
        self.windows = None
        if windows is not None:
            pairs = [(check_count("windows start", t), check_count("windows length", r,
                                                                    minimum=1))
                     for t, r in windows]
            if not pairs or max(t + r - 1 for t, r in pairs) > self.iterations:
                raise ValueError(f"windows {pairs} must be non-empty and end by iteration "
                                 f"{self.iterations}")
            self.windows = pairs

    def weights(self, dtype=torch.float64) -> torch.Tensor:
        """``(T + 1,)``: how many windows cover each iterate."""
        w = torch.zeros(self.iterations + 1, dtype=dtype)
        if self.windows is None:
            w[:] = 1.0
        else:
            for t, r in self.windows:
                w[t:t + r] += 1.0
        return w

    def run_options(self) -> dict:
        return {"fixed_iterations": self.iterations, "rtol": 0.0}

    def __call__(self, solution: Solution) -> torch.Tensor:
        relative = solution.relative_history
        value = torch.log(relative.clamp_min(self.floor)) if self.log else relative
        w = self.weights(value.dtype).to(value.device)[:value.shape[0]]
        return (w.unsqueeze(1) * value).sum(dim=0)

    def config(self) -> dict:
        return {"kind": self.kind, "iterations": self.iterations, "log": self.log,
                "windows": self.windows, "floor": self.floor}

    @property
    def label(self) -> str:
        what = "log " if self.log else ""
        return (f"{what}residual sum (T={self.iterations})" if self.windows is None
                else f"{what}residuals over {len(self.windows)} access windows")


def loss_from_config(config: dict) -> Loss:
    config = dict(config)
    kind = config.pop("kind", None)
    return LOSSES.build(kind, config)


__all__ = [
    "FailurePenaltyLoss", "FilterGapLoss", "FixedIterationLoss", "IterationSurrogateLoss",
    "LogResidualLoss", "Loss", "RelativeLogResidualLoss", "ResidualSumLoss",
    "WeightedResidualLoss", "loss_from_config"
]
