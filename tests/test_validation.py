"""Bad input fails early with an error that names the argument."""

from __future__ import annotations

import math

import pytest
import torch
from reference import DTYPE, diag_dominant, randn

import metasolve as ms

N, B = 6, 3


@pytest.fixture
def system():
    return ms.LinearSystem(diag_dominant(N, seed=31), randn(B, N, seed=32))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_rhs(bad):
    rhs = randn(B, N, seed=33)
    rhs[1, 2] = bad
    with pytest.raises(ValueError, match="rhs"):
        ms.LinearSystem(diag_dominant(N, seed=31), rhs)


def test_non_finite_matrix_and_solution():
    matrix = diag_dominant(N, seed=31)
    matrix[0, 1] = math.nan
    with pytest.raises(ValueError, match="matrix"):
        ms.LinearSystem(matrix, randn(B, N))
    sparse = diag_dominant(N, seed=31)
    sparse[2, 3] = math.inf
    with pytest.raises(ValueError, match="matrix"):
        ms.LinearSystem(sparse.to_sparse(), randn(B, N))
    solution = randn(B, N)
    solution[0, 0] = math.nan
    with pytest.raises(ValueError, match="solution"):
        ms.LinearSystem(diag_dominant(N), randn(B, N), solution=solution)


def test_shape_mismatches():
    with pytest.raises(ValueError, match="matrix"):
        ms.LinearSystem(diag_dominant(N + 1), randn(B, N))
    with pytest.raises(ValueError, match="matrix"):
        ms.LinearSystem(diag_dominant(N, batch=B + 1), randn(B, N))
    with pytest.raises(ValueError, match="matrix"):
        ms.LinearSystem(torch.zeros(N, N + 1, dtype=DTYPE), randn(B, N))
    with pytest.raises(ValueError, match="rhs"):
        ms.LinearSystem(diag_dominant(N), randn(N))
    with pytest.raises(ValueError, match="solution"):
        ms.LinearSystem(diag_dominant(N), randn(B, N), solution=randn(B, N + 1))
    with pytest.raises(TypeError, match="dtype"):
        ms.LinearSystem(diag_dominant(N).float(), randn(B, N))
    with pytest.raises(TypeError, match="rhs"):
        ms.LinearSystem(diag_dominant(N), randn(B, N).numpy())
    with pytest.raises(TypeError, match="rhs"):
        ms.LinearSystem(diag_dominant(N), torch.ones(B, N, dtype=torch.int64))


@pytest.mark.parametrize("shape", [(B, N + 1), (B + 1, N), (N,)])
def test_wrong_x0_shape(system, shape):
    with pytest.raises(ValueError, match="x0"):
        ms.run(ms.Jacobi(), system, x0=torch.zeros(*shape, dtype=DTYPE))
    with pytest.raises(ValueError, match="x0"):
        ms.run(ms.Jacobi(), system, params={"x0": torch.zeros(*shape, dtype=DTYPE)})


def test_non_finite_x0(system):
    x0 = torch.zeros(B, N, dtype=DTYPE)
    x0[0, 0] = math.nan
    with pytest.raises(ValueError, match="x0"):
        ms.run(ms.Jacobi(), system, x0=x0)


def test_x0_given_twice(system):
    x0 = torch.zeros(B, N, dtype=DTYPE)
    with pytest.raises(ValueError, match="x0"):
        ms.run(ms.Jacobi(), system, x0=x0, params={"x0": x0})


@pytest.mark.parametrize("name, value, error", [
    ("rtol", -1e-6, ValueError), ("rtol", math.nan, ValueError), ("atol", -1.0, ValueError),
    ("rtol", "1e-6", TypeError), ("maxiter", -1, ValueError), ("maxiter", 2.5, TypeError),
    ("fixed_iterations", -3, ValueError), ("truncate", 0, ValueError),
    ("monitor", "energy", ValueError), ("divergence_factor", -1.0, ValueError),
])
def test_bad_run_options_name_the_argument(system, name, value, error):
    with pytest.raises(error, match=name):
        ms.run(ms.Jacobi(), system, **{name: value})


def test_maxiter_and_fixed_iterations_conflict(system):
    with pytest.raises(ValueError, match="fixed_iterations"):
        ms.run(ms.Jacobi(), system, maxiter=5, fixed_iterations=6)


@pytest.mark.parametrize("bad, error, match", [
    (torch.tensor([1.0, 2.0, 3.0]), TypeError, "maxiter must hold integers"),
    (torch.tensor([1, -2, 3]), ValueError, "maxiter must be >= 0"),
    (torch.tensor([1, 2]), ValueError, "maxiter must hold one value per instance"),
    ([1, 2, 3], TypeError, "maxiter must be an int"),
])
def test_bad_per_instance_maxiter(system, bad, error, match):
    with pytest.raises(error, match=match):
        ms.run(ms.Jacobi(), system, maxiter=bad)


def test_per_instance_maxiter_and_fixed_iterations_conflict(system):
    with pytest.raises(ValueError, match="fixed_iterations"):
        ms.run(ms.Jacobi(), system, maxiter=torch.tensor([1, 2, 3]), fixed_iterations=3)


def test_unknown_run_option(system):
    with pytest.raises(TypeError, match="tol"):
        ms.run(ms.Jacobi(), system, tol=1e-6)


def test_unknown_params_key(system):
    with pytest.raises(TypeError, match="relaxation"):
        ms.run(ms.Jacobi(), system, params={"relaxation": torch.ones(B, dtype=DTYPE)})


def test_zero_diagonal_rejected_by_jacobi():
    matrix = diag_dominant(N, seed=34)
    matrix[3, 3] = 0.0
    with pytest.raises(ValueError, match="diagonal"):
        ms.run(ms.Jacobi(), ms.LinearSystem(matrix, randn(B, N)))
    with pytest.raises(ValueError, match="diagonal"):
        ms.run(ms.Jacobi(), ms.LinearSystem(matrix.to_sparse(), randn(B, N)))
    batched = diag_dominant(N, batch=B, seed=35)
    batched[2, 0, 0] = 0.0
    with pytest.raises(ValueError, match="diagonal"):
        ms.run(ms.Jacobi(), ms.LinearSystem(batched, randn(B, N)))


def test_error_monitor_without_solution(system):
    with pytest.raises(ValueError, match="solution"):
        ms.run(ms.Jacobi(), system, monitor="error")


def test_problem_of_the_wrong_type():
    with pytest.raises(TypeError, match="LinearSystem"):
        ms.run(ms.Jacobi(), object())


def test_bad_jacobi_omega():
    with pytest.raises(ValueError, match="omega"):
        ms.Jacobi(omega=0.0)
    with pytest.raises(ValueError, match="omega"):
        ms.Jacobi(omega=-1.0)


def test_metasolver_feature_width():
    psi = ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16))})
    with pytest.raises(ValueError, match="features"):
        psi(torch.zeros(4, 15, dtype=DTYPE))
    with pytest.raises(ValueError, match="features"):
        psi(torch.zeros(16, dtype=DTYPE))
    with pytest.raises(ValueError, match="features"):
        psi(torch.full((4, 16), math.nan, dtype=DTYPE))
    assert psi(torch.zeros(4, 16, dtype=DTYPE))["x0"].shape == (4, 16)


def test_learned_solver_consistency_checks():
    family = ms.Poisson1DFamily(n=16)
    with pytest.raises(ValueError, match="features"):
        ms.LearnedSolver(ms.Jacobi(), ms.NetworkMetaSolver(8, {"x0": ms.IdentityHead(16)}),
                         family=family)
    with pytest.raises(ValueError, match="shift"):
        ms.LearnedSolver(ms.Jacobi(), ms.ConstantMetaSolver({"shift": ms.PositiveHead()}))
    with pytest.raises(TypeError, match="method"):
        ms.LearnedSolver("jacobi", ms.ConstantMetaSolver({"omega": ms.PositiveHead()}))
    with pytest.raises(ValueError, match="monitor"):
        ms.LearnedSolver(ms.Jacobi(), ms.ConstantMetaSolver({"omega": ms.PositiveHead()}),
                         monitor="energy")
    solver = ms.LearnedSolver(ms.Jacobi(), ms.ConstantMetaSolver({"omega": ms.PositiveHead()}))
    with pytest.raises(TypeError, match="tasks"):
        solver.solve(family.sample(2).problem)


def test_bad_head_and_network_arguments():
    with pytest.raises(ValueError, match="low < high"):
        ms.IntervalHead(2.0, 1.0)
    with pytest.raises(ValueError, match="activation"):
        ms.NetworkMetaSolver(4, {"x0": ms.IdentityHead(4)}, activation="swish")
    with pytest.raises(ValueError, match="head"):
        ms.ConstantMetaSolver({})
    with pytest.raises(ValueError, match="basis"):
        ms.BasisHead(torch.zeros(4, dtype=DTYPE))


def test_bad_family_and_training_arguments():
    with pytest.raises(ValueError, match="p"):
        ms.Poisson1DFamily(n=16, p=1.5)
    with pytest.raises(ValueError, match="n"):
        ms.Poisson1DFamily(n=1)
    with pytest.raises(ValueError, match="n_validation"):
        ms.make_splits(ms.Poisson1DFamily(n=4), 2, 0, 2)
    with pytest.raises(ValueError, match="batch_size"):
        ms.TrainingConfig(batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        ms.TrainingConfig(lr=-0.1)
    with pytest.raises(ValueError, match="betas"):
        ms.TrainingConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps"):
        ms.IterationSurrogateLoss(0.0, maxiter=10)
    with pytest.raises(ValueError, match="m"):
        ms.FixedIterationLoss(-1)
