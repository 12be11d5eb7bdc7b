"""ICCG(alpha) and its IC(0) factorization against plain-loop and SciPy references, per-instance
failure, and the GBMS paper's failure-penalty loss (sec. 4.2)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch
from reference import DTYPE, plain_ic0, randn, sparse_spd

import metasolve as ms
from metasolve import Status
from metasolve.solvers import incomplete_cholesky
from metasolve.training import loss_from_config

N, B = 14, 4
SHIFTS = (0.0, 0.05, 0.3, 1.0)


def _batch(seeds, **kw) -> torch.Tensor:
    return torch.tensor(np.stack([sparse_spd(N, seed=s, **kw) for s in seeds]))


def test_ic0_matches_the_plain_loop_reference():
    # Weak diagonal dominance (margin < 0 on some rows would make IC fail) and a random
    # pattern: the factor differs from the full Cholesky factor, and fill-in is dropped.
    matrices = _batch(range(B), density=0.35)
    shifts = torch.tensor(SHIFTS, dtype=DTYPE)
    factor, failed = incomplete_cholesky(matrices, shifts)
    assert not failed.any()
    for i in range(B):
        expected = plain_ic0(matrices[i].numpy(), SHIFTS[i])
        assert np.allclose(factor[i].numpy(), expected, rtol=0, atol=1e-12)
        # Zero fill-in: L lives on the lower pattern of A, and L L^T = A + alpha I there.
        pattern = (matrices[i] != 0) | torch.eye(N, dtype=torch.bool)
        assert not (factor[i][~torch.tril(pattern)]).any()
        product = factor[i] @ factor[i].T
        shifted = matrices[i] + SHIFTS[i] * torch.eye(N, dtype=DTYPE)
        assert torch.allclose(product[pattern], shifted[pattern], atol=1e-12)
    cholesky = torch.linalg.cholesky(matrices + shifts[:, None, None] * torch.eye(N, dtype=DTYPE))
    assert not torch.allclose(factor, cholesky, atol=1e-6)  # the pattern does drop fill-in


def test_ic0_with_a_full_pattern_is_cholesky():
    matrices = _batch(range(B), density=1.0)
    factor, failed = incomplete_cholesky(matrices)
    assert not failed.any()
    assert torch.allclose(factor, torch.linalg.cholesky(matrices), rtol=0, atol=1e-12)


def _indefinite_pivot_batch():
    """Instance 1 has a negative pivot for alpha = 0 (its (0, 0) entry); the others are SPD."""
    matrices = _batch(range(3))
    matrices[1, 0, 0] = -1.0
    return matrices


def test_ic0_failure_is_per_instance_and_finite():
    matrices = _indefinite_pivot_batch()
    factor, failed = incomplete_cholesky(matrices)
    assert failed.tolist() == [False, True, False]
    assert torch.isfinite(factor).all()
    assert torch.equal(factor[1], torch.eye(N, dtype=DTYPE))
    for i in (0, 2):
        assert np.allclose(factor[i].numpy(), plain_ic0(matrices[i].numpy()), atol=1e-12)
    assert plain_ic0(matrices[1].numpy()) is None


def test_iccg_matches_scipy_spsolve():
    matrices = _batch(range(B))
    rhs = randn(B, N, seed=3)
    problem = ms.LinearSystem(matrices, rhs)
    alpha = torch.tensor(SHIFTS, dtype=DTYPE)
    sol = ms.run(ms.ICCG(), problem, params={"alpha": alpha}, rtol=1e-12, maxiter=200)
    assert bool(sol.converged.all())
    for i in range(B):
        expected = scipy.sparse.linalg.spsolve(scipy.sparse.csr_matrix(matrices[i].numpy()),
                                               rhs[i].numpy())
        assert np.allclose(sol.x[i].numpy(), expected, rtol=0, atol=1e-10 * abs(expected).max())
    assert (sol.iterations <= N).all()  # CG converges in at most N steps
    assert sol.info["params"]["alpha"] is alpha


def test_a_larger_shift_preconditions_worse():
    # One matrix, shifts growing from 0: M = L L^T drifts away from A, so PCG needs more steps.
    matrix = torch.tensor(sparse_spd(N, seed=11))
    shifts = torch.tensor([0.0, 1.0, 100.0], dtype=DTYPE)
    problem = ms.LinearSystem(matrix, randn(1, N, seed=12).expand(3, N).clone())
    sol = ms.run(ms.ICCG(), problem, params={"alpha": shifts}, rtol=1e-10, maxiter=200)
    assert bool(sol.converged.all())
    its = sol.iterations.tolist()
    assert its[0] < its[2] and its[1] <= its[2], its


def test_iccg_shared_and_sparse_matrices_agree_with_dense():
    matrix = torch.tensor(sparse_spd(N, seed=7))
    rhs = randn(3, N, seed=8)
    dense = ms.run(ms.ICCG(0.1), ms.LinearSystem(matrix.expand(3, N, N).clone(), rhs),
                   rtol=1e-10)
    for shared in (matrix, matrix.to_sparse()):
        sol = ms.run(ms.ICCG(0.1), ms.LinearSystem(shared, rhs), rtol=1e-10)
        assert torch.equal(sol.iterations, dense.iterations)
        assert torch.allclose(sol.x, dense.x, atol=1e-12)


def test_iccg_failure_is_reported_per_instance():
    matrices = _indefinite_pivot_batch()
    rhs = randn(3, N, seed=4)
    sol = ms.run(ms.ICCG(), ms.LinearSystem(matrices, rhs), rtol=1e-10)
    assert sol.status.tolist() == [Status.CONVERGED, Status.BREAKDOWN, Status.CONVERGED]
    assert sol.iterations[1] == 0
    assert torch.isfinite(sol.x).all() and torch.isfinite(sol.residual_history).all()
    alone = ms.run(ms.ICCG(), ms.LinearSystem(matrices[[0, 2]], rhs[[0, 2]]), rtol=1e-10)
    assert torch.equal(alone.iterations, sol.iterations[[0, 2]])
    assert torch.allclose(alone.x, sol.x[[0, 2]], rtol=0, atol=1e-14)


def test_iccg_rejects_bad_input():
    problem = ms.LinearSystem(_batch(range(2)), randn(2, N, seed=1))
    with pytest.raises(TypeError, match="alpha"):
        ms.ICCG(alpha="big")
    with pytest.raises(ValueError, match="alpha"):
        ms.ICCG(alpha=float("nan"))
    with pytest.raises(ValueError, match=r"params\['alpha'\]"):
        ms.run(ms.ICCG(), problem, params={"alpha": torch.ones(3, dtype=DTYPE)})
    with pytest.raises(ValueError, match=r"params\['alpha'\] must hold one value"):
        ms.run(ms.ICCG(), problem, params={"alpha": torch.ones(2, 2, dtype=DTYPE)})
    unsymmetric = problem.matrix.clone()
    unsymmetric[1, 0, 1] += 1.0
    with pytest.raises(ValueError, match="symmetric"):
        ms.run(ms.ICCG(), ms.LinearSystem(unsymmetric, problem.rhs))


def test_failure_penalty_replaces_the_loss_of_failed_instances():
    matrices = _indefinite_pivot_batch()
    problem = ms.LinearSystem(matrices, randn(3, N, seed=4))
    alpha = torch.tensor([0.5, 1e-3, 0.5], dtype=DTYPE)
    loss = ms.FailurePenaltyLoss(ms.FixedIterationLoss(3, squared=False), gamma=500.0)
    sol = ms.run(ms.ICCG(), problem, params={"alpha": alpha}, **loss.run_options())
    assert sol.status[1] == Status.BREAKDOWN
    values = loss(sol)
    assert values[1] == pytest.approx(500.0 * -np.log(1e-3))
    base = ms.FixedIterationLoss(3, squared=False)(sol)
    assert torch.equal(values[[0, 2]], base[[0, 2]])
    assert torch.allclose(base, sol.residual / torch.linalg.vector_norm(problem.rhs, dim=1))
    again = loss_from_config(loss.config())
    assert again.config() == loss.config() and isinstance(again.base, ms.FixedIterationLoss)
    with pytest.raises(ValueError, match="alpha"):
        loss(ms.run(ms.Jacobi(), problem, **loss.run_options()))


@pytest.mark.parametrize("base", [ms.FixedIterationLoss(4, squared=False),
                                  ms.IterationSurrogateLoss(1e-8, maxiter=N)])
def test_loss_gradient_in_alpha(base):
    """gradcheck of ``1_success L + gamma 1_fail (-log alpha)`` in alpha, through IC(0) and the
    unrolled iterations; one instance fails, so both branches are exercised."""
    matrices = _indefinite_pivot_batch()[:2, :8, :8].clone()
    rhs = randn(2, 8, seed=5)
    problem = ms.LinearSystem(matrices, rhs)
    loss = ms.FailurePenaltyLoss(base, gamma=500.0)

    def objective(alpha):
        return loss(ms.run(ms.ICCG(), problem, params={"alpha": alpha}, **loss.run_options()))

    alpha = torch.tensor([0.2, 0.05], dtype=DTYPE, requires_grad=True)
    assert ms.run(ms.ICCG(), problem, params={"alpha": alpha.detach()}).status[1] == \
        Status.BREAKDOWN
    # eps 1e-6: at 1e-7 the central difference of the residuals near 1e-9 carries round-off of
    # order 1e-4 relative.
    assert torch.autograd.gradcheck(objective, (alpha,), eps=1e-6, atol=1e-6, rtol=1e-4)


# The fast path (IC(0) with its derivative in alpha, analytic backward of the solves) against
# the reference path (autograd through every column and every solve) on small elastic beams.

def _beams(count=6, seed=0):
    from metasolve.tasks import ElasticBeamFamily
    return ElasticBeamFamily(cells=(3, 1, 1)).sample(count, seed=seed)


def test_fast_ic0_equals_the_reference_and_fails_where_it_fails():
    from metasolve.solvers.iccg import incomplete_cholesky_reference
    matrices = _beams(12).problem.matrix
    shifts = torch.logspace(-6, 0, 12, dtype=DTYPE)
    for pattern in (None, torch.rand(matrices.shape[1:], generator=torch.Generator()
                                     .manual_seed(3)) < 0.5):
        fast, failed = incomplete_cholesky(matrices, shifts, pattern)
        reference, failed_ref = incomplete_cholesky_reference(matrices, shifts, pattern)
        assert torch.equal(failed, failed_ref)
        assert 0 < int(failed.sum()) < len(failed)  # both outcomes are exercised
        assert torch.allclose(fast, reference, rtol=1e-13, atol=1e-13 * reference.abs().max())
        # Per instance: a failing instance does not change the others' factors.
        alone, _ = incomplete_cholesky(matrices[~failed], shifts[~failed], pattern)
        assert torch.equal(alone, fast[~failed])


def test_fast_ic0_gradient_in_the_shift_matches_the_reference():
    from metasolve.solvers.iccg import incomplete_cholesky_reference
    matrices = _beams(4).problem.matrix
    weights = randn(*matrices.shape, seed=9)
    grads = []
    for factorize in (incomplete_cholesky, incomplete_cholesky_reference):
        alpha = torch.tensor([1e-3, 0.01, 0.1, 1.0], dtype=DTYPE, requires_grad=True)
        (factorize(matrices, alpha)[0] * weights).sum().backward()
        grads.append(alpha.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=0)
    failed = incomplete_cholesky(matrices, alpha.detach())[1]
    assert failed.tolist() == [True, False, False, False]  # a failed factor is I: no gradient
    assert torch.equal(grads[0] != 0, ~failed)


def test_fast_iccg_solves_agree_with_the_reference_path():
    # A matrix that requires a gradient runs the reference path (autograd everywhere).
    tasks = _beams(8, seed=1)
    problem = tasks.problem
    alpha = torch.logspace(-6, 0, 8, dtype=DTYPE)
    fast = ms.run(ms.ICCG(), problem, params={"alpha": alpha}, rtol=1e-8, maxiter=200)
    slow_problem = ms.LinearSystem(problem.matrix.clone().requires_grad_(), problem.rhs)
    slow = ms.run(ms.ICCG(), slow_problem, params={"alpha": alpha}, rtol=1e-8, maxiter=200)
    assert torch.equal(fast.status, slow.status) and torch.equal(fast.iterations,
                                                                 slow.iterations)
    assert (fast.status == Status.BREAKDOWN).any() and (fast.status == Status.CONVERGED).any()
    expected = slow.x.detach()
    assert torch.allclose(fast.x, expected, rtol=0, atol=1e-12 * float(expected.abs().max()))


def _beam_objective(problem, loss, reference=False):
    if reference:
        problem = ms.LinearSystem(problem.matrix.clone().requires_grad_(), problem.rhs)

    def objective(alpha):
        return loss(ms.run(ms.ICCG(), problem, params={"alpha": alpha}, **loss.run_options()))
    return objective


@pytest.mark.parametrize("base", [ms.FixedIterationLoss(5, squared=False),
                                  ms.IterationSurrogateLoss(1e-6, maxiter=30)])
def test_fast_iccg_gradient_in_alpha_against_finite_differences(base):
    """The analytic backward of the preconditioner and products against central differences
    and against autograd through the reference path, on beams; one instance fails IC(0)."""
    tasks = _beams(3, seed=2)
    loss = ms.FailurePenaltyLoss(base, gamma=500.0)
    alpha = torch.tensor([0.05, 1e-3, 0.3], dtype=DTYPE, requires_grad=True)
    objective = _beam_objective(tasks.problem, loss)
    assert ms.run(ms.ICCG(), tasks.problem, params={"alpha": alpha.detach()}).status[1] == \
        Status.BREAKDOWN
    if isinstance(base, ms.FixedIterationLoss):
        # eps 1e-6: the beams' losses carry round-off near 1e-12, which eps 1e-7 amplifies.
        # (L~_eps jumps where an iteration count changes, so differences check L_m only.)
        assert torch.autograd.gradcheck(objective, (alpha,), eps=1e-6, atol=1e-6, rtol=1e-4)
    fast = torch.autograd.grad(objective(alpha).sum(), alpha)[0]
    reference = torch.autograd.grad(_beam_objective(tasks.problem, loss, True)(alpha).sum(),
                                    alpha)[0]
    # Both are exact derivatives computed in different orders. The thin third beam is far from
    # converged after 30 iterations and its L~_eps gradient is a small sum of large terms: the
    # two orders differ by about 2e-2 relative there (and central differences do not settle
    # at any step from 1e-4 to 1e-7), so it is held to 5e-2.
    assert torch.allclose(fast, reference, rtol=5e-2, atol=0)
    # The converging first beam agrees to round-off (1.4e-8 relative: the orders differ).
    assert torch.allclose(fast[:2], reference[:2], rtol=1e-6, atol=0)
