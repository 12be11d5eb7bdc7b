"""The R2N2 superstructure (R2N2 paper, sec. 3.1-3.2, SM1, SM4): Runge-Kutta and GMRES steps
with hand-set weights, forward differences against a JVP, the SM4 certificate against the
iteration matrix it describes, iteration-dependent output weights, gradients, the loss, the
SciPy baselines, the task families, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch
from scipy.integrate import solve_ivp

import metasolve as ms
from metasolve.baselines.scipy_krylov import gmres_history, newton_krylov_history
from metasolve.learned.r2n2 import R2N2, RK3, RK4, ButcherTableau
from metasolve.problems import EigenProblem, LinearSystem, NonlinearSystem
from metasolve.tasks.chandrasekhar import ChandrasekharSystem, h_equation_operator
from metasolve.tasks.matrix_set import PAPER_RHS_MEAN, r2n2_matrices
from metasolve.tasks.van_der_pol import VanDerPolSteps, van_der_pol
from metasolve.training.losses import WeightedResidualLoss

DTYPE = torch.float64


def spd(m: int, seed: int, shift: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    at = torch.randn(m, m, generator=g, dtype=DTYPE)
    return at.T @ at / m + shift * torch.eye(m, dtype=DTYPE)


def randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


def packed(layers: int, entries: dict[tuple[int, int], float]) -> list[float]:
    """``theta_{j,l}`` (``j = 1..n-1``, ``l < j``) packed row by row."""
    return [entries.get((j, l), 0.0) for j in range(1, layers) for l in range(j)]


def vdp_problem() -> VanDerPolSteps:
    a = torch.tensor([1.4, 1.5, 1.6], dtype=DTYPE)
    start = torch.tensor([[-3.5, 1.0], [-3.1, 0.2], [-3.9, 1.8]], dtype=DTYPE)
    h = torch.tensor([0.01, 0.05, 0.1], dtype=DTYPE)
    # ``run`` monitors the error against a reference from iteration 0 on, so one is needed;
    # its values after step 0 do not affect the iterate.
    return VanDerPolSteps(a, start, h, torch.stack([start, start], dim=1))


def chandrasekhar(sizes=(10,), n=3, seed=0) -> ChandrasekharSystem:
    return ms.ChandrasekharFamily(sizes=sizes).sample(n, seed=seed).problem


# --- 1. Runge-Kutta steps ------------------------------------------------------------------


def vdp_np(x, a):
    return np.array([x[1], a * (1 - x[0] ** 2) * x[1] - x[0]])


def kutta3(x, a, h):
    k1 = vdp_np(x, a)
    k2 = vdp_np(x + h / 2 * k1, a)
    k3 = vdp_np(x - h * k1 + 2 * h * k2, a)
    return x + h * (k1 + 4 * k2 + k3) / 6


def classical4(x, a, h):
    k1 = vdp_np(x, a)
    k2 = vdp_np(x + h / 2 * k1, a)
    k3 = vdp_np(x + h / 2 * k2, a)
    k4 = vdp_np(x + h * k3, a)
    return x + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6


@pytest.mark.parametrize(("tableau", "reference"), [(RK3, kutta3), (RK4, classical4)])
def test_one_outer_iteration_is_one_runge_kutta_step(tableau, reference):
    problem = vdp_problem()
    sol = ms.run(R2N2.from_tableau(tableau), problem, fixed_iterations=1, rtol=0.0)
    for i in range(problem.batch_size):
        expected = reference(problem.start[i].numpy(), float(problem.a[i]),
                             float(problem.step_size[i]))
        np.testing.assert_allclose(sol.x[i].numpy(), expected, rtol=1e-14, atol=1e-14)


def test_tableau_weights_and_function_evaluations():
    assert R2N2.from_tableau(RK3).stage_weights.tolist() == [0.5, -1.0, 2.0]
    assert R2N2.from_tableau(RK4).output_weights.tolist() == pytest.approx([1 / 6, 1 / 3,
                                                                            1 / 3, 1 / 6])

    class Counted(NonlinearSystem):
        calls = 0

        def __init__(self, start):
            self.start = start

        def function(self, y):
            Counted.calls += 1
            return torch.sin(y) - 0.5

        def jacobian(self, y):
            return torch.diag_embed(torch.cos(y))

        def index(self, idx):
            return Counted(self.start[idx])

    problem = Counted(torch.zeros(2, 3, dtype=DTYPE))
    ms.run(R2N2.from_tableau(RK4), problem, fixed_iterations=5, rtol=0.0)
    # f(x_0) once, then n = 4 (batched) evaluations per outer iteration.
    assert Counted.calls == 1 + 4 * 5


# --- 2. A GMRES(n) cycle -------------------------------------------------------------------


def test_one_iteration_reproduces_a_gmres_cycle():
    a = spd(5, seed=1)
    b = randn(1, 5, seed=2)
    n = 4
    r0 = (-b[0]).numpy()  # f(0) = A 0 - b
    an = a.numpy()
    krylov = np.stack([np.linalg.matrix_power(an, i) @ r0 for i in range(1, n + 1)], axis=1)
    c = np.linalg.lstsq(krylov, -r0, rcond=None)[0]  # q(A) r0 = r0 + K c, minimal
    stage = packed(n, {(1, 0): 1.0, (2, 1): 1.0, (3, 2): 1.0})
    method = R2N2(layers=n, stage_weights=stage)
    output = method.output_weights_for(c, stage)
    # The polynomial the weights give back is the one asked for.
    q = method.residual_polynomial(stage, output)
    np.testing.assert_allclose(q.numpy(), np.concatenate([[1.0], c]), rtol=1e-12, atol=1e-12)

    sol = ms.run(method, LinearSystem(a[None], b), fixed_iterations=1, rtol=0.0,
                 params={"stage_weights": torch.tensor([stage], dtype=DTYPE),
                         "output_weights": output[None]})
    x_gmres, _ = scipy.sparse.linalg.gmres(an, b[0].numpy(), x0=np.zeros(5), restart=n,
                                           maxiter=1, rtol=0.0, atol=0.0)
    np.testing.assert_allclose(sol.x[0].numpy(), x_gmres, rtol=1e-8,
                               atol=1e-8 * np.linalg.norm(x_gmres))
    # It is not just the exact solution (4 < 5 steps): the test would see a wrong polynomial.
    exact = np.linalg.solve(an, b[0].numpy())
    assert np.linalg.norm(x_gmres - exact) > 1e-6 * np.linalg.norm(exact)


# --- 3. forward differences ----------------------------------------------------------------


def test_forward_difference_layer_is_a_jacobian_vector_product():
    problem = chandrasekhar(seed=4)
    theta = torch.tensor([[0.7], [-1.3], [0.4]], dtype=DTYPE)
    method = R2N2(layers=2, difference="forward", epsilon=1e-7)
    sol = ms.run(method, problem, fixed_iterations=1, rtol=0.0,
                 params={"stage_weights": theta,
                         "output_weights": torch.tensor([[0.0, 1.0]] * 3, dtype=DTYPE)})
    x0 = problem.start
    v1 = sol.x - x0
    d = theta * problem.function(x0)
    _, jvp = torch.func.jvp(problem.function, (x0,), (d,))
    # The same as the Jacobian the problem supplies.
    torch.testing.assert_close(jvp, torch.bmm(problem.jacobian(x0), d.unsqueeze(-1)).squeeze(-1))
    for i in range(3):
        assert float((v1[i] - jvp[i]).norm() / jvp[i].norm()) < 1e-5
    # The plain layer would be f(x + d) instead: a different value.
    plain = ms.run(R2N2(layers=2), problem, fixed_iterations=1, rtol=0.0,
                   params=sol.info["params"])
    assert float((plain.x - x0 - jvp).norm()) > 1e-2 * float(jvp.norm())


def test_forward_difference_keeps_its_accuracy_near_a_solution():
    # Near a solution the direction d = theta f(x) is tiny; a fixed step eps d would round to
    # nothing (x + 1e-19 d == x) and give v_1 = 0. The step scaled by ||d|| keeps J d exact
    # to the difference's accuracy.
    problem = chandrasekhar(seed=4)
    tiny = 1e-12
    theta = tiny * torch.tensor([[0.7], [-1.3], [0.4]], dtype=DTYPE)
    method = R2N2(layers=2, difference="forward", epsilon=1e-7)
    sol = ms.run(method, problem, fixed_iterations=1, rtol=0.0,
                 params={"stage_weights": theta,
                         "output_weights": torch.tensor([[0.0, 1 / tiny]] * 3, dtype=DTYPE)})
    x0 = problem.start
    _, jvp = torch.func.jvp(problem.function, (x0,), (theta / tiny * problem.function(x0),))
    for i in range(3):
        assert float((sol.x[i] - x0[i] - jvp[i]).norm() / jvp[i].norm()) < 1e-5
    # A zero direction has a zero derivative, not 0/0.
    zero = ms.run(method, problem, fixed_iterations=1, rtol=0.0,
                  params={"stage_weights": torch.zeros(3, 1, dtype=DTYPE),
                          "output_weights": torch.tensor([[0.0, 1.0]] * 3, dtype=DTYPE)})
    torch.testing.assert_close(zero.x, x0, rtol=0.0, atol=0.0)


# --- 4. the SM4 certificate ----------------------------------------------------------------


def iteration_matrix(method: R2N2, a: torch.Tensor, stage, output) -> np.ndarray:
    """``M`` with ``r_1 = M r_0``, one column per run from ``r_0 = e_i`` (for some ``b``)."""
    m = a.shape[0]
    b = randn(1, m, seed=11).expand(m, m).contiguous()
    eye = torch.eye(m, dtype=DTYPE)
    x0 = torch.linalg.solve(a, (eye + b).T).T
    params = {"stage_weights": torch.as_tensor(stage, dtype=DTYPE).expand(m, -1),
              "output_weights": torch.as_tensor(output, dtype=DTYPE).expand(m, -1)}
    sol = ms.run(method, LinearSystem(a, b), x0=x0, params=params, fixed_iterations=1, rtol=0.0)
    r1 = sol.x @ a.T - b
    return r1.T.numpy()  # column i is M e_i


@pytest.mark.parametrize("difference", ["none", "forward"])
@pytest.mark.parametrize("seed", [0, 1])
def test_certificate_describes_the_actual_iteration_matrix(difference, seed):
    a = randn(5, 5, seed=20 + seed) / 2
    stage = (randn(6, seed=30 + seed) / 2).tolist()
    output = (randn(4, seed=40 + seed) / 2).tolist()
    method = R2N2(layers=4, difference=difference)
    matrix = iteration_matrix(method, a, stage, output)
    cert = method.certificate(a, stage, output)
    tol = 1e-10 if difference == "none" else 1e-6
    assert cert.norm == pytest.approx(np.linalg.norm(matrix, 2), rel=tol)
    assert cert.spectral_radius == pytest.approx(np.abs(np.linalg.eigvals(matrix)).max(),
                                                 rel=tol)
    q = cert.coefficients.numpy()
    assert q[0] == 1.0 and q.shape == (5,)
    poly = sum(q[j] * np.linalg.matrix_power(a.numpy(), j) for j in range(5))
    np.testing.assert_allclose(poly, matrix, rtol=tol, atol=tol * np.abs(matrix).max())


def test_certificate_with_iteration_dependent_output_rows():
    a = randn(4, 4, seed=5) / 2
    stage = [0.3, -0.2, 0.5]
    rows = [[0.1, 0.2, -0.4], [-0.5, 0.3, 0.2]]
    method = R2N2(layers=3, output_steps=2, stage_weights=stage,
                  output_weights=rows[0] + rows[1])
    for step, row in ((0, rows[0]), (1, rows[1]), (-1, rows[1])):
        single = R2N2(layers=3).certificate(a, stage, row)
        assert method.certificate(a, output_step=step).norm == pytest.approx(single.norm,
                                                                             rel=1e-14)
    with pytest.raises(ValueError, match="output_step"):
        method.certificate(a, output_step=2)


@pytest.mark.parametrize(("scale", "contracts"), [(-1.0, True), (-2.5, False)])
def test_certificate_predicts_convergence_of_richardson(scale, contracts):
    a = spd(5, seed=7)
    weight = scale / float(torch.linalg.matrix_norm(a, ord=2))
    method = R2N2(layers=1, output_weights=[weight])
    # layers = 1 has no stage weights; [] gives the (empty) set explicitly.
    cert = method.certificate(a, stage_weights=[])
    assert cert.converges_for_every_rhs is contracts
    assert (cert.spectral_radius < 1) is contracts
    b = randn(3, 5, seed=8)
    sol = ms.run(method, LinearSystem(a, b), fixed_iterations=30, rtol=0.0)
    ratio = sol.residual_history[-1] / sol.residual_history[0]
    if contracts:
        assert bool((sol.residual_history[1:] <= sol.residual_history[:-1]).all())
        assert bool((ratio <= cert.norm ** 30 * (1 + 1e-8)).all())
    else:
        assert bool((ratio > 1e3).all())


# --- 5. iteration-dependent output weights -------------------------------------------------


def test_output_steps_use_row_k_then_the_last_row():
    problem = chandrasekhar(seed=6)
    stage = torch.tensor([[0.3, -0.2, 0.5]] * 3, dtype=DTYPE)
    row0 = torch.tensor([[-0.6, 0.1, -0.2]] * 3, dtype=DTYPE)
    row1 = torch.tensor([[-0.3, -0.4, 0.1]] * 3, dtype=DTYPE)
    both = ms.run(R2N2(layers=3, output_steps=2), problem, fixed_iterations=3, rtol=0.0,
                  params={"stage_weights": stage,
                          "output_weights": torch.cat([row0, row1], dim=1)})
    first = ms.run(R2N2(layers=3), problem, fixed_iterations=1, rtol=0.0,
                   params={"stage_weights": stage, "output_weights": row0})
    rest = ms.run(R2N2(layers=3), problem, x0=first.x, fixed_iterations=2, rtol=0.0,
                  params={"stage_weights": stage, "output_weights": row1})
    torch.testing.assert_close(both.x, rest.x, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(both.residual_history,
                               torch.cat([first.residual_history, rest.residual_history[1:]]),
                               rtol=1e-14, atol=1e-14)
    wrong = ms.run(R2N2(layers=3), problem, fixed_iterations=3, rtol=0.0,
                   params={"stage_weights": stage, "output_weights": row1})
    assert float((wrong.x - both.x).abs().max()) > 1e-6


def test_output_steps_follow_each_instance_when_some_stop_early():
    # Instances stop at different iterations, so the driver steps gathered sub-batches; each
    # instance's counter must still pick its own row.
    problem = chandrasekhar(sizes=(5, 8), n=6, seed=9)
    stage = torch.tensor([[1.0, 0.0, 1.0]] * 6, dtype=DTYPE)
    output = torch.tensor([[-0.9, 0.0, 0.0, -0.5, -0.2, -0.1]] * 6, dtype=DTYPE)
    method = R2N2(layers=3, output_steps=2)
    params = {"stage_weights": stage, "output_weights": output}
    sol = ms.run(method, problem, params=params, rtol=0.0, atol=1e-9, maxiter=60)
    assert bool(sol.converged.all()), sol.summary()
    assert len(set(sol.iterations.tolist())) > 1
    for i in range(6):
        one = ms.run(method, problem.index([i]), rtol=0.0, atol=1e-9, maxiter=60,
                     params={k: v[i:i + 1] for k, v in params.items()})
        assert int(one.iterations[0]) == int(sol.iterations[i])
        torch.testing.assert_close(one.x[0], sol.x[i], rtol=1e-13, atol=1e-13)


# --- 6. gradients --------------------------------------------------------------------------


@pytest.mark.parametrize(("difference", "epsilon"), [("none", 1e-7), ("forward", 1e-3)])
def test_gradcheck_through_two_outer_iterations(difference, epsilon):
    problem = chandrasekhar(sizes=(4,), n=2, seed=12)
    method = R2N2(layers=3, difference=difference, epsilon=epsilon)
    stage = torch.tensor([[0.4, -0.1, 0.6], [0.2, 0.3, 0.5]], dtype=DTYPE, requires_grad=True)
    output = torch.tensor([[-0.5, 0.1, -0.2], [-0.3, -0.2, 0.1]], dtype=DTYPE,
                          requires_grad=True)

    def final(stage, output):
        sol = ms.run(method, problem, fixed_iterations=2, rtol=0.0,
                     params={"stage_weights": stage, "output_weights": output})
        return sol.x, sol.residual_history[-1]

    assert torch.autograd.gradcheck(final, (stage, output), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_on_a_linear_system():
    a = spd(3, seed=13)
    problem = LinearSystem(a, randn(2, 3, seed=14))
    stage = randn(2, 1, seed=15).requires_grad_()
    output = (randn(2, 2, seed=16) / 3).requires_grad_()

    def final(stage, output):
        return ms.run(R2N2(layers=2), problem, fixed_iterations=2, rtol=0.0,
                      params={"stage_weights": stage, "output_weights": output}).x

    assert torch.autograd.gradcheck(final, (stage, output))


# --- 7. bad input --------------------------------------------------------------------------


def test_bad_input():
    problem = chandrasekhar(sizes=(4,), n=2)
    method = R2N2(layers=3)
    good = {"stage_weights": torch.zeros(2, 3, dtype=DTYPE),
            "output_weights": torch.zeros(2, 3, dtype=DTYPE)}
    for key, shape in (("stage_weights", (2, 2)), ("output_weights", (2, 6))):
        params = dict(good, **{key: torch.zeros(shape, dtype=DTYPE)})
        with pytest.raises(ValueError, match=key):
            ms.run(method, problem, params=params, fixed_iterations=1)
    with pytest.raises(ValueError, match="stage_weights"):
        ms.run(method, problem, fixed_iterations=1)
    with pytest.raises(ValueError, match="layers"):
        R2N2(layers=0)
    with pytest.raises(ValueError, match="difference"):
        R2N2(difference="backward")
    with pytest.raises(ValueError, match="output_weights"):
        R2N2(layers=2, stage_weights=[1.0], output_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="coefficients"):
        R2N2(layers=2).output_weights_for([1.0], stage_weights=[1.0])
    with pytest.raises(ValueError, match="span"):
        R2N2(layers=2, difference="forward").output_weights_for([1.0, 1.0], stage_weights=[0.0])
    with pytest.raises(TypeError):
        R2N2.from_tableau("RK4")

    operator = LinearSystem(torch.eye(3, dtype=DTYPE), torch.ones(1, 3, dtype=DTYPE))
    eigen = EigenProblem(operator, torch.ones(1, 3, 1, dtype=DTYPE),
                         torch.ones(1, dtype=DTYPE), 1)
    for bad in (eigen, object()):
        with pytest.raises(TypeError):
            ms.run(R2N2.from_tableau(RK4), bad, fixed_iterations=1)

    with pytest.raises(ValueError, match="sum to 1"):
        ButcherTableau("bad", a=((0, 0), (1, 0)), b=(0.5, 0.6), c=(0, 1))
    with pytest.raises(ValueError, match="lower triangular"):
        ButcherTableau("implicit", a=((0, 1), (1, 0)), b=(0.5, 0.5), c=(1, 1))

    ivp = ms.VanDerPolFamily(steps=2).sample(2, seed=0).problem
    ms.run(R2N2.from_tableau(RK3), ivp, fixed_iterations=2, rtol=0.0)  # within the reference
    with pytest.raises(ValueError, match="reference"):
        ms.run(R2N2.from_tableau(RK3), ivp, fixed_iterations=3, rtol=0.0)


def test_bad_analysis_arguments():
    method = R2N2(layers=2, output_steps=2, stage_weights=[1.0],
                  output_weights=[-0.5, 0.1, -0.4, 0.2])
    a = spd(3, seed=1)
    for bad in (1.0, "0", None, True):
        with pytest.raises(TypeError, match="output_step"):
            method.certificate(a, output_step=bad)
        with pytest.raises(TypeError, match="output_step"):
            method.residual_polynomial(output_step=bad)
    with pytest.raises(ValueError, match="output_step"):
        method.residual_polynomial(output_step=-3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="h"):
            method.layer_polynomials(h=bad)
        with pytest.raises(ValueError, match="h"):
            method.residual_polynomial(h=bad)
        with pytest.raises(ValueError, match="h"):
            method.output_weights_for([1.0, 1.0], h=bad)
    with pytest.raises(TypeError, match="h"):
        method.layer_polynomials(h="1")


def test_bad_baseline_input():
    mats = torch.stack([spd(4, seed=i) for i in range(3)])
    rhs = randn(3, 4, seed=1)
    with pytest.raises(ValueError, match="matrices"):
        gmres_history(mats[:2], rhs, restart=2, cycles=1)  # batch 2 against 3
    with pytest.raises(ValueError, match="matrices"):
        gmres_history(mats[:, :3, :3], rhs, restart=2, cycles=1)
    with pytest.raises(ValueError, match="matrices"):
        gmres_history(torch.ones(4, 3, dtype=DTYPE), rhs, restart=2, cycles=1)
    with pytest.raises(ValueError, match="x0"):
        gmres_history(mats, rhs, restart=2, cycles=1, x0=torch.zeros(3, 5, dtype=DTYPE))
    with pytest.raises(ValueError, match="x0"):
        gmres_history(mats, rhs, restart=2, cycles=1,
                      x0=torch.full((3, 4), float("nan"), dtype=DTYPE))
    with pytest.raises(TypeError, match="x0"):
        gmres_history(mats, rhs, restart=2, cycles=1, x0=np.zeros((3, 4)))
    # A shared matrix and a given start are fine.
    out = gmres_history(mats[0], rhs, restart=2, cycles=1, x0=torch.ones(3, 4, dtype=DTYPE))
    assert out["residual"].shape == (2, 3)

    def f(x):
        return x - 1.0

    with pytest.raises(TypeError, match="function"):
        newton_krylov_history("f", np.zeros(3), iterations=1, inner_dim=1)
    for bad in (np.zeros((2, 2)), np.zeros(0), np.array([0.0, np.inf]), [[1.0]], "abc"):
        with pytest.raises(ValueError, match="x0"):
            newton_krylov_history(f, bad, iterations=1, inner_dim=1)


def test_bad_family_arguments():
    for name in ("a_range", "x1_range", "x2_range"):
        for bad in ((1.0,), (1.0, 2.0, 3.0), (2.0, 1.0), (0.0, float("nan")), 1.0):
            with pytest.raises(ValueError, match=name):
                ms.VanDerPolFamily(**{name: bad})
    with pytest.raises(ValueError, match="step_sizes"):
        ms.VanDerPolFamily(step_sizes=[])
    with pytest.raises(ValueError, match="step_sizes"):
        ms.VanDerPolFamily(step_sizes=[0.01, -0.1])
    # A point range (low == high) is a valid degenerate distribution.
    assert ms.VanDerPolFamily(a_range=(1.5, 1.5)).a_range == (1.5, 1.5)

    for bad in ([10.7], [10.0], ["10"], [True]):
        with pytest.raises(TypeError, match="sizes"):
            ms.ChandrasekharFamily(sizes=bad)
    for bad in ([], [0], [10, -1]):
        with pytest.raises(ValueError, match="sizes"):
            ms.ChandrasekharFamily(sizes=bad)
    assert ms.ChandrasekharFamily(sizes=np.array([4, 6])).sizes == (4, 6)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="mean"):
            ms.ChandrasekharFamily(mean=bad)
    with pytest.raises(TypeError, match="mean"):
        ms.ChandrasekharFamily(mean="1")


# --- 8. the loss ---------------------------------------------------------------------------


def test_weighted_residual_loss_by_hand():
    a = spd(4, seed=17)
    b = randn(3, 4, seed=18)
    problem = LinearSystem(a, b)
    method = R2N2(layers=2, stage_weights=[1.0], output_weights=[-0.4, -0.3])
    loss = WeightedResidualLoss(3, growth=4.0)
    sol = ms.run(method, problem, **loss.run_options())
    history = sol.residual_history
    assert history.shape == (4, 3)
    # The monitored norm is ||A x - b||.
    torch.testing.assert_close(history[-1], torch.linalg.vector_norm(sol.x @ a.T - b, dim=1))
    bnorm = torch.linalg.vector_norm(b, dim=1)
    expected = sum(4.0 ** k * (history[k] / bnorm) ** 2 for k in (1, 2, 3))
    torch.testing.assert_close(loss(sol), expected, rtol=1e-14, atol=0.0)
    final = WeightedResidualLoss(3, growth=4.0, final_only=True)
    torch.testing.assert_close(final(sol), (history[3] / bnorm) ** 2, rtol=1e-14, atol=0.0)


# --- 9. the SciPy baselines ----------------------------------------------------------------


def test_gmres_history_matches_scipy_and_bounds_the_r2n2():
    m, n, batch = 6, 3, 4
    mats = torch.stack([spd(m, seed=50 + i, shift=0.2) for i in range(batch)])
    rhs = randn(batch, m, seed=60)
    out = gmres_history(mats, rhs, restart=n, cycles=2)
    assert out["residual"].shape == (3, batch) and out["matvecs"].shape == (2, batch)
    assert bool((out["matvecs"] > 0).all())
    for i in range(batch):
        a, b = mats[i].numpy(), rhs[i].numpy()
        x = np.zeros(m)
        for k in range(2):
            x, _ = scipy.sparse.linalg.gmres(a, b, x0=x, restart=n, maxiter=1, rtol=0.0,
                                             atol=0.0)
            assert out["residual"][k + 1, i] == pytest.approx(np.linalg.norm(a @ x - b),
                                                              rel=1e-8)
        np.testing.assert_allclose(out["x"][i], x, rtol=1e-8, atol=1e-10)
    # One R2N2 iteration of n layers stays in K_n(A, r_0), where GMRES(n) is optimal.
    problem = LinearSystem(mats, rhs)
    for seed in range(5):
        params = {"stage_weights": randn(batch, 3, seed=70 + seed),
                  "output_weights": randn(batch, n, seed=80 + seed) / 3}
        sol = ms.run(R2N2(layers=n), problem, params=params, fixed_iterations=1, rtol=0.0)
        assert bool((torch.from_numpy(out["residual"][1])
                     <= sol.residual_history[1] * (1 + 1e-10)).all())


def test_newton_krylov_history_solves_the_h_equation():
    op = h_equation_operator(10, 0.9).numpy()

    def f(x):
        return x - 1.0 / (1.0 - op @ x)

    out = newton_krylov_history(f, np.ones(10), iterations=5, inner_dim=2)
    assert out["residual"].shape == (6,) and out["evaluations"].shape == (5,)
    assert out["residual"][-1] < 1e-6 < out["residual"][0]
    # inner_dim + 2 calls per Newton step (one per Arnoldi step, GMRES's residual of its
    # result, f at the new iterate), plus f(x_0) in the first: the count the docs state.
    for inner in (1, 2):
        counts = newton_krylov_history(f, np.ones(10), iterations=5, inner_dim=inner)
        assert counts["evaluations"].tolist() == [inner + 3] + [inner + 2] * 4
    assert np.linalg.norm(f(out["x"])) == pytest.approx(out["residual"][-1], rel=1e-8, abs=1e-14)


# --- 10. the task families -----------------------------------------------------------------


def test_chandrasekhar_padding_is_exact():
    problem = chandrasekhar(sizes=(4, 7), n=8, seed=21)
    sizes = problem.sizes.tolist()
    assert set(sizes) == {4, 7}
    padding = problem.mask == 0
    assert bool((problem.function(randn(8, 7, seed=22)).masked_select(padding) == 0).all())
    method = R2N2.from_tableau(RK3)  # any weights; h = 1 for equations
    params = {"stage_weights": torch.tensor([[0.5, -0.2, 0.7]] * 8, dtype=DTYPE),
              "output_weights": torch.tensor([[-0.6, -0.2, 0.1]] * 8, dtype=DTYPE)}
    sol = ms.run(method, problem, params=params, fixed_iterations=3, rtol=0.0)
    assert bool((sol.x.masked_select(padding) == 0).all())
    for i, m in enumerate(sizes):
        a, x0 = problem.unpadded(i)
        alone = ChandrasekharSystem(a[None], torch.ones(1, m, dtype=DTYPE), x0[None],
                                    problem.c[i:i + 1])
        one = ms.run(method, alone, fixed_iterations=3, rtol=0.0,
                     params={k: v[i:i + 1] for k, v in params.items()})
        torch.testing.assert_close(one.residual_history[:, 0], sol.residual_history[:, i],
                                   rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(one.x[0], sol.x[i, :m], rtol=1e-13, atol=1e-15)


def test_van_der_pol_family_reference_and_error():
    tasks = ms.VanDerPolFamily(steps=2).sample(3, seed=5)
    problem = tasks.problem
    assert problem.reference.shape == (3, 3, 2) and problem.steps == 2
    for i in range(3):
        a, h = float(problem.a[i]), float(problem.step_size[i])
        fresh = solve_ivp(lambda t, y, a=a: vdp_np(y, a), (0.0, h), problem.start[i].tolist(),
                          method="Radau", rtol=1e-12, atol=1e-12, t_eval=[h])
        np.testing.assert_allclose(problem.reference[i, 1].numpy(), fresh.y[:, 0], rtol=1e-8,
                                   atol=1e-9)
    torch.testing.assert_close(problem.function(problem.start),
                               van_der_pol(problem.start, problem.a))
    sol = ms.run(R2N2.from_tableau(RK4), problem, fixed_iterations=2, rtol=0.0)
    assert bool((sol.residual_history[0] == 0).all())
    # The monitored norm after k steps is the distance to reference[:, k].
    for i in range(3):
        a, h = float(problem.a[i]), float(problem.step_size[i])
        x = problem.start[i].numpy()
        for k in (1, 2):
            x = classical4(x, a, h)
            error = np.linalg.norm(x - problem.reference[i, k].numpy())
            assert float(sol.residual_history[k, i]) == pytest.approx(error, rel=1e-9)
    assert bool((sol.residual_history[1:] > 0).all())
    # The relative norm divides by the error scale h^(order / 2) (order 3 by default).
    torch.testing.assert_close(sol.reference_norm, problem.step_size ** 1.5)


def test_matrix_set_family_solutions():
    mats = r2n2_matrices(seed=0)
    family = ms.MatrixSetFamily(torch.stack([mats["A1"], mats["A2"], mats["A3"]]),
                                PAPER_RHS_MEAN)
    problem = family.sample(6, seed=3).problem
    residual = torch.bmm(problem.matrix, problem.solution.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(residual, problem.rhs, rtol=1e-12, atol=1e-12)
    assert float((problem.rhs - torch.tensor(PAPER_RHS_MEAN, dtype=DTYPE)).abs().max()) <= 1.0
