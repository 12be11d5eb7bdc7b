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
    if torch.is_grad_enabled() and any(t.requires_grad
                                       for t in (v, coefficients, lower, upper)):
        return _basis_apply_recorded(matvec, v, coefficients, centre, half_width)
    return _basis_apply_in_place(matvec, v, coefficients, centre, half_width)


def _basis_apply_recorded(matvec, v, coefficients, centre, half_width) -> torch.Tensor:
    """:func:`chebyshev_basis_apply` for autograd: every step a new tensor."""

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


def _basis_apply_in_place(matvec, v, coefficients, centre, half_width) -> torch.Tensor:
    """:func:`chebyshev_basis_apply` outside autograd, the same arithmetic in the same order
    (bitwise the same result) with the steps written into the products and one scratch vector,
    which saves the recorded version's new vector per operation (most of its cost beyond the
    products on large batches)."""
    scratch = torch.empty_like(v)

    def mapped(w):  # L(A) w, in the product's own buffer
        product = matvec(w)
        if product.data_ptr() == w.data_ptr():  # an operator that returns its input
            product = product.clone()
        return product.sub_(torch.mul(centre, w, out=scratch)).div_(half_width)

    total = coefficients[:, :1] * v
    if coefficients.shape[1] == 1:
        return total
    previous, current = v, mapped(v)
    total.add_(torch.mul(coefficients[:, 1:2], current, out=scratch))
    for j in range(2, coefficients.shape[1]):
        previous, current = current, mapped(current).mul_(2).sub_(previous)
        total.add_(torch.mul(coefficients[:, j:j + 1], current, out=scratch))
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


def chebyshev_nodes(lower: torch.Tensor, upper: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` Chebyshev points of the first kind of each ``[lower, upper]``: ``(B, count)``,
    ``t_i = c + h cos(pi (i + 1/2) / count)`` (descending), where interpolation is well
    conditioned and :func:`chebyshev_coefficients_from_nodes` inverts it exactly."""
    count = check_count("count", count, minimum=1)
    angles = torch.pi * (torch.arange(count, dtype=lower.dtype, device=lower.device) + 0.5) / count
    centre, half_width = (upper + lower) / 2, (upper - lower) / 2
    return centre.unsqueeze(1) + half_width.unsqueeze(1) * torch.cos(angles)


def chebyshev_coefficients_from_nodes(values: torch.Tensor) -> torch.Tensor:
    """Coefficients ``c`` ``(B, d)`` of the polynomial of degree ``d - 1`` in the Chebyshev basis
    of ``[lower, upper]`` that takes ``values`` ``(B, d)`` at :func:`chebyshev_nodes`: the
    discrete cosine transform ``c_j = (2 / d) sum_i v_i cos(j pi (i + 1/2) / d)``, ``c_0`` halved.
    Exact (to round-off) for a polynomial of degree below ``d``."""
    check_tensor("values", values, ndim=2)
    count = values.shape[1]
    index = torch.arange(count, dtype=values.dtype, device=values.device)
    cosines = torch.cos(torch.pi * torch.outer(index, index + 0.5) / count)  # (j, i)
    coefficients = 2.0 / count * values @ cosines.T
    return torch.cat([coefficients[:, :1] / 2, coefficients[:, 1:]], dim=1)


def chebyshev_residual_ratio(t: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                             degree: int) -> torch.Tensor:
    """The Chebyshev residual polynomial ``T_d((theta - t) / delta) / T_d(theta / delta)`` at
    points ``t`` ``(B, M)`` inside each ``[lower, upper]`` (its values there are at most
    ``1 / T_d(theta / delta)`` in size). ``T_d`` of the centre ratio is capped to stay finite."""
    theta = ((upper + lower) / 2).unsqueeze(1)
    delta = ((upper - lower) / 2).unsqueeze(1)
    inside = ((theta - t) / delta).clamp(-1.0, 1.0)
    growth = torch.cosh((degree * torch.acosh(theta / delta)).clamp_max(700.0))
    return torch.cos(degree * torch.acos(inside)) / growth


def chebyshev_solve_expansion(lower: torch.Tensor, upper: torch.Tensor,
                              degree: int) -> torch.Tensor:
    """Chebyshev-basis coefficients ``(B, degree)`` on ``[lower, upper]`` of ``q`` with
    ``1 - t q(t)`` the Chebyshev residual polynomial of degree ``degree``: ``degree`` steps of
    Chebyshev iteration from zero, ``x = q(A) b``, written in the stable basis."""
    degree = check_count("degree", degree, minimum=1)
    nodes = chebyshev_nodes(lower, upper, degree)
    values = (1 - chebyshev_residual_ratio(nodes, lower, upper, degree)) / nodes
    return chebyshev_coefficients_from_nodes(values)


def chebyshev_extrema(lower: torch.Tensor, upper: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` Chebyshev extrema ``t_j = c - h cos(pi j / (count - 1))`` of each
    ``[lower, upper]`` (``(B, count)``, ascending, both ends included): where ``T_{count-1}`` of
    the mapped interval is ``+-1``."""
    count = check_count("count", count, minimum=2)
    angles = torch.pi * torch.arange(count, dtype=lower.dtype, device=lower.device) / (count - 1)
    centre, half_width = (upper + lower) / 2, (upper - lower) / 2
    return centre.unsqueeze(1) - half_width.unsqueeze(1) * torch.cos(angles)


def chebyshev_fit_at_extrema(values: torch.Tensor, terms: int) -> torch.Tensor:
    """Least-squares Chebyshev coefficients ``(B, terms)`` of the values ``(B, M)`` given at the
    ``M >= terms`` points of :func:`chebyshev_extrema` (exact when the values come from a
    polynomial of degree below ``terms``)."""
    check_tensor("values", values, ndim=2)
    points = values.shape[1]
    terms = check_count("terms", terms, minimum=1)
    if points < terms:
        raise ValueError(f"need at least terms = {terms} values, got {points}")
    angles = torch.pi * torch.arange(points, dtype=values.dtype, device=values.device) \
        / (points - 1)
    # T_j at t_i: the mapped point is -cos(angle_i), and T_j(-cos a) = cos(j (pi - a)).
    vandermonde = torch.cos(torch.outer(torch.pi - angles,
                                        torch.arange(terms, dtype=values.dtype,
                                                     device=values.device)))
    return values @ torch.linalg.pinv(vandermonde).T
