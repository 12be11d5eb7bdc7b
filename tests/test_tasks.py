"""The 1D Poisson family of the GBMS paper (sec. 2.2.1, Appendix C.1) and task splits."""

from __future__ import annotations

import math

import pytest
import torch

import metasolve as ms
from metasolve.tasks import poisson1d_matrix


def test_same_seed_same_tasks_different_seed_different(poisson16):
    a, b = poisson16.sample(20, seed=5), poisson16.sample(20, seed=5)
    assert torch.equal(a.problem.rhs, b.problem.rhs)
    assert torch.equal(a.problem.solution, b.problem.solution)
    assert torch.equal(a.features, b.features)
    c = poisson16.sample(20, seed=6)
    assert not torch.any(torch.all(c.problem.rhs == a.problem.rhs, dim=1))
    # A fresh family object with the same settings draws the same tasks.
    d = ms.Poisson1DFamily(n=16, p=0.01).sample(20, seed=5)
    assert torch.equal(d.problem.rhs, a.problem.rhs)


def test_splits_are_disjoint_and_reproducible(poisson16):
    splits = ms.make_splits(poisson16, 40, 30, 20, seed=3)
    parts = (splits.train, splits.validation, splits.test)
    assert [len(p) for p in parts] == [40, 30, 20]
    for i in range(3):
        for j in range(i + 1, 3):
            same = (parts[i].problem.rhs[:, None, :] == parts[j].problem.rhs[None, :, :])
            assert not same.all(dim=-1).any(), (i, j)
    again = ms.make_splits(poisson16, 40, 30, 20, seed=3)
    assert torch.equal(again.test.problem.rhs, splits.test.problem.rhs)
    other = ms.make_splits(poisson16, 40, 30, 20, seed=4)
    assert not torch.equal(other.train.problem.rhs, splits.train.problem.rhs)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_exact_solution_solves_the_system(p):
    family = ms.Poisson1DFamily(n=16, p=p)
    tasks = family.sample(50, seed=1)
    problem = tasks.problem
    residual = problem.rhs - problem.solution @ problem.matrix.T
    rel = torch.linalg.vector_norm(residual, dim=1) / torch.linalg.vector_norm(problem.rhs, dim=1)
    assert rel.max() < 1e-10
    direct = torch.linalg.solve(problem.matrix, problem.rhs.T).T
    assert torch.allclose(direct, problem.solution, rtol=0, atol=1e-10)
    h = 1.0 / 17
    assert torch.allclose(tasks.features, problem.rhs * h**2)
    assert family.feature_dim == 16


def test_matrix_is_the_finite_difference_laplacian():
    n = 16
    h = 1.0 / (n + 1)
    A = poisson1d_matrix(n)
    assert A.shape == (n, n) and A.dtype == torch.float64
    assert torch.allclose(torch.diagonal(A), torch.full((n,), 2 / h**2, dtype=torch.float64))
    assert torch.allclose(torch.diagonal(A, 1), torch.full((n - 1,), -1 / h**2,
                                                           dtype=torch.float64))
    assert torch.count_nonzero(A) == 3 * n - 2
    # -u'' of u = sin(pi x) is pi^2 sin(pi x), to second order in h.
    x = torch.arange(1, n + 1, dtype=torch.float64) * h
    u = torch.sin(math.pi * x)
    assert torch.allclose(A @ u, math.pi**2 * u, rtol=1e-2)


@pytest.mark.parametrize("n", [4, 16, 31])
def test_sine_basis_is_orthonormal_eigenbasis(n):
    V = ms.sine_basis(n)
    assert torch.allclose(V.T @ V, torch.eye(n, dtype=torch.float64), atol=1e-12)
    h = 1.0 / (n + 1)
    mu = 4 * torch.sin(torch.arange(1, n + 1, dtype=torch.float64) * math.pi * h / 2) ** 2 / h**2
    A = poisson1d_matrix(n)
    assert torch.allclose(A @ V, V * mu, rtol=0, atol=1e-10 * float(mu.max()))


def test_mode_distributions():
    family0 = ms.Poisson1DFamily(n=16, p=0.0)
    family1 = ms.Poisson1DFamily(n=16, p=1.0)
    V = ms.sine_basis(16)
    c0 = family0.sample(4000, seed=2).problem.solution @ V
    c1 = family1.sample(4000, seed=2).problem.solution @ V
    # P2 (eq. 44): s_i = 1 - |N + 1 - 2i| / (N - 1) vanishes on the first and last modes.
    assert c0[:, [0, 15]].abs().max() < 1e-12
    i = torch.arange(1, 17, dtype=torch.float64)
    s1 = (17 - 2 * i).abs() / 15
    # P1 (eq. 43): standard deviation s_i, largest on the extreme modes.
    assert torch.allclose(c1.std(dim=0), s1, rtol=0.08)
    assert torch.allclose(c0.std(dim=0), 1 - s1, rtol=0.08, atol=1e-12)


def test_zero_guess_jacobi_matches_paper_table3_baseline():
    """``Psi_base`` of the GBMS paper's Table 3, p = 0: 28.17, 92.54, 158.41, 224.28."""
    family = ms.Poisson1DFamily(n=16, p=0.0)
    tasks = family.sample(1000, seed=0)
    with torch.no_grad():
        sol = ms.run(ms.Jacobi(), tasks.problem, rtol=1e-8, maxiter=20000, monitor="error")
    assert bool(sol.converged.all())
    paper = {1e-2: 28.17, 1e-4: 92.54, 1e-6: 158.41, 1e-8: 224.28}
    for eps, expected in paper.items():
        mean = float(sol.iterations_to(eps).double().mean())
        assert abs(mean - expected) < 2, (eps, mean, expected)
    at_1e6 = ms.run(ms.Jacobi(), tasks.problem, rtol=1e-6, maxiter=20000, monitor="error")
    assert abs(float(at_1e6.iterations.double().mean()) - 158.41) < 2


def test_task_batch_index(poisson16):
    tasks = poisson16.sample(10, seed=0)
    sub = tasks.index(torch.tensor([1, 3, 5]))
    assert len(sub) == 3
    assert torch.equal(sub.problem.rhs, tasks.problem.rhs[[1, 3, 5]])
    assert torch.equal(sub.problem.solution, tasks.problem.solution[[1, 3, 5]])
    assert torch.equal(sub.features, tasks.features[[1, 3, 5]])
