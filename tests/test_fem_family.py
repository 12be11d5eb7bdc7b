"""A user's finite-element family (``ms.FiniteElementFamily``, scikit-fem): every task's
matrix and load equal scikit-fem's own assembly and condensation, the batch shares one pattern,
solves agree with SciPy's sparse direct solver, and bad subclasses fail with clear errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch

import metasolve as ms

skfem = pytest.importorskip("skfem")
from skfem.helpers import dot, grad  # noqa: E402


@skfem.BilinearForm
def diffusion(u, v, w):
    return w["k"] * dot(grad(u), grad(v))


class SquareDiffusion(ms.FiniteElementFamily):
    """``-div(k grad u) = f`` on the unit square, P1 triangles, ``log k = a1 sin(pi x) +
    a2 cos(pi y)``, ``f = 1 + a3 x``."""

    name = "test-square-diffusion"
    bilinear_form = diffusion

    def __init__(self, refine: int = 3):
        self.refine = refine

    def config(self):
        return {"refine": self.refine}

    def basis(self):
        return skfem.Basis(skfem.MeshTri().refined(self.refine), skfem.ElementTriP1())

    def sample_parameters(self, count, generator):
        return 2 * torch.rand(count, 3, generator=generator, dtype=torch.float64) - 1

    def coefficient(self, params, x):
        a = params.numpy()
        return np.exp(a[:, 0, None, None] * np.sin(math.pi * x[0])
                      + a[:, 1, None, None] * np.cos(math.pi * x[1]))

    def load(self, params, x):
        return 1 + params.numpy()[:, 2, None, None] * x[0]


def _reference(family, params_row):
    """One task assembled and condensed by scikit-fem directly."""
    basis = family.basis()
    x = np.asarray(basis.global_coordinates())
    p = params_row.reshape(1, -1)
    a = skfem.asm(diffusion, basis, k=family.coefficient(p, x)[0])

    @skfem.LinearForm
    def load(v, w):
        return w["f"] * v

    b = skfem.asm(load, basis, f=family.load(p, x)[0])
    return skfem.condense(a, b, D=basis.get_dofs(), expand=False)


def test_every_task_is_scikit_fem_s_own_assembly():
    family = SquareDiffusion()
    tasks = family.sample(4, seed=0)
    problem = tasks.problem
    assert isinstance(problem.matrix, ms.SparseBatch)
    assert problem.matrix.values.shape == (4, family._assembly["nnz"])
    assert tasks.features.shape == (4, family.feature_dim) == (4, 3)
    dense = problem.matrix.to_dense()
    for i in range(4):
        a, b = _reference(family, tasks.features[i])
        np.testing.assert_allclose(dense[i].numpy(), a.toarray(), rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(problem.rhs[i].numpy(), b, rtol=1e-13, atol=1e-14)


def test_solves_agree_with_a_sparse_direct_solve():
    family = SquareDiffusion()
    tasks = family.sample(3, seed=1)
    solution = ms.run(ms.ConjugateGradient(), tasks.problem, rtol=1e-10, maxiter=2000)
    assert bool(solution.converged.all())
    for i in range(3):
        a, b = _reference(family, tasks.features[i])
        exact = scipy.sparse.linalg.spsolve(scipy.sparse.csc_matrix(a), b)
        np.testing.assert_allclose(solution.x[i].numpy(), exact, rtol=1e-7,
                                   atol=1e-9 * np.abs(exact).max())
    full = family.expand(solution.x)
    assert full.shape == (3, family.basis().N)
    assert np.all(full[:, family.basis().get_dofs().flatten()] == 0)


def test_sampling_is_reproducible():
    family = SquareDiffusion(refine=2)
    a, b = family.sample(5, seed=3), family.sample(5, seed=3)
    torch.testing.assert_close(a.problem.matrix.values, b.problem.matrix.values)
    torch.testing.assert_close(a.problem.rhs, b.problem.rhs)


def test_bad_subclasses_and_input_fail_clearly():
    class NoForm(SquareDiffusion):
        bilinear_form = None

    with pytest.raises(TypeError, match="bilinear_form"):
        NoForm().sample(2, seed=0)

    class NoCoefficient(ms.FiniteElementFamily):
        name = "test-no-coefficient"
        bilinear_form = diffusion

        def config(self):
            return {}

        def basis(self):
            return SquareDiffusion().basis()

        def sample_parameters(self, count, generator):
            return torch.zeros(count, 1, dtype=torch.float64)

    with pytest.raises(TypeError, match="coefficient"):
        NoCoefficient()

    class WrongShape(SquareDiffusion):
        def coefficient(self, params, x):
            return np.ones(x.shape[1:])

    with pytest.raises(ValueError, match=r"coefficient\(\) must return one value per task"):
        WrongShape().sample(2, seed=0)

    class NotFinite(SquareDiffusion):
        def coefficient(self, params, x):
            return np.full((params.shape[0], *x.shape[1:]), np.nan)

    with pytest.raises(ValueError, match=r"coefficient\(\) returned a non-finite value"):
        NotFinite().sample(2, seed=0)
    with pytest.raises(ValueError, match=r"params must be a \(B, P\) tensor, got \(3,\)"):
        SquareDiffusion().tasks_for(torch.zeros(3))
    with pytest.raises(ValueError, match="x must have shape"):
        SquareDiffusion().expand(torch.zeros(2, 5))


def test_without_scikit_fem_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skfem", None)  # import skfem now raises ImportError
    with pytest.raises(ImportError, match=r"metasolve\[fem\]"):
        SquareDiffusion().sample(2, seed=0)


def test_a_coefficient_that_vanishes_on_elements_keeps_the_shared_pattern():
    class HalfZero(SquareDiffusion):
        def coefficient(self, params, x):
            return np.where(x[0] < 0.5, super().coefficient(params, x), 0.0)

    family = HalfZero(refine=2)
    tasks = family.sample(2, seed=4)
    assert tasks.problem.matrix.values.shape == (2, SquareDiffusion(refine=2)._assembly["nnz"])
    dense = tasks.problem.matrix.to_dense()
    for i in range(2):
        a, _ = _reference(family, tasks.features[i])
        np.testing.assert_allclose(dense[i].numpy(), a.toarray(), rtol=1e-13, atol=1e-12)
