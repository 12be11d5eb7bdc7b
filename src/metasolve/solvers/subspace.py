"""Polynomial-filtered subspace iteration for the smallest eigenpairs of symmetric operators
(the AutoSpec issue's task (b); Zhou and Saad, "Chebyshev-filtered subspace iteration", 2007).

Each iteration applies a polynomial filter ``p(A)`` to the block ``V`` (``(B, N, p)``), then
orthonormalizes it and takes Rayleigh-Ritz: ``H = V^T A V = Y Theta Y^T``, ``V <- V Y``. The
``wanted`` smallest Ritz pairs converge at the rate ``|p(lambda_{p+1})| / |p(lambda_k)|`` per
iteration, so a good filter is large on the wanted end of the spectrum and small on the rest.

The filter is ``sum_j c_j T_j(L(t))`` in the Chebyshev basis of an interval ``[a, b]``, chosen
each iteration by ``filter_rule`` from the current Ritz values ``theta``, their residual norms
and the upper bound ``b`` of the problem (``(B, 2 p + 1)`` features: Ritz values, residual
norms, upper bound):

* :func:`chebyshev_filter_rule` (the default, Chebyshev-filtered subspace iteration): ``T_d`` on
  ``[theta_p, b]``, damping everything above the block's largest Ritz value;
* a learned rule (:class:`~metasolve.learned.autospec.AutoSpecEngine`, paradigm ``"filter"``);
* ``degree=1`` with the default rule is plain (shifted) subspace iteration: ``T_1`` on
  ``[theta_p, b]`` is ``(t - c) / h``, so the filter is ``c - t`` up to sign and scale, with ``c``
  the centre of that interval.

Cost per iteration: ``d p`` products for the filter and ``p`` for Rayleigh-Ritz
(:meth:`FilteredSubspaceIteration.products_per_iteration`); ``init`` spends ``p`` more.
The monitored norm is the largest residual ``||A v_i - theta_i v_i||`` of the ``wanted`` pairs;
the reference norm is the upper bound ``b``, so ``rtol`` is relative to ``||A||``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ..polynomials import chebyshev_basis_apply
from ..probes import rayleigh_ritz
from ..problems import EigenProblem
from ..validation import check_count
from .base import IterativeMethod, State
from .registry import register_method


def filter_features(ritz: torch.Tensor, residuals: torch.Tensor,
                    upper: torch.Tensor) -> torch.Tensor:
    """``(B, 2 p + 1)``: Ritz values, residual norms, upper bound (a filter rule's input)."""
    return torch.cat([ritz, residuals, upper.unsqueeze(1)], dim=1)


def chebyshev_filter_rule(degree: int) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Chebyshev-filtered subspace iteration's filter: ``T_d`` on ``[theta_p, b]``."""
    degree = check_count("degree", degree, minimum=1)

    def rule(features: torch.Tensor) -> dict[str, torch.Tensor]:
        block = (features.shape[1] - 1) // 2
        upper = features[:, -1]
        lower = torch.minimum(features[:, block - 1], 0.99 * upper)
        coefficients = torch.zeros(features.shape[0], degree + 1, dtype=features.dtype,
                                   device=features.device)
        coefficients[:, -1] = 1.0
        return {"coefficients": coefficients, "lower": lower, "upper": upper}

    return rule


@register_method
class FilteredSubspaceIteration(IterativeMethod):
    """Subspace iteration with a polynomial filter chosen by ``filter_rule`` each iteration.

    Args:
        degree: ``d`` of the default Chebyshev filter (ignored when ``filter_rule`` is given).
        filter_rule: ``features (B, 2 p + 1) -> {"coefficients", "lower", "upper"}``.
    """

    name = "filtered-subspace-iteration"
    parameter_names = ()
    problem_type = EigenProblem

    def __init__(self, degree: int = 10, filter_rule=None):
        self.degree = check_count("degree", degree, minimum=1)
        if filter_rule is not None and not callable(filter_rule):
            raise TypeError(f"filter_rule must be callable, got {type(filter_rule).__name__}")
        self.filter_rule = chebyshev_filter_rule(self.degree) if filter_rule is None \
            else filter_rule

    def config(self):
        return {"degree": self.degree}

    def zero_guess(self, problem: EigenProblem) -> torch.Tensor:
        return problem.start

    def products_per_iteration(self, problem: EigenProblem, coefficients: int) -> int:
        """Products ``A @ v`` of one iteration with a filter of ``coefficients`` terms."""
        return (coefficients - 1) * problem.block + problem.block

    @staticmethod
    def _rayleigh_ritz(problem: EigenProblem, block: torch.Tensor) -> State:
        basis = torch.linalg.qr(block)[0]
        ritz, vectors, residuals = rayleigh_ritz(basis, problem.block_matvec(basis))
        return {"x": vectors, "ritz": ritz, "residuals": residuals}

    def init(self, problem: EigenProblem, x0, params) -> State:
        return self._rayleigh_ritz(problem, x0)

    def step(self, problem: EigenProblem, state: State, params: Mapping) -> State:
        theta = self.filter_rule(filter_features(state["ritz"], state["residuals"],
                                                 problem.upper))
        return self.filter_step(problem, state, theta)

    def filter_step(self, problem: EigenProblem, state: State,
                    theta: Mapping[str, torch.Tensor]) -> State:
        """One iteration with the filter ``theta`` (``{"coefficients", "lower", "upper"}``)."""
        batch, size, width = state["x"].shape
        rows = state["x"].transpose(1, 2).reshape(batch * width, size)

        def matvec(v):  # (B p, N) rows, instance-major
            return problem.block_matvec(v.reshape(batch, width, size).transpose(1, 2)) \
                .transpose(1, 2).reshape(batch * width, size)

        filtered = chebyshev_basis_apply(
            matvec, rows, theta["coefficients"].repeat_interleave(width, dim=0),
            theta["lower"].repeat_interleave(width), theta["upper"].repeat_interleave(width))
        return self._rayleigh_ritz(problem, filtered.reshape(batch, width, size).transpose(1, 2))

    def residual(self, problem: EigenProblem, state: State) -> torch.Tensor:
        return state["residuals"][:, :problem.wanted].amax(dim=1)

    def reference_norm(self, problem: EigenProblem) -> torch.Tensor:
        return problem.upper
