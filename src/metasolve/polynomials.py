"""Matrix polynomials applied matrix-free, the two representations the AutoSpec issue asks for.

* A **fixed stable basis**: ``p(A) v = sum_j c_j T_j(L(A)) v`` with Chebyshev polynomials ``T_j``
  on an interval ``[a, b]`` mapped to ``[-1, 1]`` by ``L(t) = (2 t - (a + b)) / (b - a)``
  (:func:`chebyshev_basis_apply`). Each degree costs one product ``A @ v`` and the recurrence
  ``T_{j+1} = 2 L T_j - T_{j-1}`` keeps three vectors, whatever the degree.
* An **affine three-term recurrence** (:class:`~metasolve.solvers.recurrence.PolynomialRecurrence`)
  whose coefficients are free; :func:`chebyshev_recurrence_coefficients` gives the ones that make
  it Chebyshev iteration, so that member of the family is checked to round-off.

Everything is batched: ``v`` is ``(B, N)``, coefficients and intervals are per instance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .validation import check_count, check_instance_scalars, check_tensor


def chebyshev_basis_apply(matvec: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor,
                          coefficients: torch.Tensor, lower: torch.Tensor,
                          upper: torch.Tensor) -> torch.Tensor:
    """``sum_j c_j T_j(L(A)) v`` for a batch; ``coefficients`` is ``(B, d + 1)``.

    Costs ``d`` products ``A @ v`` (``matvec`` maps ``(B, N) -> (B, N)``). Differentiable in the
    coefficients and the interval.
    """
    check_tensor("v", v, ndim=2)
    batch = v.shape[0]
    check_tensor("coefficients", coefficients, ndim=2)
    if coefficients.shape[0] != batch or coefficients.shape[1] < 1:
        raise ValueError(f"coefficients must have shape ({batch}, d + 1) with d >= 0, got "
                         f"{tuple(coefficients.shape)}")
    lower = check_instance_scalars("lower", lower, batch).unsqueeze(1)
    upper = check_instance_scalars("upper", upper, batch).unsqueeze(1)
    if not bool((lower.detach() < upper.detach()).all()):
        raise ValueError("lower must be below upper for every instance")
    centre, half_width = (upper + lower) / 2, (upper - lower) / 2

    def mapped(w):  # L(A) w
        return (matvec(w) - centre * w) / half_width

    previous, current = v, mapped(v) if coefficients.shape[1] > 1 else v
    total = coefficients[:, :1] * previous
    if coefficients.shape[1] > 1:
        total = total + coefficients[:, 1:2] * current
    for j in range(2, coefficients.shape[1]):
        previous, current = current, 2 * mapped(current) - previous
        total = total + coefficients[:, j:j + 1] * current
    return total


def chebyshev_recurrence_coefficients(lower: torch.Tensor, upper: torch.Tensor,
                                      steps: int) -> dict[str, torch.Tensor]:
    """Coefficients that make :class:`~metasolve.solvers.recurrence.PolynomialRecurrence` the
    Chebyshev iteration on ``[lower, upper]`` (Saad, Algorithm 12.1): ``initial`` ``(B,)``,
    ``momentum`` and ``step`` ``(B, steps)``.

    With ``theta = (a + b) / 2``, ``delta = (b - a) / 2``, ``sigma = theta / delta``:
    ``d_0 = r_0 / theta`` and, for ``k >= 0``, ``rho_{k+1} = 1 / (2 sigma - rho_k)``,
    ``d_{k+1} = rho_{k+1} rho_k d_k + (2 rho_{k+1} / delta) r_{k+1}`` from ``rho_0 = 1 / sigma``.
    """
    steps = check_count("steps", steps, minimum=1)
    check_tensor("lower", lower, ndim=1)
    check_tensor("upper", upper, shape=tuple(lower.shape))
    theta, delta = (upper + lower) / 2, (upper - lower) / 2
    sigma = theta / delta
    rho = 1 / sigma
    momentum, step = [], []
    for _ in range(steps):
        following = 1 / (2 * sigma - rho)
        momentum.append(following * rho)
        step.append(2 * following / delta)
        rho = following
    return {"initial": 1 / theta, "momentum": torch.stack(momentum, dim=1),
            "step": torch.stack(step, dim=1)}
