"""Newton-SOR on Robertson's backward-Euler steps (GBMS paper, sec. 4.1): answers against SciPy,
the step against its textbook formula, statuses, gradients and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import metasolve as ms
from metasolve.solution import Status
from metasolve.solvers import base
from metasolve.tasks.robertson import RobertsonStep, robertson_trajectory

DTYPE = torch.float64


@pytest.fixture(scope="module")
def tasks():
    # Every 8th step of two rate sets (the paper's 100 steps from 1e-6 to 1e3): small and large
    # steps, stiff and mild rates.
    return ms.RobertsonFamily().sample(200, seed=3).index(slice(0, 200, 8))


def newton_root(problem: RobertsonStep, i: int) -> np.ndarray:
    """Plain dense Newton in NumPy (full Jacobian solves), iterated to round-off."""
    c = problem.rates[i].numpy()
    h = float(problem.step[i])
    yn = problem.previous[i].numpy()
    y = yn.copy()
    for _ in range(100):
        f = np.array([-c[0] * y[0] + c[2] * y[1] * y[2],
                      c[0] * y[0] - c[1] * y[1] ** 2 - c[2] * y[1] * y[2], c[1] * y[1] ** 2])
        jf = np.array([[-c[0], c[2] * y[2], c[2] * y[1]],
                       [c[0], -2 * c[1] * y[1] - c[2] * y[2], -c[2] * y[1]],
                       [0.0, 2 * c[1] * y[1], 0.0]])
        y = y - np.linalg.solve(np.eye(3) - h * jf, y - h * f - yn)
    return y


@pytest.mark.parametrize("relaxation", [1.0, 1.25])
def test_newton_sor_converges_to_the_backward_euler_root(tasks, relaxation):
    problem = tasks.problem
    sol = ms.run(ms.NewtonSOR(relaxation), problem, rtol=0.0, atol=1e-12, maxiter=20_000)
    assert bool(sol.converged.all()), sol.summary()
    assert bool((torch.linalg.vector_norm(problem.function(sol.x), dim=1) <= 1e-12).all())
    for i in range(problem.batch_size):
        # ||g|| <= 1e-12 pins y down to about 1e-12 (g is y minus a bounded map).
        np.testing.assert_allclose(sol.x[i].numpy(), newton_root(problem, i), rtol=1e-8,
                                   atol=1e-11)


def test_one_step_matches_the_textbook_formula(tasks):
    problem = tasks.index(slice(5, 9)).problem
    r = torch.tensor([1.0, 1.2, 1.5, 1.9], dtype=DTYPE)
    sol = ms.run(ms.NewtonSOR(), problem, params={"relaxation": r}, fixed_iterations=1, rtol=0.0)
    for i in range(4):
        y = problem.previous[i].numpy()
        one = problem.index(slice(i, i + 1))
        J = one.jacobian(one.previous)[0].numpy()
        g = one.function(one.previous)[0].numpy()
        D, L = np.diag(np.diag(J)), -np.tril(J, -1)  # J = D - L - U (eq. 45)
        expected = y - float(r[i]) * np.linalg.solve(D - float(r[i]) * L, g)  # eq. (46)
        np.testing.assert_allclose(sol.x[i].numpy(), expected, rtol=1e-13, atol=1e-300)


def test_log_guess_shift_multiplies_the_start(tasks):
    problem = tasks.index(slice(1, 4)).problem
    shift = torch.full((3, 3), 0.5, dtype=DTYPE)
    sol = ms.run(ms.NewtonSOR(), problem, params={"log_guess_shift": shift}, fixed_iterations=0,
                 rtol=0.0)
    torch.testing.assert_close(sol.x, problem.previous * np.exp(0.5))


def test_reference_trajectory_agrees_with_radau():
    times = np.concatenate(([0.0], np.logspace(-6, 3, 8)))
    rates = (0.04, 3e7, 1e4)  # Robertson's original constants
    ours = robertson_trajectory(rates, times)
    c1, c2, c3 = rates

    def rhs(t, y):
        return [-c1 * y[0] + c3 * y[1] * y[2], c1 * y[0] - c2 * y[1] ** 2 - c3 * y[1] * y[2],
                c2 * y[1] ** 2]

    radau = solve_ivp(rhs, (0, times[-1]), [1, 0, 0], method="Radau", t_eval=times,
                      rtol=1e-10, atol=1e-14).y.T
    np.testing.assert_allclose(ours, radau, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-9)  # mass is conserved


def test_subset_stepping_equals_masked_full_steps(tasks, monkeypatch):
    problem = tasks.problem
    r = torch.linspace(1.0, 1.6, problem.batch_size, dtype=DTYPE)
    runs = []
    for fraction in (0.0, 1.0):  # never / always step the running sub-batch only
        monkeypatch.setattr(base, "SUBSET_FRACTION", fraction)
        runs.append(ms.run(ms.NewtonSOR(), problem, params={"relaxation": r}, rtol=1e-10,
                           maxiter=3000))
    full, subset = runs
    assert torch.equal(full.iterations, subset.iterations)
    assert torch.equal(full.status, subset.status)
    torch.testing.assert_close(full.x, subset.x, rtol=0, atol=0)
    torch.testing.assert_close(full.residual_history, subset.residual_history, rtol=0, atol=0)


def test_gradients_through_newton_sor_pass_gradcheck(tasks):
    problem = tasks.index(torch.tensor([2, 4, 11])).problem

    def loss(relaxation, shift):
        sol = ms.run(ms.NewtonSOR(), problem,
                     params={"relaxation": relaxation, "log_guess_shift": shift},
                     fixed_iterations=4, rtol=0.0)
        return sol.residual_history.sum(0)

    r = torch.tensor([1.1, 1.3, 1.2], dtype=DTYPE, requires_grad=True)
    s = (0.1 * torch.randn(3, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
         ).requires_grad_()
    assert torch.autograd.gradcheck(loss, (r, s), eps=1e-7, atol=1e-6, rtol=1e-4)


def test_gradients_flow_through_the_sub_batch_steps(tasks, monkeypatch):
    monkeypatch.setattr(base, "SUBSET_FRACTION", 1.0)
    problem = tasks.problem
    r = torch.full((problem.batch_size,), 1.2, dtype=DTYPE, requires_grad=True)
    sol = ms.run(ms.NewtonSOR(), problem, params={"relaxation": r}, rtol=1e-9, maxiter=3000)
    assert int(sol.iterations.min()) < int(sol.iterations.max())  # the tail ran in a sub-batch
    loss = ms.IterationSurrogateLoss(1e-9, maxiter=3000)(sol).sum()
    (grad,) = torch.autograd.grad(loss, r)
    assert bool(torch.isfinite(grad).all())
    assert bool((grad[sol.iterations > 1] != 0).all())


class ZeroPivotSystem(ms.NonlinearSystem):
    """``g(y) = A_b y - 1`` with a zero diagonal entry in instance 1's Jacobian."""

    def __init__(self, matrices):
        self.matrices = matrices
        self.start = torch.zeros(matrices.shape[0], matrices.shape[1], dtype=DTYPE)

    def function(self, y):
        return (self.matrices @ y.unsqueeze(-1)).squeeze(-1) - 1.0

    def jacobian(self, y):
        return self.matrices

    def index(self, idx):
        return ZeroPivotSystem(self.matrices[idx])


def test_a_zero_pivot_breaks_down_that_instance_only():
    good = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=DTYPE)
    bad = torch.tensor([[0.0, 1.0], [1.0, 3.0]], dtype=DTYPE)
    system = ZeroPivotSystem(torch.stack([good, bad, good]))
    sol = ms.run(ms.NewtonSOR(1.1), system, rtol=1e-12, maxiter=200)
    assert sol.status.tolist() == [Status.CONVERGED, Status.BREAKDOWN, Status.CONVERGED]
    expected = torch.linalg.solve(good, torch.ones(2, dtype=DTYPE))
    torch.testing.assert_close(sol.x[0], expected)
    assert bool(torch.isfinite(sol.x).all())


def test_bad_input_raises_clear_errors():
    rates = torch.tensor([[0.04, 3e7, 1e4]], dtype=DTYPE)
    step = torch.tensor([1e-3], dtype=DTYPE)
    prev = torch.tensor([[1.0, 0.0, 0.0]], dtype=DTYPE)
    with pytest.raises(ValueError, match="rates must be positive"):
        RobertsonStep(-rates, step, prev)
    with pytest.raises(ValueError, match="step must be positive"):
        RobertsonStep(rates, -step, prev)
    with pytest.raises(ValueError, match="previous contains 1 NaN"):
        RobertsonStep(rates, step, torch.tensor([[1.0, float("nan"), 0.0]], dtype=DTYPE))
    with pytest.raises(ValueError, match="rates must have shape"):
        RobertsonStep(rates[:, :2], step, prev)
    with pytest.raises(ValueError, match="relaxation must lie in"):
        ms.NewtonSOR(2.5)
    problem = RobertsonStep(rates, step, prev)
    with pytest.raises(ValueError, match="log_guess_shift"):
        ms.run(ms.NewtonSOR(), problem, params={"log_guess_shift": torch.zeros(1, 2,
                                                                              dtype=DTYPE)})
    with pytest.raises(TypeError, match="NonlinearSystem"):
        ms.run(ms.NewtonSOR(), ms.LinearSystem(torch.eye(2, dtype=DTYPE),
                                               torch.ones(1, 2, dtype=DTYPE)))
    with pytest.raises(ValueError, match="t_first < t_last"):
        ms.RobertsonFamily(t_first=1.0, t_last=1e-3)


def test_family_is_reproducible_and_features_are_scaled():
    fam = ms.RobertsonFamily(steps=5)
    a, b = fam.sample(10, seed=1), fam.sample(10, seed=1)
    torch.testing.assert_close(a.features, b.features)
    torch.testing.assert_close(a.problem.previous, b.problem.previous)
    assert a.features.shape == (10, 7)
    assert float(a.features.abs().max()) <= 1.0 + 1e-12
    # The first five tasks are the five steps of one rate set, in time order.
    assert torch.equal(a.problem.rates[0], a.problem.rates[4])
    assert bool((a.problem.step[1:5] > a.problem.step[:4]).all())
    assert not torch.equal(a.problem.rates[4], a.problem.rates[5])
    torch.testing.assert_close(a.problem.previous[0], torch.tensor([1.0, 0, 0], dtype=DTYPE))
    assert len(fam.sample(7, seed=0)) == 7


def test_per_instance_parameters_are_checked_where_they_enter(tasks):
    problem = tasks.problem
    b = problem.batch_size
    with pytest.raises(ValueError, match=r"params\['relaxation'\] must hold one value"):
        ms.run(ms.NewtonSOR(), problem, params={"relaxation": torch.ones(b, 3, dtype=DTYPE)})
    with pytest.raises(ValueError, match=r"params\['relaxation'\] must lie in \(0, 2\)"):
        ms.run(ms.NewtonSOR(), problem, params={"relaxation": torch.full((b,), 2.5,
                                                                         dtype=DTYPE)})


class SharedEntryNewtonSOR(ms.NewtonSOR):
    """Declares per-instance state but keeps a shared entry: the driver must refuse it."""

    name = "shared-entry-newton-sor"

    def init(self, problem, x0, params):
        return {**super().init(problem, x0, params), "scale": torch.ones(7, dtype=DTYPE)}


def test_a_shared_entry_in_per_instance_state_is_refused(tasks):
    with pytest.raises(ValueError, match=r"per_instance_state.*\['scale'\]"):
        ms.run(SharedEntryNewtonSOR(), tasks.problem, rtol=1e-9)


class CubicSystem(ms.NonlinearSystem):
    """``g(y) = A y + c y^3 - 1`` per instance, without a ``jacobian``: the default computes it
    (``A + 3 c diag(y^2)``)."""

    def __init__(self, matrices, c):
        self.matrices, self.c = matrices, c
        self.start = torch.zeros(matrices.shape[0], matrices.shape[1], dtype=DTYPE)

    def function(self, y):
        return (self.matrices @ y.unsqueeze(-1)).squeeze(-1) + self.c.unsqueeze(1) * y ** 3 - 1.0

    def index(self, idx):
        return CubicSystem(self.matrices[idx], self.c[idx])


def _cubic(batch=3, size=4):
    generator = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(batch, size, size, dtype=DTYPE, generator=generator)
    matrices = 4.0 * torch.eye(size, dtype=DTYPE) + noise
    c = torch.rand(batch, dtype=DTYPE, generator=generator) + 0.5
    return matrices, c


def test_a_system_without_a_jacobian_gets_one_by_automatic_differentiation():
    matrices, c = _cubic()
    system = CubicSystem(matrices, c)
    y = torch.randn(3, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    expected = matrices + torch.diag_embed(3 * c.unsqueeze(1) * y ** 2)
    torch.testing.assert_close(system.jacobian(y), expected, rtol=0, atol=1e-14)
    # Differentiable in y and in the data the function reads.
    assert torch.autograd.gradcheck(
        lambda yy, cc: CubicSystem(matrices, cc).jacobian(yy),
        (y.clone().requires_grad_(), c.clone().requires_grad_()))
    # Newton-SOR runs on it and reaches the root.
    sol = ms.run(ms.NewtonSOR(1.0), system, atol=1e-12, rtol=0.0, maxiter=500)
    assert bool(sol.converged.all())
    assert float(system.function(sol.x).abs().max()) <= 1e-12
