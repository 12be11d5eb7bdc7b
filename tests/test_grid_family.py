"""The structured-grid diffusion family: its matrices against a loop-built reference, features
that do not depend on the grid size, SOR over it against SciPy, and a learned relaxation factor
that applies at a larger grid than trained and refuses tasks it cannot read."""

import math

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

import metasolve as ms
from metasolve.tasks.grid_diffusion import GridDiffusionFamily, log_coefficient


def reference_matrix(family, params):
    """Dense ``A`` of one task, entry by entry from the stencil's definition."""
    n, dim = family.n, family.dim
    h = 1.0 / (n + 1)

    def k(point):
        coords = [torch.tensor([c], dtype=torch.float64) for c in point]
        return math.exp(float(log_coefficient(family.coefficient, params[None], coords,
                                              family.modes)[0, 0]))

    size = n ** dim
    a = np.zeros((size, size))
    for r in range(size):
        index = [(r // n ** axis) % n for axis in range(dim)]
        point = [(i + 1) * h for i in index]
        for axis in range(dim):
            for step in (-1, 1):
                face = list(point)
                face[axis] += step * h / 2
                value = k(face) / h ** 2
                a[r, r] += value
                neighbour = list(index)
                neighbour[axis] += step
                if 0 <= neighbour[axis] < n:
                    c = sum(i * n ** ax for ax, i in enumerate(neighbour))
                    a[r, c] -= value
    return a


@pytest.mark.parametrize("dim,n,coefficient", [(2, 5, "sincos"), (2, 4, "fourier"),
                                               (3, 3, "sincos"), (3, 3, "fourier")])
def test_matrix_matches_reference_and_is_spd(dim, n, coefficient):
    family = GridDiffusionFamily(n=n, dim=dim, coefficient=coefficient)
    generator = torch.Generator().manual_seed(3)
    params = family.sample_parameters(2, generator)
    tasks = family.tasks_for(params)
    for b in range(2):
        built = family.scipy_matrix(tasks.problem.matrix.values[b]).toarray()
        expected = reference_matrix(family, params[b])
        np.testing.assert_allclose(built, expected, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(built, built.T, rtol=0, atol=1e-9)
        assert np.linalg.eigvalsh(built).min() > 0


def test_features_do_not_depend_on_n():
    small, large = GridDiffusionFamily(n=8), GridDiffusionFamily(n=40)
    params = small.sample_parameters(4, torch.Generator().manual_seed(0))
    a, b = small.tasks_for(params).features, large.tasks_for(params).features
    assert a.shape == b.shape == (4, small.feature_dim)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert torch.allclose(a[:, -1], torch.full((4,), math.log(9.0), dtype=torch.float64))
    assert torch.allclose(b[:, -1], torch.full((4,), math.log(41.0), dtype=torch.float64))
    # Different coefficients give different features.
    assert (a[0, :-1] - a[1, :-1]).abs().max() > 1e-3


def test_sampling_is_reproducible_and_random_load():
    family = GridDiffusionFamily(n=6, coefficient="fourier", load="random")
    one, two = family.sample(3, seed=5), family.sample(3, seed=5)
    torch.testing.assert_close(one.problem.matrix.values, two.problem.matrix.values)
    torch.testing.assert_close(one.problem.rhs, two.problem.rhs)
    assert not torch.allclose(one.problem.rhs, torch.ones_like(one.problem.rhs))
    rebuilt = ms.tasks.family_from_config(family.name, family.config())
    assert rebuilt.config() == family.config()


@pytest.mark.parametrize("coefficient", ["sincos", "fourier"])
def test_sor_converges_and_agrees_with_spsolve(coefficient):
    family = GridDiffusionFamily(n=12, coefficient=coefficient)
    tasks = family.sample(3, seed=1)
    omega = 2 / (1 + math.sin(math.pi / 13))
    sol = ms.run(ms.SOR(omega), tasks.problem, rtol=1e-10, maxiter=2000)
    assert bool(sol.converged.all())
    for b in range(3):
        matrix = family.scipy_matrix(tasks.problem.matrix.values[b]).tocsc()
        expected = scipy.sparse.linalg.spsolve(matrix, tasks.problem.rhs[b].numpy())
        np.testing.assert_allclose(sol.x[b].numpy(), expected, rtol=1e-8,
                                   atol=1e-8 * np.abs(expected).max())


def _learned_solver(family):
    psi = ms.NetworkMetaSolver(family.feature_dim, {"omega": ms.IntervalHead(1.0, 2.0)},
                               hidden=())
    with torch.no_grad():  # logit(omega - 1) = log(n + 1) - 1.8: near the textbook factor
        psi.net[-1].weight.zero_()
        psi.net[-1].weight[0, -1] = 1.0
        psi.net[-1].bias.fill_(-1.8)
    return ms.LearnedSolver(ms.SOR(), psi, family=family,
                            settings={"training_sizes": [8, 12]})


def test_learned_factor_applies_at_a_larger_grid_and_refuses_other_tasks(tmp_path):
    solver = _learned_solver(GridDiffusionFamily(n=12))
    path = solver.save(tmp_path / "grid.safetensors")
    loaded = ms.load(path)
    assert loaded.family.config()["n"] == 12
    large = GridDiffusionFamily(n=24).sample(2, seed=0)
    omega = loaded.params(large.features)["omega"]
    assert bool(((omega > 1.7) & (omega < 2)).all())
    sol = loaded.solve(large, safeguard=False, rtol=1e-6, maxiter=1000)
    assert bool(sol.converged.all())
    cube = GridDiffusionFamily(n=4, dim=3).sample(2, seed=0)
    with pytest.raises(ValueError, match=r"n=12.*training_sizes.*\[8, 12\]"):
        loaded.solve(cube, safeguard=False, rtol=1e-6, maxiter=100)


def test_field_features_are_log_k_on_the_reference_grid_at_every_n():
    small = GridDiffusionFamily(n=8, coefficient="fourier", features="field")
    large = GridDiffusionFamily(n=40, coefficient="fourier", features="field")
    params = small.sample_parameters(3, torch.Generator().manual_seed(2))
    a, b = small.tasks_for(params).features, large.tasks_for(params).features
    assert a.shape == (3, 256) and small.feature_dim == 256
    torch.testing.assert_close(a, b)
    # Entry (j, i) of the 16 x 16 picture, the first axis fastest, is log k at the cell
    # centre ((i + 1/2) / 16, (j + 1/2) / 16).
    i, j = 3, 11
    point = [torch.tensor([(i + 0.5) / 16], dtype=torch.float64),
             torch.tensor([(j + 0.5) / 16], dtype=torch.float64)]
    expected = log_coefficient("fourier", params, point, small.modes)[:, 0]
    torch.testing.assert_close(a[:, j * 16 + i], expected)
    randomised = GridDiffusionFamily(n=6, features="field", load="random")
    tasks = randomised.sample(2, seed=0)
    assert tasks.features.shape == (2, 258) == (2, randomised.feature_dim)
    with pytest.raises(ValueError, match="load parameters"):
        randomised.features_of(randomised.sample_parameters(2, torch.Generator()))
    with pytest.raises(ValueError, match="features"):
        GridDiffusionFamily(n=6, features="picture")
    with pytest.raises(TypeError, match="exact"):
        GridDiffusionFamily(n=6, exact=1)


def test_exact_solutions_agree_with_spsolve():
    family = GridDiffusionFamily(n=7, coefficient="fourier", load="random", exact=True)
    tasks = family.sample(2, seed=4)
    for b in range(2):
        matrix = family.scipy_matrix(tasks.problem.matrix.values[b]).tocsc()
        expected = scipy.sparse.linalg.spsolve(matrix, tasks.problem.rhs[b].numpy())
        np.testing.assert_allclose(tasks.problem.solution[b].numpy(), expected, rtol=1e-12)
    assert GridDiffusionFamily(n=7).sample(1, seed=0).problem.solution is None


def _sine_series(coefficients, n, modes, dim):
    """The sine series at the grid points, term by term (the first axis fastest)."""
    h = 1.0 / (n + 1)
    out = torch.zeros(n ** dim, dtype=torch.float64)
    for r in range(n ** dim):
        x = [((r // n ** axis) % n + 1) * h for axis in range(dim)]
        for c in range(modes ** dim):
            p = [(c // modes ** axis) % modes + 1 for axis in range(dim)]
            term = coefficients[c]
            for axis in range(dim):
                term = term * math.sin(math.pi * p[axis] * x[axis])
            out[r] += term
    return out


@pytest.mark.parametrize("dim,modes,n", [(2, 3, 5), (3, 2, 3)])
def test_grid_sine_head_evaluates_its_series_on_any_grid(dim, modes, n):
    head = ms.GridSineHead(modes, dim=dim)
    z = torch.randn(2, modes ** dim, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    theta = head(z)
    # Outputs are scaled by the Laplacian's inverse eigenvalue of each mode.
    wavenumbers = [[(c // modes ** axis) % modes + 1 for axis in range(dim)]
                   for c in range(modes ** dim)]
    scale = torch.tensor([1 / (math.pi ** 2 * sum(p * p for p in w)) for w in wavenumbers],
                         dtype=torch.float64)
    torch.testing.assert_close(theta, z * scale)
    problem = GridDiffusionFamily(n=n, dim=dim).sample(2, seed=0).problem
    placed = head.place(theta, problem)
    assert placed.shape == (2, n ** dim)
    for b in range(2):
        torch.testing.assert_close(placed[b], _sine_series(theta[b], n, modes, dim))
    assert torch.autograd.gradcheck(lambda t: head.place(t, problem), (theta.clone()
                                                                        .requires_grad_(),))
    with pytest.raises(ValueError, match=r"n\^2 unknowns.*got 10"):
        ms.GridSineHead(2).place(torch.zeros(1, 4, dtype=torch.float64),
                                 ms.LinearSystem(torch.eye(10)[None], torch.ones(1, 10)))


def test_grid_sine_head_guess_on_a_larger_grid_than_trained(tmp_path):
    family = GridDiffusionFamily(n=12, coefficient="fourier", features="field", exact=True)
    torch.manual_seed(0)
    psi = ms.NetworkMetaSolver(family.feature_dim, {"x0": ms.GridSineHead(4)}, hidden=(16,),
                               zero_init=True)
    solver = ms.LearnedSolver(ms.SOR(1.6), psi, family=family, monitor="error")
    splits = ms.make_splits(family, n_train=48, n_validation=16, n_test=1, seed=0)
    history = ms.Trainer(solver, ms.FixedIterationLoss(m=0, squared=False),
                         ms.TrainingConfig(epochs=15, batch_size=16, lr=1e-2),
                         progress=False).fit(splits.train, splits.validation)
    # From the zero guess (relative error 1) to a guess much closer to the solution.
    assert history.best_validation_loss < 0.5
    loaded = ms.load(solver.save(tmp_path / "guess.safetensors"))
    large = GridDiffusionFamily(n=30, coefficient="fourier", features="field").sample(
        3, seed=9)
    with pytest.raises(ValueError, match="problem is needed"):
        loaded.params(large.features)
    guess = loaded.params(large.features, large.problem)["x0"]
    assert guess.shape == (3, 900)
    omega = 2 / (1 + math.sin(math.pi / 31))
    with torch.no_grad():
        learned = loaded.deployed(ms.SOR(omega)).solve(large, rtol=1e-8, maxiter=3000,
                                                       monitor="residual")
    zero = ms.run(ms.SOR(omega), large.problem, rtol=1e-8, maxiter=3000)
    assert bool(learned.converged.all()) and not bool(learned.fallback.any())
    assert int(learned.iterations.sum()) < int(zero.iterations.sum())
    torch.testing.assert_close(learned.x, zero.x, rtol=0, atol=1e-7)
