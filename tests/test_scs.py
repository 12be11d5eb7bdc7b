"""The batched SCS iteration (neural SCS paper, sec. 3.2, 4.3.2) against independent references:
cone projections against cvxpy + Clarabel, the fixed point against the real ``scs`` package and
a planted primal-dual solution, SCS's stopping test, gradients (``gradcheck``), the learned
accelerators at their untrained start, the residual-sum loss and input validation."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

cp = pytest.importorskip("cvxpy")
pytest.importorskip("scs")

import metasolve as ms  # noqa: E402
from metasolve.baselines.scs_reference import solve_with_scs  # noqa: E402
from metasolve.cones import project_cone, project_dual_cone, project_soc  # noqa: E402
from metasolve.learned.neural_scs import IntermittentSCS, RecurrentSCS  # noqa: E402
from metasolve.problems import ConeProgram, ConeSpec  # noqa: E402
from metasolve.solution import Solution, Status  # noqa: E402
from metasolve.solvers.anderson import AndersonSCS  # noqa: E402
from metasolve.solvers.scs import (  # noqa: E402
    SCS,
    TAU_FLOOR,
    LinearStep,
    cold_start,
    primal_dual,
    tau_normalized,
    unpack,
)
from metasolve.tasks.conic import DynamicLassoFamily, KalmanFamily, LassoFamily  # noqa: E402
from metasolve.training.losses import ResidualSumLoss  # noqa: E402

torch.set_num_threads(1)

F64 = torch.float64
#: zero, nonneg and second-order cones of equal and different sizes, including a run of equal
#: sizes that is interrupted and resumed (projected in separate vectorised runs) and SOC(1).
CONES = ConeSpec(zero=2, nonneg=3, soc=(3, 3, 3, 5, 2, 1, 3))


def soc_blocks(cones: ConeSpec):
    start = cones.zero + cones.nonneg
    for q in cones.soc:
        yield start, q
        start += q


def random_points(cones: ConeSpec, count: int, seed: int) -> torch.Tensor:
    """Generic points plus points already in K and in the polar cone -K*, at several scales."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(count, cones.dim, generator=gen, dtype=F64)
    v = v * torch.logspace(-2, 2, count, dtype=F64).unsqueeze(1)
    inside = project_cone(torch.randn(4, cones.dim, generator=gen, dtype=F64), cones)
    polar = -project_dual_cone(torch.randn(4, cones.dim, generator=gen, dtype=F64), cones)
    return torch.cat([v, inside, polar])


# --------------------------------------------------------------------------------------------
# 1. Cone projections
# --------------------------------------------------------------------------------------------


def test_project_cone_lands_in_k_and_is_idempotent():
    v = random_points(CONES, 40, seed=0)
    p = project_cone(v, CONES)
    assert torch.equal(p[:, :CONES.zero], torch.zeros_like(p[:, :CONES.zero]))
    assert bool((p[:, CONES.zero:CONES.zero + CONES.nonneg] >= 0).all())
    for start, q in soc_blocks(CONES):
        t, z = p[:, start], p[:, start + 1:start + q]
        assert bool((torch.linalg.vector_norm(z, dim=1) <= t + 1e-12).all()), (start, q)
    torch.testing.assert_close(project_cone(p, CONES), p, rtol=0, atol=1e-12)

    d = project_dual_cone(v, CONES)
    torch.testing.assert_close(d[:, :CONES.zero], v[:, :CONES.zero], rtol=0, atol=0)
    torch.testing.assert_close(d[:, CONES.zero:], p[:, CONES.zero:], rtol=0, atol=0)
    torch.testing.assert_close(project_dual_cone(d, CONES), d, rtol=0, atol=1e-12)


def test_project_soc_cases_and_idempotence():
    gen = torch.Generator().manual_seed(1)
    for q in (1, 2, 3, 7):
        v = 3 * torch.randn(200, q, generator=gen, dtype=F64)
        p = project_soc(v)
        norm = torch.linalg.vector_norm(v[:, 1:], dim=1)
        inside, polar = norm <= v[:, 0], norm <= -v[:, 0]
        torch.testing.assert_close(p[inside], v[inside], rtol=0, atol=0)
        assert bool((p[polar] == 0).all())
        torch.testing.assert_close(project_soc(p), p, rtol=0, atol=1e-12)
        assert bool((torch.linalg.vector_norm(p[:, 1:], dim=1) <= p[:, 0] + 1e-12).all())
    # A batch with extra leading dimensions projects blockwise.
    v = torch.randn(4, 5, 3, generator=gen, dtype=F64)
    torch.testing.assert_close(project_soc(v), project_soc(v.reshape(20, 3)).reshape(4, 5, 3))


def test_moreau_decomposition():
    """``v = Pi_K(v) - Pi_{K*}(-v)`` with the two parts orthogonal (the polar cone is -K*)."""
    v = random_points(CONES, 40, seed=2)
    p, d = project_cone(v, CONES), project_dual_cone(-v, CONES)
    torch.testing.assert_close(p - d, v, rtol=0, atol=1e-12)
    inner = (p * d).sum(dim=1)
    assert float(inner.abs().max()) <= 1e-10 * float(v.abs().max()) ** 2


def _cvxpy_projection(cones: ConeSpec, dual: bool):
    p = cp.Variable(cones.dim)
    v = cp.Parameter(cones.dim)
    cons = [] if dual or cones.zero == 0 else [p[:cones.zero] == 0]
    if cones.nonneg:
        cons.append(p[cones.zero:cones.zero + cones.nonneg] >= 0)
    for start, q in soc_blocks(cones):
        if q == 1:
            cons.append(p[start] >= 0)
        else:
            cons.append(cp.SOC(p[start], p[start + 1:start + q]))
    return cp.Problem(cp.Minimize(cp.sum_squares(p - v)), cons), p, v


@pytest.mark.parametrize("dual", [False, True])
def test_projection_matches_cvxpy(dual):
    # Generic points only (some of their blocks still land on a boundary or at 0): for points
    # that already lie on the boundary of K or at the apex, an interior-point method is only
    # accurate to about sqrt(tolerance), those cases are checked exactly above.
    points = random_points(CONES, 12, seed=3)[:12]
    ours = (project_dual_cone if dual else project_cone)(points, CONES)
    problem, p, v = _cvxpy_projection(CONES, dual)
    for point, mine in zip(points.numpy(), ours.numpy(), strict=True):
        v.value = point
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "solution may be inaccurate" at this tolerance
            problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10,
                          tol_feas=1e-10)
        assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
        np.testing.assert_allclose(mine, p.value, rtol=0,
                                   atol=1e-6 * max(1.0, np.abs(point).max()))


def test_projection_rejects_wrong_width():
    with pytest.raises(ValueError, match="vectors"):
        project_cone(torch.zeros(2, CONES.dim + 1, dtype=F64), CONES)


# --------------------------------------------------------------------------------------------
# 2-4. Convergence to scs's solution, normalisation, statuses
# --------------------------------------------------------------------------------------------


TIGHT = {"eps_abs": 1e-9, "eps_rel": 1e-9}


@pytest.fixture(scope="module")
def test_programs():
    return {"lasso": LassoFamily(p=10, q=20).sample(3, seed=11).problem,
            "kalman": KalmanFamily(steps=10).sample(2, seed=12).problem,
            "dynamic_lasso": DynamicLassoFamily(steps=2).sample(2, seed=13).problem}


@pytest.fixture(scope="module")
def scs_solutions(test_programs):
    out = {}
    for name, program in test_programs.items():
        out[name] = [solve_with_scs(program, i, **TIGHT) for i in range(program.batch_size)]
        assert all(ref["status"] == "solved" for ref in out[name])
    return out


@pytest.fixture(scope="module")
def our_solutions(test_programs):
    out = {}
    for name, program in test_programs.items():
        for method in (SCS(**TIGHT), AndersonSCS(**TIGHT)):
            out[name, method.name] = ms.run(method, program, maxiter=20000)
    return out


def assert_matches_scs(program, solution, refs, normalize=True):
    assert bool((solution.status == Status.CONVERGED).all()), solution.summary()
    res = primal_dual(program, solution.x, normalize)
    objective = program.objective(res["x"])
    for i, ref in enumerate(refs):
        x = res["x"][i].numpy()
        scale = max(1.0, np.linalg.norm(ref["x"]))
        assert np.linalg.norm(x - ref["x"]) <= 1e-5 * scale
        # c^T x (the program's offset is zero for these families) and the original objective.
        assert abs(float(res["objective"][i]) - ref["objective"]) <= \
            1e-5 * max(1.0, abs(ref["objective"]))
        assert abs(float(objective[i]) - (ref["objective"] + float(program.offset[i]))) <= \
            1e-5 * max(1.0, abs(ref["objective"]))


@pytest.mark.parametrize("name", ["lasso", "kalman", "dynamic_lasso"])
@pytest.mark.parametrize("method", ["scs", "scs-anderson"])
def test_iteration_converges_to_scs_solution(name, method, test_programs, scs_solutions,
                                             our_solutions):
    assert_matches_scs(test_programs[name], our_solutions[name, method], scs_solutions[name])


def test_anderson_needs_fewer_iterations(our_solutions):
    plain = torch.cat([our_solutions[name, "scs"].iterations for name in ("lasso", "kalman")])
    accel = torch.cat([our_solutions[name, "scs-anderson"].iterations
                       for name in ("lasso", "kalman")])
    assert float(accel.double().mean()) < float(plain.double().mean())
    assert int((accel < plain).sum()) > plain.numel() // 2


def test_normalize_false_converges_to_same_solution(test_programs, scs_solutions,
                                                    our_solutions):
    program = test_programs["lasso"]
    raw = ms.run(SCS(normalize=False, **TIGHT), program, maxiter=20000)
    assert_matches_scs(program, raw, scs_solutions["lasso"], normalize=False)
    x_raw = primal_dual(program, raw.x, normalize=False)["x"]
    x_norm = primal_dual(program, our_solutions["lasso", "scs"].x)["x"]
    torch.testing.assert_close(x_raw, x_norm, rtol=0, atol=1e-6)


def planted_program(seed: int, cones: ConeSpec | None = None, n: int = 2):
    """A feasible, bounded cone program with known optimum: ``s* = Pi_K(w)`` and
    ``y* = Pi_{K*}(-w)`` are complementary (Moreau), ``b = A x* + s*``, ``c = -A^T y*``."""
    cones = ConeSpec(nonneg=1, soc=(3,)) if cones is None else cones
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(cones.dim, n, generator=gen, dtype=F64)
    w = torch.randn(1, cones.dim, generator=gen, dtype=F64)
    x_star = torch.randn(1, n, generator=gen, dtype=F64)
    s_star, y_star = project_cone(w, cones), project_dual_cone(-w, cones)
    program = ConeProgram(a, x_star @ a.T + s_star, -(y_star @ a), cones)
    return program, x_star, y_star, s_star


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_recovers_planted_solution(seed):
    # (Seeds 0 and 5 are ill-conditioned: 10^4 iterations, and x* is only determined to ~1e-7.)
    cones = ConeSpec(zero=1, nonneg=3, soc=(3, 4))
    program, x_star, y_star, s_star = planted_program(seed, cones, n=4)
    solution = ms.run(SCS(**TIGHT), program, maxiter=5000)
    assert bool(solution.converged.all())
    res = primal_dual(program, solution.x)
    torch.testing.assert_close(res["x"], x_star, rtol=0, atol=1e-6)
    torch.testing.assert_close(res["objective"], (program.cost * x_star).sum(dim=1), rtol=0,
                               atol=1e-7)


def test_stopping_statuses_and_residuals(test_programs):
    program = test_programs["lasso"]
    eps = 1e-6
    solution = ms.run(SCS(eps_abs=eps, eps_rel=eps), program, maxiter=20000)
    assert solution.status.tolist() == [int(Status.CONVERGED)] * program.batch_size
    assert bool((solution.iterations > 0).all())
    res = primal_dual(program, solution.x)
    for name in ("primal", "dual", "gap"):
        assert bool((res[name] <= eps + eps * res[f"{name}_scale"]).all()), name
    assert bool((res["tau"] > 0).all())
    # primal_dual's residuals, recomputed independently from (x, y, s) in NumPy.
    for i in range(program.batch_size):
        a = program.matrix[i].numpy()
        b, c = program.rhs[i].numpy(), program.cost[i].numpy()
        x, y, s = (res[key][i].numpy() for key in ("x", "y", "s"))
        np.testing.assert_allclose(float(res["primal"][i]), np.abs(a @ x + s - b).max(),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(float(res["dual"][i]), np.abs(a.T @ y + c).max(),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(float(res["gap"][i]), abs(c @ x + b @ y),
                                   rtol=1e-8, atol=1e-14)
    # The same iteration stopped after a few iterations has not converged.
    short = ms.run(SCS(eps_abs=eps, eps_rel=eps), program, maxiter=5)
    assert short.status.tolist() == [int(Status.MAX_ITERATIONS)] * program.batch_size
    assert short.iterations.tolist() == [5] * program.batch_size
    # The stopping test is SCS's, and independent of rtol/atol.
    loose = ms.run(SCS(eps_abs=1e-2, eps_rel=1e-2), program, maxiter=20000, rtol=0.0)
    assert bool(loose.converged.all())
    assert bool((loose.iterations < solution.iterations).all())


def test_linear_step_solves_embedding(test_programs):
    """``LinearStep(w)`` solves ``(I + Q) u = w`` for the (normalised) embedding matrix."""
    for normalize in (True, False):
        for program in (test_programs["lasso"], test_programs["kalman"]):
            linear = LinearStep(program, normalize)
            n, m = program.variables, program.constraints
            gen = torch.Generator().manual_seed(7)
            w = torch.randn(program.batch_size, n + m + 1, generator=gen, dtype=F64)
            u = linear(w)
            h = linear.h
            c, b = h[:, :n], h[:, n:]
            x, y, tau = u[:, :n], u[:, n:n + m], u[:, -1:]
            qu = torch.cat([program.rmatvec(y) + c * tau, -program.matvec(x) + b * tau,
                            -(c * x).sum(1, keepdim=True) - (b * y).sum(1, keepdim=True)], 1)
            torch.testing.assert_close(u + qu, w, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# 5. Gradients
# --------------------------------------------------------------------------------------------


def _run_three(program, x0=None):
    taus = []

    def record(k, state, norms):
        taus.append(float(unpack(state["x"].detach())[0][:, -1].min()))

    solution = ms.run(SCS(), program, x0=x0, fixed_iterations=3, callback=record)
    # Keep the test away from the tau floor (a kink of tau_normalized): with seed 0 the
    # iterates' tau stays near 0.2-0.6 (a random, unplanted program instead drives tau to 0).
    assert min(taus) > 1e3 * TAU_FLOOR, taus
    return tau_normalized(solution.x)


def test_gradcheck_initial_guess():
    program = planted_program(0)[0]
    gen = torch.Generator().manual_seed(1)
    correction = (0.1 * torch.randn(1, program.size, generator=gen, dtype=F64))
    correction.requires_grad_()

    def final(corr):
        return _run_three(program, cold_start(program) + corr)

    assert torch.autograd.gradcheck(final, (correction,))


def test_gradcheck_data():
    program = planted_program(0)[0]

    def through_rhs(rhs):
        return _run_three(ConeProgram(program.matrix, rhs, program.cost, program.cones))

    def through_matrix(matrix):
        return _run_three(ConeProgram(matrix, program.rhs, program.cost, program.cones))

    def through_cost(cost):
        return _run_three(ConeProgram(program.matrix, program.rhs, cost, program.cones))

    assert torch.autograd.gradcheck(through_rhs, (program.rhs.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(through_matrix, (program.matrix.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(through_cost, (program.cost.clone().requires_grad_(),))


def test_gradcheck_cone_projection():
    v = random_points(CONES, 6, seed=4)[:6].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: project_cone(t, CONES), (v,))
    assert torch.autograd.gradcheck(lambda t: project_dual_cone(t, CONES), (v,))


# --------------------------------------------------------------------------------------------
# 6. Learned accelerators
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lasso_tasks():
    family = LassoFamily(p=10, q=20)
    return family, family.sample(2, seed=21).problem


def _iterates(method, program, iterations=6, **kwargs):
    seen = []
    solution = ms.run(method, program, fixed_iterations=iterations,
                      callback=lambda k, state, norms: seen.append(state["x"].detach()),
                      **kwargs)
    return solution, seen


def test_untrained_learned_models_reproduce_scs(lasso_tasks):
    family, program = lasso_tasks
    reference, ref_iterates = _iterates(SCS(), program)
    for method in (RecurrentSCS(program.size, hidden=8, encoder=(16,)),
                   IntermittentSCS(program.size, family.feature_dim, access=(1, 2),
                                   hidden=(16,))):
        with torch.no_grad():
            solution, iterates = _iterates(method, program)
        torch.testing.assert_close(solution.residual_history, reference.residual_history,
                                   rtol=1e-10, atol=1e-13)
        for mine, theirs in zip(iterates, ref_iterates, strict=True):
            # The learned models step in tau-normalised units; SCS's embedding is homogeneous.
            torch.testing.assert_close(tau_normalized(mine), tau_normalized(theirs), rtol=1e-9,
                                       atol=1e-11)


def test_intermittent_model_acts_only_at_access_iterations(lasso_tasks):
    family, program = lasso_tasks
    method = IntermittentSCS(program.size, family.feature_dim, access=(3, 5), hidden=(16,))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in method.net.parameters():
            p.copy_(0.01 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    _, ref_iterates = _iterates(SCS(), program)
    with torch.no_grad():
        _, iterates = _iterates(method, program)
    # Before the first access the iterates are SCS's, exactly.
    for k in range(2):
        assert torch.equal(iterates[k], ref_iterates[k]), k
    # The access at iteration 3 changes the iterate.
    assert not torch.allclose(tau_normalized(iterates[2]), tau_normalized(ref_iterates[2]))
    # Off the access set, every step is a plain SCS step from the previous iterate.
    linear = LinearStep(program)
    for k in (3, 5):  # iterations 4 and 6 (the callback's k is 0-based)
        plain = method.fixed_point_map(program, linear, iterates[k - 1])
        torch.testing.assert_close(iterates[k], plain, rtol=1e-12, atol=1e-12)
    for k in (2, 4):  # iterations 3 and 5 are accessed
        plain = method.fixed_point_map(program, linear, iterates[k - 1])
        assert not torch.allclose(tau_normalized(iterates[k]), tau_normalized(plain))


def test_scaled_corrections_keep_scs_fixed_points(lasso_tasks):
    """With ``scaled_corrections`` a model with arbitrary weights leaves SCS's solution where it
    is; the paper's unscaled corrections move it off."""
    family, program = lasso_tasks
    solved = ms.run(SCS(), program, fixed_iterations=3000, rtol=0.0)
    assert bool((solved.residual_history[-1] < 1e-11).all())
    start = solved.x.detach()
    gen = torch.Generator().manual_seed(1)
    for scaled in (True, False):
        for method in (RecurrentSCS(program.size, hidden=8, encoder=(16,),
                                    scaled_corrections=scaled),
                       IntermittentSCS(program.size, family.feature_dim, access=(1, 2, 3),
                                       hidden=(16,), scaled_corrections=scaled)):
            with torch.no_grad():
                for p in method.parameters():
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
                moved = ms.run(method, program, x0=start, fixed_iterations=3, rtol=0.0)
            final = moved.residual_history[-1]
            if scaled:
                assert bool((final < 1e-9).all()), (method.name, final)
            else:
                assert bool((final > 1e-4).all()), (method.name, final)


def test_learned_models_check_their_input(lasso_tasks):
    family, program = lasso_tasks
    with pytest.raises(ValueError, match="length"):
        ms.run(RecurrentSCS(program.size + 2, hidden=4, encoder=()), program, maxiter=2)
    with pytest.raises(ValueError, match="length"):
        ms.run(IntermittentSCS(program.size - 2, family.feature_dim, hidden=(4,)), program,
               maxiter=2)
    no_context = dataclasses.replace(program, context=None)
    with pytest.raises(ValueError, match="context"):
        ms.run(IntermittentSCS(program.size, family.feature_dim, hidden=(4,)), no_context,
               maxiter=2)
    wrong_width = IntermittentSCS(program.size, family.feature_dim + 1, hidden=(4,))
    with pytest.raises(ValueError, match="context"):
        ms.run(wrong_width, program, maxiter=2)
    with pytest.raises(ValueError):
        RecurrentSCS(3)


def test_learned_start_correction_is_tau_normalised(lasso_tasks):
    """A zero ``start_correction`` gives the cold start (tau = 1): plain SCS again."""
    family, program = lasso_tasks
    method = RecurrentSCS(program.size, hidden=4, encoder=(8,))
    zero = {"start_correction": torch.zeros(program.batch_size, program.size, dtype=F64)}
    with torch.no_grad():
        corrected = ms.run(method, program, params=zero, fixed_iterations=3)
    plain = ms.run(SCS(), program, fixed_iterations=3)
    torch.testing.assert_close(corrected.residual_history, plain.residual_history, rtol=1e-10,
                               atol=1e-13)


# --------------------------------------------------------------------------------------------
# 7. ResidualSumLoss
# --------------------------------------------------------------------------------------------


def _solution(history: torch.Tensor, reference: torch.Tensor) -> Solution:
    batch = history.shape[1]
    return Solution(x=torch.zeros(batch, 1, dtype=F64),
                    status=torch.zeros(batch, dtype=torch.int64),
                    iterations=torch.full((batch,), history.shape[0] - 1),
                    residual_history=history, reference_norm=reference,
                    threshold=torch.zeros(batch, dtype=F64), wall_time=0.0)


def test_residual_sum_loss_windows_and_values():
    loss = ResidualSumLoss(5, windows=[(0, 3), (1, 3)])
    assert loss.weights().tolist() == [1.0, 2.0, 2.0, 1.0, 0.0, 0.0]
    assert loss.run_options()["fixed_iterations"] == 5
    history = torch.tensor([[4.0, 2.0], [2.0, 1.0], [1.0, 0.5], [0.5, 0.25], [0.1, 1e-20],
                            [7.0, 7.0]], dtype=F64)
    reference = torch.tensor([4.0, 2.0], dtype=F64)
    solution = _solution(history, reference)
    rel = (history / reference).numpy()
    weights = np.array([1, 2, 2, 1, 0, 0], dtype=float)
    np.testing.assert_allclose(loss(solution).numpy(), weights @ rel, rtol=1e-14)

    logged = ResidualSumLoss(5, log=True, windows=[(0, 3), (1, 3)], floor=1e-12)
    np.testing.assert_allclose(logged(solution).numpy(),
                               weights @ np.log(np.maximum(rel, 1e-12)), rtol=1e-14)

    plain = ResidualSumLoss(5)
    assert plain.weights().tolist() == [1.0] * 6
    np.testing.assert_allclose(plain(solution).numpy(), rel.sum(axis=0), rtol=1e-14)
    # A window may end exactly at the last iteration.
    assert ResidualSumLoss(5, windows=[(3, 3)]).weights().tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("windows", [[], [(0, 7)], [(4, 3)], [(0, 0)], [(-1, 2)]])
def test_residual_sum_loss_rejects_bad_windows(windows):
    with pytest.raises(ValueError, match="windows"):
        ResidualSumLoss(5, windows=windows)


# --------------------------------------------------------------------------------------------
# 8. Bad input
# --------------------------------------------------------------------------------------------


def _data(m=4, n=2, batch=1):
    return (torch.ones(m, n, dtype=F64), torch.ones(batch, m, dtype=F64),
            torch.ones(batch, n, dtype=F64))


def test_cone_program_rejects_bad_input():
    a, b, c = _data()
    cones = ConeSpec(nonneg=1, soc=(3,))
    ConeProgram(a, b, c, cones)  # valid
    with pytest.raises(ValueError, match="matrix"):
        ConeProgram(torch.ones(3, 2, dtype=F64), b, c, cones)
    with pytest.raises(ValueError, match="matrix"):
        ConeProgram(torch.ones(2, 4, 2, dtype=F64), b, c, cones)
    with pytest.raises(ValueError, match="matrix"):
        ConeProgram(a.to_sparse(), b, c, cones)
    with pytest.raises(ValueError, match="rhs"):
        ConeProgram(a, b[0], c, cones)
    with pytest.raises(ValueError, match="cost"):
        ConeProgram(a, b, torch.ones(2, 2, dtype=F64), cones)
    with pytest.raises(ValueError, match="cones"):
        ConeProgram(a, b, c, ConeSpec(nonneg=2, soc=(3,)))
    with pytest.raises(TypeError, match="cones"):
        ConeProgram(a, b, c, {"nonneg": 1, "soc": [3]})
    with pytest.raises(TypeError, match="dtype"):
        ConeProgram(a.float(), b, c, cones)
    with pytest.raises(ValueError, match="rhs"):
        ConeProgram(a, torch.full_like(b, float("nan")), c, cones)
    with pytest.raises(ValueError, match="context"):
        ConeProgram(a, b, c, cones, context=torch.ones(2, 3, dtype=F64))


def test_cone_spec_rejects_bad_input():
    with pytest.raises(ValueError, match="nonneg"):
        ConeSpec(nonneg=-1)
    with pytest.raises(ValueError, match="zero"):
        ConeSpec(zero=True)
    with pytest.raises(ValueError, match="soc"):
        ConeSpec(soc=(3, 0))
    with pytest.raises(ValueError, match="soc"):
        ConeSpec(soc=(3.0,))
    assert ConeSpec(soc=[3, 2]).soc == (3, 2)
    assert ConeSpec(zero=1, nonneg=2, soc=(3, 2)).dim == 8


def test_scs_rejects_bad_options():
    with pytest.raises(ValueError, match="alpha"):
        SCS(alpha=2.5)
    with pytest.raises(ValueError, match="alpha"):
        SCS(alpha=2.0)
    with pytest.raises(ValueError, match="alpha"):
        SCS(alpha=0.0)
    with pytest.raises(TypeError, match="normalize"):
        SCS(normalize="yes")
    with pytest.raises(ValueError, match="eps_abs"):
        SCS(eps_abs=-1e-4)
    with pytest.raises(ValueError, match="memory"):
        AndersonSCS(memory=0)


def test_run_rejects_bad_problem_and_guess():
    program = planted_program(0)[0]
    with pytest.raises(TypeError, match="ConeProgram"):
        ms.run(SCS(), ms.LinearSystem(torch.eye(2, dtype=F64), torch.ones(1, 2, dtype=F64)))
    with pytest.raises(ValueError, match="x0"):
        ms.run(SCS(), program, x0=torch.zeros(1, program.size - 1, dtype=F64))
    with pytest.raises(TypeError, match="x0"):
        ms.run(SCS(), program, x0=torch.zeros(1, program.size, dtype=torch.float32))


def test_learned_heads_must_match_the_method():
    program = ms.tasks.LassoFamily(p=3, q=4).sample(2, seed=0).problem
    method = RecurrentSCS(program.size, hidden=4, encoder=(4,))
    with pytest.raises(ValueError, match="start_correction"):
        ms.run(method, program, params={"start_correction": torch.zeros(
            2, program.size - 2, dtype=torch.float64)}, fixed_iterations=1, rtol=0.0)
    with pytest.raises(ValueError, match="hidden0"):
        ms.run(method, program, params={"hidden0": torch.zeros(2, 5, dtype=torch.float64)},
               fixed_iterations=1, rtol=0.0)
    with pytest.raises(TypeError, match="windows"):
        ResidualSumLoss(5, windows=[(0.5, 2)])
