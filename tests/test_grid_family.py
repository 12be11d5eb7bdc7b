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
