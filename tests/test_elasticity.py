"""The clamped elastic beam family (GBMS paper, sec. 4.2): assembly against scikit-fem's own
linear-elasticity form, SPD matrices, the clamped unknowns, physics, sampling and validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metasolve as ms
from metasolve.tasks import family_from_config
from metasolve.tasks.elasticity import GRAVITY, beam_mesh, beam_numbering


@pytest.fixture(scope="module")
def family():
    return ms.ElasticBeamFamily()


def _params(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _skfem_system(cells, width, lam, mu, rho):
    """The beam assembled directly by scikit-fem on the mesh of width ``W``, our numbering,
    clamped unknowns eliminated."""
    from skfem import Basis, ElementHex1, ElementVector, LinearForm, asm
    from skfem.models.elasticity import linear_elasticity

    basis = Basis(beam_mesh(cells, width), ElementVector(ElementHex1()))
    perm = beam_numbering(basis)

    @LinearForm
    def gravity(v, w):
        return -rho * GRAVITY * v[2]

    matrix = asm(linear_elasticity(lam, mu), basis).toarray()[np.ix_(perm, perm)]
    rhs = asm(gravity, basis)[perm]
    clamped = np.isin(perm, basis.get_dofs(lambda x: np.isclose(x[0], 0.0)).all())
    free = np.flatnonzero(~clamped)
    return matrix[np.ix_(free, free)], rhs[free], clamped


@pytest.mark.parametrize("cells", [(8, 2, 2), (3, 2, 1)])
def test_assembly_matches_scikit_fem_linear_elasticity(cells):
    params = _params((0.05, 2.0, 0.7, 3.0), (0.004, 0.15, 8.0, 0.2))
    family = ms.ElasticBeamFamily(cells=cells, clamped="eliminate")
    tasks = family.tasks(params)
    for i, row in enumerate(params.tolist()):
        matrix, rhs, _ = _skfem_system(cells, *row)
        ours = tasks.problem.matrix[i].numpy()
        assert np.allclose(ours, matrix, rtol=0, atol=1e-7 * abs(matrix).max())
        assert np.allclose(tasks.problem.rhs[i].numpy(), rhs, rtol=0, atol=1e-7 * abs(rhs).max())


def test_clamped_unknowns_kept_as_identity_rows(family):
    assert family.size == 243  # the paper's N: 3 unknowns on each of 9 x 3 x 3 nodes
    params = _params((0.05, 2.0, 0.7, 3.0))
    kept = family.tasks(params).problem
    eliminated = ms.ElasticBeamFamily(clamped="eliminate")
    assert eliminated.size == 243 - 27
    _, _, clamped = _skfem_system((8, 2, 2), 0.05, 2.0, 0.7, 3.0)
    clamped = torch.from_numpy(clamped)
    block = kept.matrix[0][clamped][:, clamped]
    assert torch.equal(block, torch.eye(27, dtype=torch.float64))
    assert not kept.matrix[0][clamped][:, ~clamped].any()
    assert not kept.rhs[0][clamped].any()
    free = eliminated.tasks(params).problem
    assert torch.equal(kept.matrix[0][~clamped][:, ~clamped], free.matrix[0])
    # The identity block is decoupled with a zero right-hand side: ICCG runs the same iteration
    # up to rounding (the two add in different orders; on this ill-conditioned system, CG's
    # loss of orthogonality lets the difference grow from 1e-13 to order one after ~80 steps).
    alpha = {"alpha": torch.tensor([0.05], dtype=torch.float64)}
    a = ms.run(ms.ICCG(), kept, params=alpha, rtol=1e-6, maxiter=243)
    b = ms.run(ms.ICCG(), free, params=alpha, rtol=1e-6, maxiter=243)
    assert abs(int(a.iterations) - int(b.iterations)) <= 1
    assert torch.allclose(a.residual_history[:40], b.residual_history[:40], rtol=1e-9, atol=0)
    assert torch.allclose(a.x[0][~clamped], b.x[0], rtol=0, atol=1e-5 * b.x.abs().max())


def test_matrices_are_symmetric_positive_definite(family):
    low, high = 0.003, 0.3
    corners = _params((low, 0.1, 10.0, 1.0), (high, 10.0, 0.1, 1.0), (low, 10.0, 10.0, 10.0))
    for tasks in (family.sample(6, seed=3), family.tasks(corners)):
        matrix = tasks.problem.matrix
        assert torch.allclose(matrix, matrix.mT, rtol=0, atol=1e-14 * matrix.abs().max())
        assert (torch.linalg.eigvalsh(matrix)[:, 0] > 0).all()


def test_tip_deflection_against_euler_bernoulli():
    """Gravity bends the beam down by about ``w = q L^4 / (8 E I)``, ``q = rho g W^2``,
    ``I = W^4 / 12``. Trilinear hexahedra lock in bending (too stiff), badly on the 8 x 2 x 2
    mesh (about 0.6 w), less on a finer one (about 0.85 w on 16 x 2 x 2)."""
    width, lam, mu, rho = 0.1, 1.0, 1.0, 1.0
    young = mu * (3 * lam + 2 * mu) / (lam + mu)
    beam = rho * GRAVITY * width**2 / (8 * young * width**4 / 12)
    for cells, (low, high) in (((8, 2, 2), (0.5, 0.8)), ((16, 2, 2), (0.8, 1.05))):
        problem = ms.ElasticBeamFamily(cells=cells).tasks(_params((width, lam, mu, rho))).problem
        u = torch.linalg.solve(problem.matrix, problem.rhs)[0].reshape(-1, 3)
        tip = u[:, 2].min()
        assert tip < 0  # downwards
        assert low < -tip / beam < high, (cells, float(-tip / beam))
        assert u[:, 2].argmin() >= len(u) - 9  # at the free end (x slowest in the numbering)


def test_sampling_is_reproducible_and_in_range(family):
    a, b, c = family.sample(5, seed=1), family.sample(5, seed=1), family.sample(5, seed=2)
    assert torch.equal(a.problem.matrix, b.problem.matrix) and torch.equal(a.features,
                                                                           b.features)
    assert not torch.equal(a.features, c.features)
    params = family.sample_parameters(2000, torch.Generator().manual_seed(0))
    for j, (low, high) in enumerate(((0.003, 0.3), (0.1, 10), (0.1, 10), (0.1, 10))):
        assert low <= params[:, j].min() and params[:, j].max() <= high
        # log-uniform: the log's mean is the middle of the log range
        middle = (np.log(low) + np.log(high)) / 2
        assert abs(float(params[:, j].log().mean()) - middle) < 0.1
    features = family.tasks(params[:200]).features
    assert features.shape == (200, 7)
    assert features.abs().max() <= 1.05
    expected_width = (torch.log10(params[:200, 0]) - np.log10(0.03)) / 1.0
    assert torch.allclose(features[:, 0], expected_width)


def test_family_is_registered_and_rebuilds_from_config(family):
    again = family_from_config("elastic_beam", family.config())
    assert again.config() == family.config()
    assert torch.equal(again.sample(2, seed=4).problem.matrix,
                       family.sample(2, seed=4).problem.matrix)


@pytest.mark.parametrize("row, name", [((0.0, 1.0, 1.0, 1.0), "W"),
                                       ((-0.1, 1.0, 1.0, 1.0), "W"),
                                       ((0.1, float("nan"), 1.0, 1.0), "lam"),
                                       ((0.1, 1.0, 0.0, 1.0), "mu"),
                                       ((0.1, 1.0, 1.0, float("inf")), "rho")])
def test_bad_parameters_raise(family, row, name):
    with pytest.raises(ValueError, match=rf"\({name}\)"):
        family.tasks(_params(row))


def test_fixed_section_reading_keeps_the_mesh_and_puts_w_in_the_load():
    """``section=S``: every beam is the ``S x S`` beam (the matrix of the first reading at
    ``W = S``), and ``W`` only scales gravity by ``W^2``."""
    fixed = ms.ElasticBeamFamily(section=0.2)
    follows = ms.ElasticBeamFamily()
    params = _params((0.05, 2.0, 0.7, 3.0), (0.004, 0.15, 8.0, 0.2))
    at_section = params.clone()
    at_section[:, 0] = 0.2
    ours, theirs = fixed.tasks(params).problem, follows.tasks(at_section).problem
    assert torch.equal(ours.matrix, theirs.matrix)
    scale = (params[:, 0] ** 2).unsqueeze(1)  # the tutorial's gravity (W / L)^2 g, L = 1
    assert torch.allclose(ours.rhs, theirs.rhs * scale, rtol=1e-14, atol=0)
    # The matrix does not depend on W, so neither do the matrix-norm features.
    assert torch.allclose(fixed.tasks(params).features[0, 4:],
                          fixed.tasks(at_section).features[0, 4:], rtol=1e-12, atol=1e-12)
    assert fixed.config()["section"] == 0.2 and follows.config()["section"] is None
    again = family_from_config("elastic_beam", fixed.config())
    assert torch.equal(again.sample(2, seed=3).problem.matrix,
                       fixed.sample(2, seed=3).problem.matrix)
    with pytest.raises(ValueError, match="section"):
        ms.ElasticBeamFamily(section=0.0)


def test_bad_family_arguments_raise():
    with pytest.raises(ValueError, match="width_range"):
        ms.ElasticBeamFamily(width_range=(0.0, 0.3))
    with pytest.raises(ValueError, match="mu_range"):
        ms.ElasticBeamFamily(mu_range=(10.0, 0.1))
    with pytest.raises(ValueError, match="cells"):
        ms.ElasticBeamFamily(cells=(8, 2))
    with pytest.raises(ValueError, match="clamped"):
        ms.ElasticBeamFamily(clamped="free")
    with pytest.raises(ValueError, match="params"):
        ms.ElasticBeamFamily().tasks(torch.ones(2, 3, dtype=torch.float64))
