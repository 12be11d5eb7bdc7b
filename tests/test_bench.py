"""``metasolve bench`` and the deployment of learned parts into the strong classical solvers:
each adapter against the solver it feeds (the answer with the learned part equals the plain
solver's), the safeguard of each adapter, the timing records, and the command end to end on a
smoke-scale model. No timed assertions: speed is measured by the command, not checked here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import metasolve as ms
from metasolve.baselines import deploy, strong
from metasolve.benchmark import BenchUnsupported, _numpy_functions, _padded_jacobian, _starts
from metasolve.cli import app
from metasolve.evaluation.bench import (
    BenchCase,
    Contender,
    Outcome,
    Timed,
    break_even,
    case_records,
    check_threads,
    strongest,
    time_case,
)
from metasolve.polynomials import chebyshev_basis_apply
from metasolve.solvers.scs import cold_start
from metasolve.tasks.operators import poisson2d, sparse_system

cli = CliRunner()


def _guess_solver(family, guess):
    """A Jacobi solver whose meta-solver's prediction is replaced by ``guess(features)``."""
    psi = ms.NetworkMetaSolver(family.n, {"x0": ms.BasisHead(ms.sine_basis(family.n))})
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=family, monitor="error")
    solver.params = lambda features, problem=None: {"x0": guess(features)}
    return solver


def test_learned_guess_feeds_scipy_and_pyamg_cg_and_keeps_only_good_starts(poisson16):
    tasks = poisson16.sample(6, seed=3)
    exact = tasks.problem.solution
    bad = torch.zeros(6, dtype=torch.bool)
    bad[::2] = True  # every other guess is far off: a residual larger than the zero guess's

    def guess(features):
        return torch.where(bad[:, None], 50 * exact, 0.98 * exact)

    solver = _guess_solver(poisson16, guess)
    deployed = deploy.learned_guess(solver, tasks)
    assert deployed.learned.tolist() == (~bad).tolist() and deployed.replaced == 3
    np.testing.assert_array_equal(deployed.value[bad.numpy()], 0.0)
    np.testing.assert_allclose(deployed.value[~bad.numpy()], 0.98 * exact[~bad].numpy())
    unchecked = deploy.learned_guess(solver, tasks, check="never")
    assert unchecked.learned.all()

    matrices = strong.scipy_matrices(tasks.problem)
    rhs = tasks.problem.rhs.numpy()
    for solve in (strong.scipy_cg, strong.pyamg_cg):
        plain = solve(matrices, rhs, 1e-10)
        warm = solve(matrices, rhs, 1e-10, x0=deployed.value)
        assert plain.converged.all() and warm.converged.all()
        np.testing.assert_allclose(warm.x, exact.numpy(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(warm.x, plain.x, rtol=0, atol=1e-8)
    # A near-exact start saves CG iterations on the instances that use it.
    cold = strong.scipy_cg(matrices, rhs, 1e-10)
    warm = strong.scipy_cg(matrices, rhs, 1e-10, x0=deployed.value)
    assert (warm.iterations[~bad.numpy()] <= cold.iterations[~bad.numpy()]).all()


def test_direct_solvers_agree_with_the_known_solution(poisson16):
    tasks = poisson16.sample(5, seed=4)
    exact = tasks.problem.solution.numpy()
    matrices = strong.scipy_matrices(tasks.problem)
    for result in (strong.dense_direct(tasks.problem), strong.dense_cholesky(tasks.problem),
                   strong.sparse_direct(matrices, tasks.problem.rhs.numpy())):
        np.testing.assert_allclose(result.x, exact, rtol=0, atol=1e-10)
        assert result.converged.all() and (result.iterations == -1).all()


def test_chebyshev_operator_is_the_metasolve_polynomial():
    matrix = poisson2d(6)
    system = sparse_system(matrix, 1, seed=0)
    coefficients = torch.tensor([[0.7, -0.3, 0.2, 0.05]], dtype=torch.float64)
    lower = torch.tensor([0.3], dtype=torch.float64)
    upper = torch.tensor([8.0], dtype=torch.float64)
    v = system.rhs
    ours = chebyshev_basis_apply(system.matvec, v, coefficients, lower, upper)
    op = deploy.chebyshev_polynomial_operator(matrix, coefficients[0].numpy(), 0.3, 8.0)
    np.testing.assert_allclose(op @ v[0].numpy(), ours[0].numpy(), rtol=1e-12, atol=1e-12)


def test_polynomial_preconditioner_feeds_scipy_cg_and_falls_back_where_not_positive():
    family = ms.SpectrumFamily(size=48, probe_steps=6)
    engine = ms.AutoSpecEngine(6, 4, "basis", hidden=(8,))
    solver = ms.LearnedSolver(ms.ChebyshevExpansion(), engine, family=family)
    matrix = poisson2d(12)
    system = sparse_system(matrix, 3, seed=1)
    features = family.features_of(system.matvec, system.size, 3, 0)
    tasks = ms.TaskBatch(system, features)
    pcg = solver.deployed(ms.ConjugateGradient())
    deployed = deploy.polynomial_preconditioners(pcg, tasks, matrix)
    assert deployed.learned.all()  # the untrained engine's polynomial is Chebyshev's: positive
    matrices, rhs = [matrix], system.rhs.numpy()
    exact = strong.sparse_direct(matrices, rhs).x
    plain = strong.scipy_cg(matrices, rhs, 1e-10)
    pre = strong.scipy_cg(matrices, rhs, 1e-10, preconditioners=deployed.value)
    assert pre.converged.all()
    np.testing.assert_allclose(pre.x, exact, rtol=0, atol=1e-7 * np.abs(exact).max())
    assert (pre.iterations <= plain.iterations).all() and pre.iterations.sum() < \
        plain.iterations.sum()
    # A polynomial negative on the interval is refused and replaced by the classical one.
    params = pcg.params(features)
    negative = {**params, "coefficients": -params["coefficients"]}
    assert not deploy.polynomial_positive(negative).any()
    pcg.params = lambda f, problem=None: negative
    refused = deploy.polynomial_preconditioners(pcg, tasks, matrix)
    assert refused.replaced == 3
    again = strong.scipy_cg(matrices, rhs, 1e-10, preconditioners=refused.value)
    np.testing.assert_allclose(again.x, pre.x, rtol=0, atol=1e-7 * np.abs(exact).max())


def _spd_batch(batch=3, n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    off = -torch.rand(batch, n - 1, generator=g, dtype=torch.float64)
    matrices = torch.diag_embed(torch.full((batch, n), 2.2, dtype=torch.float64))
    matrices = matrices + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    matrices[:, 0, 5] = matrices[:, 5, 0] = -0.2  # a fill-in IC(0) drops
    rhs = torch.randn(batch, n, generator=g, dtype=torch.float64)
    return ms.LinearSystem(matrices, rhs)


def test_ic_preconditioner_feeds_scipy_cg_and_replaces_failed_shifts():
    system = _spd_batch()
    tasks = ms.TaskBatch(system, torch.zeros(3, 2, dtype=torch.float64))
    head = {"alpha": ms.IntervalHead(0.0, 1.0)}
    solver = ms.LearnedSolver(ms.ICCG(alpha=0.05), ms.NetworkMetaSolver(2, head))
    shifts = torch.tensor([0.0, 0.01, -5.0], dtype=torch.float64)  # the last one fails
    solver.params = lambda features, problem=None: {"alpha": shifts}
    deployed = deploy.ic_preconditioners(solver, tasks)
    assert deployed.learned.tolist() == [True, True, False]
    matrices, rhs = strong.scipy_matrices(system), system.rhs.numpy()
    exact = torch.linalg.solve(system.matrix, system.rhs).numpy()
    with_ic = strong.scipy_cg(matrices, rhs, 1e-10, preconditioners=deployed.value)
    plain = strong.scipy_cg(matrices, rhs, 1e-10)
    assert with_ic.converged.all()
    np.testing.assert_allclose(with_ic.x, exact, rtol=0, atol=1e-8)
    assert (with_ic.iterations < plain.iterations).all()
    # The same preconditioner as metasolve's ICCG with the shifts used (the classical 0.05 in
    # place of the failed one): the same iteration counts, up to one from round-off.
    used = torch.tensor([0.0, 0.01, 0.05], dtype=torch.float64)
    ours = ms.run(ms.ICCG(), system, rtol=1e-10, params={"alpha": used})
    np.testing.assert_allclose(ours.x.numpy(), exact, rtol=0, atol=1e-8)
    assert np.abs(ours.iterations.numpy() - with_ic.iterations).max() <= 1


def test_scs_warm_start_from_a_neural_scs_model_reaches_the_cold_solution():
    pytest.importorskip("scs")
    from metasolve.baselines import solve_with_scs
    from metasolve.experiments import neural_scs_common as common
    from metasolve.experiments.neural_scs_kalman import SMOKE
    from metasolve.tasks.conic import KalmanFamily

    family = KalmanFamily(steps=4)
    tasks = family.sample(3, seed=5)
    torch.manual_seed(0)
    solver, _ = common.build_solver("neural_mlp", family, tasks.problem.size, SMOKE)
    deployed = deploy.scs_warm_starts(solver, tasks, 5)
    assert len(deployed.value) == 3
    for i, start in enumerate(deployed.value):
        cold = solve_with_scs(tasks.problem, i, eps_abs=1e-7, eps_rel=1e-7)
        warm = solve_with_scs(tasks.problem, i, warm_start=start, eps_abs=1e-7, eps_rel=1e-7)
        assert cold["status"] == warm["status"] == "solved"
        assert warm["objective"] == pytest.approx(cold["objective"], rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(warm["x"], cold["x"], atol=1e-3 * (1 + np.abs(cold["x"])
                                                                       .max()))
    # A start worse than the cold one is replaced by the cold start (None).
    solver.solve = lambda *a, **k: type("S", (), {"x": torch.full_like(
        cold_start(tasks.problem), 1e6)})()
    assert deploy.scs_warm_starts(solver, tasks, 5).replaced == 3


def test_nonlinear_start_feeds_newton_krylov_and_newton():
    family = ms.ChandrasekharFamily(sizes=(10,))
    tasks = family.sample(3, seed=2)
    solver = ms.r2n2_solver(family, 3, seed=1)
    deployed = deploy.nonlinear_starts(solver, tasks, 2)
    problem = tasks.problem
    reference = strong.batched_newton(problem.function, _padded_jacobian(problem),
                                      problem.start, 1e-12)
    assert reference.converged.all()
    functions = _numpy_functions(problem)
    for x0 in (problem.start.numpy(), deployed.value):
        nk = strong.scipy_newton_krylov(functions, _starts(problem, x0), 1e-9)
        assert nk.converged.all()
        np.testing.assert_allclose(nk.x, reference.x, atol=1e-7)
    newton = strong.batched_newton(problem.function, _padded_jacobian(problem),
                                   torch.from_numpy(deployed.value), 1e-10)
    np.testing.assert_allclose(newton.x, reference.x, atol=1e-9)
    # Where the learned iterate is worse than the start, the start is kept.
    solver.solve = lambda *a, **k: type("S", (), {"x": torch.full_like(problem.start, 50.0)})()
    kept = deploy.nonlinear_starts(solver, tasks, 2)
    assert kept.replaced == 3
    np.testing.assert_array_equal(kept.value, problem.start.numpy())


def test_linear_start_feeds_gmres_and_keeps_the_zero_start_where_worse():
    family = ms.tasks.MatrixSetFamily(torch.eye(5, dtype=torch.float64).unsqueeze(0)
                                      + 0.1 * torch.ones(1, 5, 5, dtype=torch.float64), [1.0] * 5)
    tasks = family.sample(4, seed=3)
    solver = ms.r2n2_solver(family, 3, seed=1)
    problem = tasks.problem
    deployed = deploy.linear_starts(solver, tasks, 2)
    exact = strong.dense_direct(problem)
    matrices = strong.scipy_matrices(problem)
    rhs = problem.rhs.numpy()
    for x0 in (None, deployed.value):
        result = strong.scipy_gmres(matrices, rhs, 1e-10, x0=x0)
        assert result.converged.all()
        np.testing.assert_allclose(result.x, exact.x, atol=1e-8)
    solver.solve = lambda *a, **k: type("S", (), {"x": torch.full_like(problem.rhs, 50.0)})()
    kept = deploy.linear_starts(solver, tasks, 2)
    assert kept.replaced == 4
    np.testing.assert_array_equal(kept.value, np.zeros_like(rhs))


def test_eigensolvers_find_the_smallest_eigenvalues_of_a_dense_eigh():
    matrix = poisson2d(12)
    exact = np.linalg.eigvalsh(matrix.toarray())[:4]
    threshold = np.full(2, 1e-8 * 8 * 13 ** 2)
    starts = np.random.default_rng(0).standard_normal((2, 144, 6))
    for result in (strong.scipy_eigsh_shift_invert([matrix], 4, threshold),
                   strong.lobpcg_amg([matrix], starts, 4, threshold)):
        assert result.converged.all()
        np.testing.assert_allclose(result.x, np.stack([exact, exact]), rtol=1e-9)
    # A threshold no solver meets is reported as not converged.
    assert not strong.lobpcg_amg([matrix], starts, 4, np.zeros(2), maxiter=3).converged.any()


def test_timing_records_ratios_and_break_even():
    calls = []

    def contender(method, role, x):
        def solve():
            calls.append(method)
            return Outcome(np.array([[x]]), np.array([True]), np.array([3]))
        return Contender(method, role, method, solve)

    case = BenchCase("model", "toy", "rtol 1e-6", 1,
                     [contender("learned", "learned", 1.0),
                      contender("classical", "classical", 1.0),
                      contender("a", "strong", 1.0), contender("b", "strong", 2.0),
                      contender("deployed", "deployed", 1.0)],
                     reference=np.array([[1.0]]), train_seconds=10.0, train_source="given")
    timed = time_case(case, repeats=3, threads="1")
    assert len(calls) == 4 * 5  # a warm-up and three rounds, each contender once per round
    assert calls[5:10] == ["learned", "classical", "a", "b", "deployed"]
    assert calls[10:15] == ["classical", "a", "b", "deployed", "learned"]  # rotated
    records = case_records(case, timed, 3, "1")
    best = strongest(timed)
    assert best.contender.role == "strong"
    metrics = {(r["method"], r["metric"]) for r in records}
    for method in ("learned", "classical", "a", "b", "deployed"):
        assert (method, "seconds_per_instance") in metrics
        assert (method, "ratio_to_strongest") in metrics
    assert ("learned", "break_even_solves_vs_strongest") in metrics
    errors = [r for r in records if r["metric"] == "max_relative_error"]
    assert {r["method"]: r["value"] for r in errors}["b"] == pytest.approx(1.0)
    assert all(r["strongest"] == best.contender.method for r in records)
    assert break_even(10.0, 1.0, 3.0) == 5.0 and break_even(10.0, 2.0, 1.0) == float("inf")
    # A learned solve that used its learned part nowhere pays nothing back, however fast.
    unused = Timed(Contender("learned", "learned", "learned", lambda: None),
                   Outcome(np.array([[1.0]]), np.array([True]), np.array([3]),
                           learned=np.array([False])), [1e-9])
    paid = [r for r in case_records(case, [unused, *timed[1:]], 3, "1")
            if r["method"] == "learned" and r["metric"].startswith("break_even")]
    assert len(paid) == 2 and not any(r["pays_back"] for r in paid)
    assert check_threads(" Default ") == "default" and check_threads(2) == "2"
    with pytest.raises(ValueError, match="threads"):
        check_threads("zero")


def test_bench_model_covers_all_four_roles(poisson16):
    tasks = poisson16.sample(4, seed=6)
    solver = _guess_solver(poisson16, lambda f: torch.zeros(f.shape[0], 16,
                                                            dtype=torch.float64))
    result = ms.bench_model(solver, tasks, repeats=1, rtol=1e-6, maxiter=2000,
                            train_seconds=1.0)
    roles = {r["role"] for r in result["records"]}
    assert roles == {"training", "learned", "classical", "strong", "deployed"}
    assert len(result["tables"]) == 1
    converged = [r for r in result["records"] if r["metric"] == "converged_fraction"]
    assert all(r["value"] == 1.0 for r in converged)


def test_bench_refuses_unsupported_experiments_and_missing_models(tmp_path):
    result = cli.invoke(app, ["bench", "no-such-experiment", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown experiment 'no-such-experiment'" in result.output
    missing = cli.invoke(app, ["bench", "poisson-jacobi", "--out", str(tmp_path)])
    assert missing.exit_code == 2
    assert "metasolve reproduce poisson-jacobi --quick" in missing.output
    assert not (tmp_path / "poisson-jacobi").exists()  # nothing created for a missing model
    both = cli.invoke(app, ["bench", "poisson-jacobi", "--model", "x.safetensors"])
    assert both.exit_code == 2
    bad = cli.invoke(app, ["bench", "--model", str(tmp_path / "none.safetensors")])
    assert bad.exit_code == 2 and "no metasolve file" in bad.output
    with pytest.raises(BenchUnsupported, match="unknown experiment"):
        ms.bench("no-such-experiment", out_dir=tmp_path)


def test_bench_command_end_to_end_on_a_smoke_model(tmp_path):
    trained = cli.invoke(app, ["reproduce", "r2n2-chandrasekhar", "--smoke", "--workers", "1",
                               "--out", str(tmp_path), "--no-progress"])
    assert trained.exit_code == 0, trained.output
    records_path, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    result = cli.invoke(app, ["bench", "r2n2-chandrasekhar", "--scale", "smoke", "--out",
                              str(tmp_path), "--repeats", "1", "--count", "4", "--json",
                              str(records_path), "--plot", str(plot), "--format", "markdown",
                              "--no-progress"])
    assert result.exit_code == 0, result.output
    records = json.loads(records_path.read_text())
    assert plot.exists() and "newton_krylov" in result.output
    assert {r["role"] for r in records} >= {"learned", "classical", "strong", "deployed"}
    assert all(r["experiment"] == "r2n2-chandrasekhar" for r in records)
    assert all(r["count"] == 4 and r["scale"] == "smoke" for r in records)
    model = tmp_path / "r2n2-chandrasekhar" / "smoke" / "models" / "r2n2.safetensors"
    mine = cli.invoke(app, ["bench", "--model", str(model), "--count", "3", "--repeats", "1",
                            "--rtol", "1e-8", "--format", "markdown", "--no-progress"])
    assert mine.exit_code == 0, mine.output
    saved = json.loads((model.with_name("r2n2-bench.json")).read_text())
    assert {r["experiment"] for r in saved} == {"model"}


ALL_ROLES = {"learned", "classical", "strong", "deployed"}


@pytest.mark.parametrize(("name", "word", "roles"), [
    ("neural-scs-lasso", "lasso", ALL_ROLES), ("neural-scs-lasso-variants", "lasso", ALL_ROLES),
    ("r2n2-linear", "gmres", ALL_ROLES), ("autospec-eigen", "eigsh", ALL_ROLES),
    ("robertson-newton-sor", "batched newton", ALL_ROLES),
    # A learned integrator has no strong solver to be deployed into.
    ("r2n2-vanderpol", "solve_ivp", ALL_ROLES - {"deployed"}),
    # Nothing takes a learned series for A^(-1/2) b in.
    ("autospec-invsqrt", "lanczos", ALL_ROLES - {"deployed"})])
def test_the_newer_bench_cases_run_end_to_end(tmp_path, name, word, roles):
    trained = cli.invoke(app, ["reproduce", name, "--smoke", "--workers", "1", "--out",
                               str(tmp_path), "--no-progress"])
    assert trained.exit_code == 0, trained.output
    records_path = tmp_path / "bench.json"
    result = cli.invoke(app, ["bench", name, "--scale", "smoke", "--out", str(tmp_path),
                              "--repeats", "1", "--count", "3", "--json", str(records_path),
                              "--format", "markdown", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = json.loads(records_path.read_text())
    assert {r["role"] for r in records} - {"training"} == roles
    converged = [r for r in records if r["metric"] == "converged_fraction"]
    assert converged and all(r["value"] == 1.0 for r in converged)
    assert word in result.output.lower()
