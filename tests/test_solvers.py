"""Jacobi and the driver loop against direct solves and a plain-loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from reference import DTYPE, diag_dominant, plain_jacobi, randn

import metasolve as ms
from metasolve import Status

N, B = 12, 5


def _dense_solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    if matrix.ndim == 2:
        return torch.linalg.solve(matrix, rhs.T).T
    return torch.linalg.solve(matrix, rhs)


def _assert_solves(problem: ms.LinearSystem, dense: torch.Tensor, rtol: float, sol: ms.Solution):
    expected = _dense_solve(dense, problem.rhs)
    assert sol.x.shape == problem.rhs.shape
    assert torch.allclose(sol.x, expected, rtol=0, atol=1e-8 * expected.abs().max())
    assert (sol.status == Status.CONVERGED).all()
    assert bool(sol.converged.all())
    residual = torch.linalg.vector_norm(problem.rhs - problem.matvec(sol.x), dim=1)
    assert (residual <= rtol * torch.linalg.vector_norm(problem.rhs, dim=1)).all()
    assert (sol.iterations > 0).all()


@pytest.mark.parametrize("layout", ["shared", "batched", "sparse_coo"])
def test_jacobi_matches_dense_solve(layout):
    rtol = 1e-10
    if layout == "batched":
        dense = diag_dominant(N, batch=B, seed=1)
        matrix = dense
    else:
        dense = diag_dominant(N, seed=1)
        matrix = dense.to_sparse() if layout == "sparse_coo" else dense
    rhs = randn(B, N, seed=2)
    problem = ms.LinearSystem(matrix, rhs)
    sol = ms.run(ms.Jacobi(), problem, rtol=rtol, maxiter=2000)
    _assert_solves(problem, dense, rtol, sol)
    assert sol.info["method"] == "jacobi"
    assert sol.residual_history.shape == (int(sol.iterations.max()) + 1, B)
    assert torch.allclose(sol.threshold, rtol * torch.linalg.vector_norm(rhs, dim=1))


def test_jacobi_sparse_csr_matrix():
    """A CSR matrix is as valid as COO: problems.py handles ``torch.sparse_csr`` in ``matvec`` and
    ``diagonal``, but input validation must not choke on it (it currently raises a bare
    ``RuntimeError: unsupported tensor layout: SparseCsr`` from ``torch.isfinite``)."""
    dense = diag_dominant(N, seed=1)
    rhs = randn(B, N, seed=2)
    problem = ms.LinearSystem(dense.to_sparse_csr(), rhs)
    sol = ms.run(ms.Jacobi(), problem, rtol=1e-10, maxiter=2000)
    _assert_solves(problem, dense, 1e-10, sol)
    bad = dense.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="matrix"):
        ms.LinearSystem(bad.to_sparse_csr(), rhs)


def test_jacobi_matches_scipy_solve():
    dense = diag_dominant(N, seed=3)
    rhs = randn(B, N, seed=4)
    sol = ms.run(ms.Jacobi(), ms.LinearSystem(dense, rhs), rtol=1e-12, maxiter=5000)
    expected = scipy.linalg.solve(dense.numpy(), rhs.numpy().T).T
    np.testing.assert_allclose(sol.x.numpy(), expected, rtol=0, atol=1e-9)


def test_sparse_and_dense_agree_iteration_by_iteration():
    dense = diag_dominant(N, seed=5)
    rhs = randn(B, N, seed=6)
    a = ms.run(ms.Jacobi(), ms.LinearSystem(dense, rhs), rtol=1e-9, maxiter=500)
    b = ms.run(ms.Jacobi(), ms.LinearSystem(dense.to_sparse(), rhs), rtol=1e-9, maxiter=500)
    assert torch.equal(a.iterations, b.iterations)
    assert torch.allclose(a.x, b.x, rtol=1e-12, atol=1e-14)


def test_weighted_jacobi_per_instance_omega():
    dense = diag_dominant(N, seed=7)
    rhs = randn(B, N, seed=8)
    x0 = randn(B, N, seed=9)
    omega = torch.tensor([0.5, 0.7, 0.9, 1.0, 1.1], dtype=DTYPE)
    problem = ms.LinearSystem(dense, rhs)
    sol = ms.run(ms.Jacobi(), problem, params={"omega": omega, "x0": x0}, rtol=1e-10,
                 maxiter=3000)
    _assert_solves(problem, dense, 1e-10, sol)
    for i in range(B):
        _, k = plain_jacobi(dense.numpy(), rhs[i].numpy(), x0[i].numpy(), rtol=1e-10,
                            maxiter=3000, omega=float(omega[i]))
        assert int(sol.iterations[i]) == k
    # Heavier damping converges more slowly on this matrix: omega does reach the iteration.
    assert sol.iterations[0] > sol.iterations[3]

    # A constructor-level omega and a (B, 1) per-instance omega give the same iteration.
    fixed = ms.run(ms.Jacobi(omega=0.7), problem, x0=x0, fixed_iterations=7)
    per_instance = ms.run(ms.Jacobi(), problem, x0=x0, fixed_iterations=7,
                          params={"omega": torch.full((B, 1), 0.7, dtype=DTYPE)})
    assert torch.allclose(fixed.x, per_instance.x, rtol=1e-14, atol=1e-14)


def test_inputs_are_not_mutated():
    dense = diag_dominant(N, seed=10)
    rhs, x0 = randn(B, N, seed=11), randn(B, N, seed=12)
    copies = [t.clone() for t in (dense, rhs, x0)]
    ms.run(ms.Jacobi(), ms.LinearSystem(dense, rhs), x0=x0, rtol=1e-8, maxiter=500)
    for original, copy in zip((dense, rhs, x0), copies, strict=True):
        assert torch.equal(original, copy)


# --- driver loop: masking, stopping, statuses -------------------------------------------------


def _mixed_batch():
    """Poisson tasks from the mixture: instances need visibly different iteration counts."""
    family = ms.Poisson1DFamily(n=16, p=0.5)
    return family.sample(8, seed=3).problem


@pytest.mark.parametrize("monitor", ["residual", "error"])
def test_masking_matches_per_instance_plain_loop(monitor):
    problem = _mixed_batch()
    x0 = 0.1 * randn(problem.batch_size, problem.size, seed=13)
    rtol = 1e-6
    sol = ms.run(ms.Jacobi(), problem, x0=x0, rtol=rtol, maxiter=5000, monitor=monitor)
    A = problem.matrix.numpy()
    counts = []
    for i in range(problem.batch_size):
        xstar = problem.solution[i].numpy() if monitor == "error" else None
        x_ref, k = plain_jacobi(A, problem.rhs[i].numpy(), x0[i].numpy(), rtol=rtol,
                                maxiter=5000, xstar=xstar)
        counts.append(k)
        assert int(sol.iterations[i]) == k, f"instance {i}"
        # A frozen instance keeps the iterate of its own stopping iteration.
        np.testing.assert_allclose(sol.x[i].numpy(), x_ref, rtol=1e-11, atol=1e-12 *
                                   np.abs(x_ref).max())
    assert len(set(counts)) > 2, "the batch should mix different iteration counts"
    assert (sol.status == Status.CONVERGED).all()
    # The loop ends as soon as the slowest instance converges.
    assert sol.residual_history.shape[0] - 1 == max(counts)
    # After an instance stops, its recorded norm is frozen.
    for i, k in enumerate(counts):
        tail = sol.residual_history[k:, i]
        assert torch.all(tail == tail[0])
        assert sol.residual_history[k, i] <= sol.threshold[i]
        if k > 0:
            assert sol.residual_history[k - 1, i] > sol.threshold[i]


def test_error_monitor_uses_the_exact_solution():
    problem = _mixed_batch()
    sol = ms.run(ms.Jacobi(), problem, rtol=1e-4, maxiter=5000, monitor="error")
    assert torch.allclose(sol.reference_norm, torch.linalg.vector_norm(problem.solution, dim=1))
    err = torch.linalg.vector_norm(sol.x - problem.solution, dim=1)
    assert torch.allclose(sol.residual, err)
    assert (err <= 1e-4 * sol.reference_norm).all()
    # A residual-monitored run stops at different counts on the same batch.
    res = ms.run(ms.Jacobi(), problem, rtol=1e-4, maxiter=5000, monitor="residual")
    assert not torch.equal(res.iterations, sol.iterations)


def test_fixed_iterations_runs_every_instance_exactly_m_times():
    problem = _mixed_batch()
    m = 37
    sol = ms.run(ms.Jacobi(), problem, fixed_iterations=m, rtol=1e-2)
    assert (sol.iterations == m).all()
    assert sol.residual_history.shape == (m + 1, problem.batch_size)
    A = problem.matrix.numpy()
    for i in range(problem.batch_size):
        x_ref, k = plain_jacobi(A, problem.rhs[i].numpy(), np.zeros(problem.size), rtol=0.0,
                                maxiter=m, stop=False)
        assert k == m
        np.testing.assert_allclose(sol.x[i].numpy(), x_ref, rtol=1e-11,
                                   atol=1e-12 * np.abs(x_ref).max())
    # Even instances that would have stopped earlier keep iterating (history keeps changing).
    early = ms.run(ms.Jacobi(), problem, rtol=1e-2, maxiter=5000)
    assert int(early.iterations.min()) < m
    assert (sol.residual_history[-1] < sol.residual_history[-2]).all()
    zero = ms.run(ms.Jacobi(), problem, fixed_iterations=0)
    assert (zero.iterations == 0).all() and torch.equal(zero.x, torch.zeros_like(problem.rhs))


def test_max_iterations_status():
    problem = _mixed_batch()
    sol = ms.run(ms.Jacobi(), problem, rtol=1e-10, maxiter=5)
    assert (sol.status == Status.MAX_ITERATIONS).all()
    assert (sol.iterations == 5).all()
    assert not bool(sol.converged.any())
    with pytest.raises(ms.ConvergenceError) as info:
        ms.run(ms.Jacobi(), problem, rtol=1e-10, maxiter=5, throw=True)
    assert isinstance(info.value.solution, ms.Solution)
    assert (info.value.solution.status == Status.MAX_ITERATIONS).all()


def test_diverged_status_with_a_convergent_neighbour():
    # Jacobi on [[1, 2], [2, 1]] has iteration matrix [[0, -2], [-2, 0]] (spectral radius 2).
    bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=DTYPE)
    good = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=DTYPE)
    problem = ms.LinearSystem(torch.stack([good, bad]),
                              torch.tensor([[1.0, 2.0], [1.0, 0.0]], dtype=DTYPE))
    sol = ms.run(ms.Jacobi(), problem, rtol=1e-10, maxiter=10_000)
    assert sol.status.tolist() == [Status.CONVERGED, Status.DIVERGED]
    # The divergent instance stopped once its residual left the bound, long before maxiter.
    assert int(sol.iterations[1]) < 100
    assert sol.residual[1] > 1e8 * sol.residual_history[0, 1]
    assert sol.residual_history.shape[0] - 1 == int(sol.iterations.max())
    expected = torch.linalg.solve(good, torch.tensor([1.0, 2.0], dtype=DTYPE))
    assert torch.allclose(sol.x[0], expected, atol=1e-9)
    with pytest.raises(ms.ConvergenceError):
        ms.run(ms.Jacobi(), problem, rtol=1e-10, maxiter=10_000, throw=True)
    assert sol.status_names() == ["converged", "diverged"]
    assert "converged=1, diverged=1" in sol.summary()
    # throw=True is silent when everything converges.
    ok = ms.run(ms.Jacobi(), problem.index(slice(0, 1)), rtol=1e-10, maxiter=10_000, throw=True)
    assert bool(ok.converged.all())


def test_status_codes_names_and_messages():
    # The integer codes are stable: solutions and records store them.
    assert [(s.name, int(s)) for s in Status] == [
        ("CONVERGED", 0), ("MAX_ITERATIONS", 1), ("DIVERGED", 2), ("BREAKDOWN", 3),
        ("STAGNATED", 4), ("ACCURACY_LIMIT", 5)]
    for status in Status:
        assert str(status) == f"{status}" == status.name.lower()
        assert status.message.startswith(f"{status}: ") and "\n" not in status.message
    assert Status(1) is Status.MAX_ITERATIONS


def test_already_converged_initial_guess_takes_zero_iterations():
    dense = diag_dominant(N, seed=14)
    xstar = randn(B, N, seed=15)
    rhs = xstar @ dense.T
    x0 = xstar.clone()
    x0[0] += 1.0  # only the first instance has work to do
    sol = ms.run(ms.Jacobi(), ms.LinearSystem(dense, rhs), x0=x0, rtol=1e-8, maxiter=500)
    assert int(sol.iterations[0]) > 0
    assert (sol.iterations[1:] == 0).all()
    assert torch.equal(sol.x[1:], x0[1:])
    assert (sol.status == Status.CONVERGED).all()


def test_iterations_to_agrees_with_separate_runs():
    problem = _mixed_batch()
    full = ms.run(ms.Jacobi(), problem, rtol=1e-10, maxiter=5000, monitor="error")
    for eps in (1e-2, 1e-4, 1e-6, 1e-8):
        separate = ms.run(ms.Jacobi(), problem, rtol=eps, maxiter=5000, monitor="error")
        assert torch.equal(full.iterations_to(eps), separate.iterations), eps
    # A tolerance that was never reached reads as -1.
    short = ms.run(ms.Jacobi(), problem, rtol=1e-10, maxiter=10, monitor="error")
    assert (short.iterations_to(1e-8) == -1).all()


def test_callback_sees_every_iteration():
    problem = _mixed_batch()
    seen = []
    sol = ms.run(ms.Jacobi(), problem, rtol=1e-3, maxiter=5000,
                 callback=lambda k, state, norms: seen.append((k, norms.clone())))
    assert [k for k, _ in seen] == list(range(int(sol.iterations.max())))
    assert torch.equal(seen[-1][1], sol.residual)


def test_give_up_stops_the_instances_it_names_as_a_cap_would():
    """``give_up`` sees every iteration's norms with the start, threshold and reference; the
    instances it names stop there with ``max_iterations``, are marked in ``info["given_up"]``,
    and the others run on as without it."""
    problem = _mixed_batch()
    plain = ms.run(ms.Jacobi(), problem, rtol=1e-6, maxiter=5000)
    seen = []

    def give_up(k, norms, start, threshold, reference):
        seen.append(k)
        assert torch.equal(start, plain.residual_history[0])
        assert torch.equal(threshold, plain.threshold)
        assert torch.equal(reference, plain.reference_norm)
        stop = torch.zeros_like(norms, dtype=torch.bool)
        stop[0] = k >= 3
        return stop

    sol = ms.run(ms.Jacobi(), problem, rtol=1e-6, maxiter=5000, give_up=give_up)
    assert seen[:3] == [1, 2, 3]
    assert sol.status_names()[0] == "max_iterations" and int(sol.iterations[0]) == 3
    assert sol.info["given_up"].tolist() == [True] + [False] * (problem.batch_size - 1)
    torch.testing.assert_close(sol.x[0], ms.run(ms.Jacobi(), problem.index(torch.tensor([0])),
                                                rtol=1e-6, maxiter=3).x[0])
    assert torch.equal(sol.iterations[1:], plain.iterations[1:])
    assert torch.equal(sol.status[1:], plain.status[1:])
    assert "given_up" not in plain.info
    with pytest.raises(TypeError, match="give_up"):
        ms.run(ms.Jacobi(), problem, give_up=3)


class _GuardedJacobi(ms.Jacobi):
    """Jacobi that reports a breakdown for instances whose first rhs entry is negative, after
    two iterations: the way a method flags a per-instance failure (a bad pivot)."""

    name = "test-guarded-jacobi"

    def init(self, problem, x0, params):
        state = super().init(problem, x0, params)
        state["breakdown"] = torch.zeros(problem.batch_size, dtype=torch.bool)
        state["k"] = torch.zeros(problem.batch_size, dtype=torch.int64)
        return state

    def step(self, problem, state, params):
        new = super().step(problem, state, params)
        new["k"] = state["k"] + 1
        new["breakdown"] = (problem.rhs[:, 0] < 0) & (new["k"] >= 2)
        return new


def test_a_method_can_report_per_instance_breakdown():
    A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0], [-1.0, 2.0]], dtype=torch.float64)
    sol = ms.run(_GuardedJacobi(), ms.LinearSystem(A, b), rtol=1e-10, maxiter=100)
    assert sol.status.tolist() == [ms.Status.CONVERGED, ms.Status.BREAKDOWN]
    assert sol.iterations[1] == 2
    assert sol.iterations[0] > 2


class _LooseJacobi(ms.Jacobi):
    name = "test-loose-jacobi"

    def converged(self, problem, state, norms, threshold):
        return norms <= 100 * threshold  # a method-specific stopping test


def test_a_method_can_define_its_own_stopping_test():
    A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    system = ms.LinearSystem(A, b)
    loose = ms.run(_LooseJacobi(), system, rtol=1e-10, maxiter=200)
    strict = ms.run(ms.Jacobi(), system, rtol=1e-10, maxiter=200)
    assert loose.status.tolist() == [ms.Status.CONVERGED]
    assert loose.iterations[0] < strict.iterations[0]
    assert loose.residual[0] <= 100 * loose.threshold[0]


class _ShapeChangingJacobi(ms.Jacobi):
    name = "test-shape-changing-jacobi"

    def step(self, problem, state, params):
        new = super().step(problem, state, params)
        new["x"] = torch.cat([new["x"], new["x"]], dim=1)
        return new


def test_state_entries_that_change_shape_are_refused():
    A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    system = ms.LinearSystem(A, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="'x'"):
        ms.run(_ShapeChangingJacobi(), system, rtol=1e-8, maxiter=10)


def test_initial_guess_of_another_dtype_is_refused():
    A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    system = ms.LinearSystem(A, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    with pytest.raises(TypeError, match="x0"):
        ms.run(ms.Jacobi(), system, x0=torch.zeros(1, 2, dtype=torch.float32))


def test_per_instance_maxiter_stops_each_instance_at_its_own_cap():
    """A ``(B,)`` maxiter ends each instance where a scalar cap of its own value would."""
    matrix = diag_dominant(8, seed=41)
    system = ms.LinearSystem(matrix, randn(4, 8, seed=42))
    caps = torch.tensor([0, 3, 7, 1000])
    solution = ms.run(ms.Jacobi(), system, rtol=1e-10, maxiter=caps)
    free = ms.run(ms.Jacobi(), system, rtol=1e-10, maxiter=1000)
    assert torch.equal(solution.iterations, torch.minimum(caps, free.iterations))
    for i, cap in enumerate(caps.tolist()[1:], start=1):
        alone = ms.run(ms.Jacobi(), system, rtol=1e-10, maxiter=cap)
        torch.testing.assert_close(solution.x[i], alone.x[i])
    assert torch.equal(solution.x[0], torch.zeros(8, dtype=solution.x.dtype))  # no step taken
    assert solution.status[0] == ms.Status.MAX_ITERATIONS
    assert solution.status[3] == ms.Status.CONVERGED
    assert torch.equal(solution.info["maxiter"], caps)
