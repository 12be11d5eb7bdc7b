"""Constrained output heads and meta-solvers."""

from __future__ import annotations

import pytest
import torch
from reference import DTYPE, randn

import metasolve as ms


def test_interval_head_stays_inside_its_interval():
    head = ms.IntervalHead(1.0, 2.0)
    z = torch.linspace(-20, 20, 101, dtype=DTYPE).unsqueeze(1)
    theta = head(z)
    assert theta.shape == (101,)
    assert (theta > 1.0).all() and (theta < 2.0).all()
    assert torch.all(theta[1:] > theta[:-1])
    assert torch.isclose(head(torch.zeros(1, 1, dtype=DTYPE)), torch.tensor(1.5, dtype=DTYPE))
    other = ms.IntervalHead(-0.5, 0.25)
    out = other(randn(200, 1, seed=1) * 5)
    assert (out > -0.5).all() and (out < 0.25).all()


def test_positive_head_is_positive():
    head = ms.PositiveHead()
    z = torch.linspace(-30, 30, 121, dtype=DTYPE).unsqueeze(1)
    assert (head(z) > 0).all()
    shifted = ms.PositiveHead(minimum=0.5)
    assert (shifted(z) > 0.5).all()
    assert torch.allclose(shifted(z), torch.nn.functional.softplus(z[:, 0]) + 0.5)


def test_basis_head_is_basis_times_coefficients():
    basis = randn(6, 4, seed=2)
    head = ms.BasisHead(basis)
    assert head.n_outputs == 4
    z = randn(3, 4, seed=3)
    out = head(z)
    assert out.shape == (3, 6)
    for i in range(3):
        assert torch.allclose(out[i], basis @ z[i])
    basis.zero_()  # the head keeps its own copy
    assert torch.allclose(head(z), out)


def test_identity_head():
    z = randn(3, 5)
    assert torch.equal(ms.IdentityHead(5)(z), z)


def test_network_metasolver_splits_outputs_between_heads():
    torch.manual_seed(0)
    psi = ms.NetworkMetaSolver(3, {"x0": ms.IdentityHead(4), "omega": ms.IntervalHead(0.5, 1.5)},
                               hidden=(7,), activation="tanh")
    assert psi.n_outputs == 5
    features = randn(6, 3, seed=4)
    out = psi(features)
    z = psi.net(features)
    # Heads take their columns in name order ("omega" before "x0"), whatever order they came in.
    assert list(psi.heads) == ["omega", "x0"]
    assert torch.allclose(out["omega"], 0.5 + torch.sigmoid(z[:, 0]))
    assert torch.allclose(out["x0"], z[:, 1:])


def test_zero_init_network_predicts_head_of_zero():
    psi = ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16))}, zero_init=True)
    out = psi(randn(5, 16, seed=5))["x0"]
    assert torch.equal(out, torch.zeros(5, 16, dtype=DTYPE))


def test_feature_scale_divides_the_features():
    torch.manual_seed(0)
    scale = torch.arange(1, 5, dtype=DTYPE)
    scaled = ms.NetworkMetaSolver(4, {"x0": ms.IdentityHead(2)}, feature_scale=scale)
    torch.manual_seed(0)
    plain = ms.NetworkMetaSolver(4, {"x0": ms.IdentityHead(2)})
    f = randn(3, 4, seed=6)
    assert torch.allclose(scaled(f)["x0"], plain(f / scale)["x0"])


def test_constant_metasolver_is_the_same_for_every_task():
    psi = ms.ConstantMetaSolver({"omega": ms.PositiveHead(), "x0": ms.IdentityHead(3)},
                                init={"omega": 2.0, "x0": [1.0, 2.0, 3.0]})
    out = psi(torch.zeros(4, 7, dtype=DTYPE))
    assert torch.allclose(out["omega"], torch.nn.functional.softplus(torch.tensor(2.0,
                                                                                  dtype=DTYPE)))
    assert torch.equal(out["x0"], torch.tensor([[1.0, 2.0, 3.0]] * 4, dtype=DTYPE))
    # Its one parameter vector receives gradient from every task.
    out["omega"].sum().backward()
    assert psi.z.grad is not None and psi.z.grad[0] != 0


def test_heads_and_metasolvers_reject_bad_configuration():
    with pytest.raises(ValueError, match="low"):
        ms.IntervalHead(float("nan"), 2.0)
    with pytest.raises(ValueError, match="low < high"):
        ms.IntervalHead(2.0, 1.0)
    with pytest.raises(ValueError, match="minimum"):
        ms.PositiveHead(float("inf"))
    with pytest.raises(TypeError, match="hidden"):
        ms.NetworkMetaSolver(4, {"x0": ms.IdentityHead(4)}, hidden=(2.7,))
    with pytest.raises(ValueError, match="feature_scale"):
        ms.NetworkMetaSolver(2, {"x0": ms.IdentityHead(2)},
                             feature_scale=torch.tensor([1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="not heads"):
        ms.ConstantMetaSolver({"omega": ms.IntervalHead(0, 2)}, init={"omgea": 0.0})
    with pytest.raises(ValueError, match="entries"):
        ms.ConstantMetaSolver({"x0": ms.IdentityHead(3)}, init={"x0": [1.0, 2.0]})


def test_bounded_head_is_a_scaled_tanh():
    head = ms.BoundedHead(3, bound=0.5)
    z = randn(10, 3, seed=4) * 10
    out = head(z)
    assert out.shape == (10, 3)
    assert (out.abs() <= 0.5).all()
    torch.testing.assert_close(out, 0.5 * torch.tanh(z))
    with pytest.raises(ValueError, match="bound"):
        ms.BoundedHead(3, bound=0.0)


def test_head_bias_sets_the_initial_output_of_one_head():
    heads = {"log_guess_shift": ms.BoundedHead(3), "relaxation": ms.IntervalHead(1.0, 2.0)}
    psi = ms.NetworkMetaSolver(7, heads, hidden=(8,), zero_init=True,
                               head_bias={"relaxation": -1.0})
    out = psi(randn(5, 7, seed=5))
    torch.testing.assert_close(out["relaxation"],
                               torch.full((5,), 1 + 1 / (1 + torch.e), dtype=DTYPE))
    torch.testing.assert_close(out["log_guess_shift"], torch.zeros(5, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="head_bias names"):
        ms.NetworkMetaSolver(7, heads, head_bias={"omega": 1.0})
    with pytest.raises(ValueError, match="head_bias"):
        ms.NetworkMetaSolver(7, heads, head_bias={"relaxation": float("nan")})


def test_gauss_newton_refuses_a_head_placed_on_each_problem():
    family = ms.GridDiffusionFamily(n=6, features="field", exact=True)
    psi = ms.NetworkMetaSolver(family.feature_dim, {"x0": ms.GridSineHead(2)}, hidden=(4,))
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=family, monitor="error")
    splits = ms.make_splits(family, n_train=4, n_validation=2, n_test=1, seed=0)
    trainer = ms.Trainer(solver, ms.FixedIterationLoss(m=0), ms.TrainingConfig(epochs=1),
                         progress=False)
    with pytest.raises(ValueError, match="evaluated on each problem"):
        trainer.refine_gauss_newton(splits.train, splits.validation, ms.GaussNewtonConfig())
