"""Finite-difference checks (float64 gradcheck) of the losses through the unrolled solver."""

from __future__ import annotations

import pytest
import torch
from reference import DTYPE, diag_dominant, randn

import metasolve as ms

N, B = 4, 2


def _system(batched: bool) -> ms.LinearSystem:
    matrix = diag_dominant(N, batch=B if batched else None, seed=21, margin=0.3)
    xstar = randn(B, N, seed=22)
    rhs = torch.bmm(matrix, xstar.unsqueeze(-1)).squeeze(-1) if batched else xstar @ matrix.T
    return ms.LinearSystem(matrix, rhs, solution=xstar)


def _x0():
    return randn(B, N, seed=23).requires_grad_(True)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("eps, step", [(1e-3, 1e-6), (1e-6, 1e-4)])
def test_gradcheck_surrogate_loss_wrt_initial_guess(batched, eps, step):
    # Near eps = 1e-6 the monitored errors carry ~1e-10 relative rounding (x - x* cancels),
    # so the central differences need a larger step there.
    problem = _system(batched)
    loss = ms.IterationSurrogateLoss(eps, maxiter=500, gain=1.0)
    x0 = _x0()

    def f(x0):
        sol = ms.run(ms.Jacobi(), problem, x0=x0, monitor="error", **loss.run_options())
        return loss(sol)

    # The finite-difference steps must not move any iterate across the tolerance, or the
    # piecewise-smooth loss jumps; check the margin on the log scale first.
    with torch.no_grad():
        sol = ms.run(ms.Jacobi(), problem, x0=x0, monitor="error", **loss.run_options())
    assert (sol.status == ms.Status.CONVERGED).all()
    assert (sol.iterations > 3).all()
    gap = torch.log(sol.relative_history / eps).abs()
    assert float(gap.min()) > 100 * step, "choose another eps: an iterate sits on the tolerance"

    value = f(x0)
    assert value.shape == (B,)
    assert (value > 0).all() and (value <= sol.iterations.to(DTYPE)).all()
    assert torch.autograd.gradcheck(f, (x0,), eps=step, atol=1e-6, rtol=1e-5)


def test_surrogate_counts_iterations_in_the_high_gain_limit():
    problem = _system(False)
    eps = 1e-6
    loss = ms.IterationSurrogateLoss(eps, maxiter=500, gain=200.0)
    with torch.no_grad():
        sol = ms.run(ms.Jacobi(), problem, x0=_x0(), monitor="error", **loss.run_options())
    # Each sigmoid term tends to the indicator 1[L_k > eps]: the loss tends to the count.
    assert torch.allclose(loss(sol), sol.iterations.to(DTYPE), atol=1e-3)


@pytest.mark.parametrize("m", [0, 1, 6])
def test_gradcheck_fixed_iteration_loss_wrt_initial_guess(m):
    problem = _system(True)
    loss = ms.FixedIterationLoss(m)

    def f(x0):
        return loss(ms.run(ms.Jacobi(), problem, x0=x0, monitor="error", **loss.run_options()))

    x0 = _x0()
    with torch.no_grad():
        sol = ms.run(ms.Jacobi(), problem, x0=x0, monitor="error", **loss.run_options())
    expected = (torch.linalg.vector_norm(sol.x - problem.solution, dim=1)
                / torch.linalg.vector_norm(problem.solution, dim=1)) ** 2
    assert torch.allclose(f(x0), expected)
    assert torch.autograd.gradcheck(f, (x0,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_fixed_iteration_loss_wrt_omega():
    problem = _system(False)
    loss = ms.FixedIterationLoss(5)
    x0 = randn(B, N, seed=24)

    def f(omega):
        sol = ms.run(ms.Jacobi(), problem, x0=x0, params={"omega": omega}, monitor="residual",
                     **loss.run_options())
        return loss(sol)

    omega = torch.tensor([0.8, 1.1], dtype=DTYPE, requires_grad=True)
    assert torch.autograd.gradcheck(f, (omega,), eps=1e-6, atol=1e-7, rtol=1e-5)
    grad, = torch.autograd.grad(f(omega).sum(), omega)
    assert torch.all(grad != 0)


def test_truncated_backprop_changes_the_gradient_only_through_early_iterates():
    problem = _system(False)
    loss = ms.FixedIterationLoss(6)

    def grad(truncate):
        x0 = _x0()
        sol = ms.run(ms.Jacobi(), problem, x0=x0, monitor="error", truncate=truncate,
                     **loss.run_options())
        value = loss(sol).sum()
        if not value.requires_grad:
            return torch.zeros_like(x0)
        g, = torch.autograd.grad(value, x0, allow_unused=True)
        return torch.zeros_like(x0) if g is None else g

    full, same = grad(None), grad(6)
    assert torch.allclose(full, same)
    # Cut after 3 of 6 iterations: no gradient reaches x0 at all.
    assert torch.count_nonzero(grad(3)) == 0
    assert torch.count_nonzero(full) > 0


def test_gradients_flow_through_the_lanczos_function_and_minimal_residual():
    """The probes fill their basis in place; under autograd they copy what they read, so the
    gradient with respect to the vector is right (finite differences)."""
    from metasolve.probes import lanczos_function, minimal_residual

    a = torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = a @ a.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v: lanczos_function(lambda x: x @ a.T, v, 4, torch.rsqrt), (b,))
    assert torch.autograd.gradcheck(lambda v: minimal_residual(lambda x: x @ a.T, v, 3), (b,))
