"""The R2N2's classical counterparts (GMRES(n), Newton-Krylov, Runge-Kutta) against SciPy and
closed forms, and the safeguard of a learned R2N2: its certificate on linear systems, its
fallback, its calibration and the classical method kept in the artifact."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse.linalg
import torch

import metasolve as ms
from metasolve.artifact import ArtifactError, read_tensors, write_tensors
from metasolve.learned import CLASSICAL_TABLEAUS, r2n2_solver
from metasolve.learned.r2n2 import CERTIFICATE_MAX_SIZE
from metasolve.tasks.chandrasekhar import ChandrasekharSystem

F64 = torch.float64


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def nonsymmetric(n, *, batch=None, seed=0, shift=4.0):
    """A random nonsymmetric matrix with its spectrum right of the origin."""
    shape = (n, n) if batch is None else (batch, n, n)
    return randn(*shape, seed=seed) / n ** 0.5 + shift * torch.eye(n, dtype=F64) / 2


# --- GMRES(m) against SciPy --------------------------------------------------------------


def scipy_gmres_cycles(a: np.ndarray, b: np.ndarray, restart: int, cycles: int):
    """SciPy's GMRES(restart), one cycle per call; the residual norm after each."""
    x = np.zeros_like(b)
    residuals, iterates = [np.linalg.norm(b)], []
    for _ in range(cycles):
        x, _ = scipy.sparse.linalg.gmres(a, b, x0=x, restart=restart, maxiter=1, rtol=0.0,
                                         atol=0.0)
        residuals.append(np.linalg.norm(b - a @ x))
        iterates.append(x.copy())
    return np.array(residuals), np.array(iterates)


@pytest.mark.parametrize("layout", ["per-instance", "shared", "sparse"])
@pytest.mark.parametrize("restart", [1, 3, 5])
def test_gmres_cycles_match_scipy(layout, restart):
    n, batch, cycles = 24, 3, 6
    rhs = randn(batch, n, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's beta warning on sparse CSR
        if layout == "per-instance":
            matrix = nonsymmetric(n, batch=batch, seed=1)
            dense = matrix
        else:
            dense = nonsymmetric(n, seed=2).expand(batch, n, n)
            matrix = dense[0].to_sparse_csr() if layout == "sparse" else dense[0]
        problem = ms.LinearSystem(matrix, rhs)
        solution = ms.run(ms.GMRES(restart=restart), problem, fixed_iterations=cycles, rtol=0.0)
    history = solution.residual_history.numpy()
    for i in range(batch):
        reference, iterates = scipy_gmres_cycles(dense[i].numpy(), rhs[i].numpy(), restart,
                                                 cycles)
        assert reference[-1] < 0.5 * reference[0]  # the test says something: GMRES got on
        # Relative agreement, down to the rounding of ||b - A x|| itself (a few eps ||b||).
        np.testing.assert_allclose(history[:, i], reference, rtol=1e-10,
                                   atol=1e-13 * reference[0])
        np.testing.assert_allclose(solution.x[i].numpy(), iterates[-1], rtol=1e-9,
                                   atol=1e-12 * np.abs(iterates[-1]).max())


def test_gmres_solves_to_tolerance_and_handles_exact_and_zero_cases():
    n = 8
    # I + u v^T has a minimal polynomial of degree 2: GMRES(5) is exact in its second Arnoldi
    # step (a "happy breakdown") and must not divide by the zero that follows.
    u, v = randn(n, seed=4), randn(n, seed=5)
    matrix = torch.eye(n, dtype=F64) + torch.outer(u, v) / n
    rhs = randn(3, n, seed=6)
    rhs[1] = 0.0  # already solved by the zero guess
    problem = ms.LinearSystem(matrix, rhs)
    solution = ms.run(ms.GMRES(restart=5), problem, rtol=1e-12)
    assert solution.status.tolist() == [int(ms.Status.CONVERGED)] * 3
    assert solution.iterations.tolist() == [1, 0, 1]
    torch.testing.assert_close(solution.x, torch.linalg.solve(matrix, rhs.T).T, rtol=0,
                               atol=1e-12)
    # A hard system to a tolerance: converged, and the answer is the dense solve's.
    a = nonsymmetric(30, batch=4, seed=7, shift=3.0)
    b = randn(4, 30, seed=8)
    solution = ms.run(ms.GMRES(restart=4), ms.LinearSystem(a, b), rtol=1e-10, maxiter=500)
    assert bool(solution.converged.all())
    exact = torch.linalg.solve(a, b.unsqueeze(-1)).squeeze(-1)
    assert float((solution.x - exact).abs().max() / exact.abs().max()) < 1e-8
    with pytest.raises(ValueError, match="restart"):
        ms.GMRES(restart=0)


# --- Newton-Krylov against a plain loop and SciPy ------------------------------------------


def plain_newton_krylov(f, x0: np.ndarray, inner: int, steps: int, epsilon: float):
    """Newton's method whose step is one SciPy GMRES(inner) cycle on J d = -f, with J v a
    forward difference of step eps max(1, ||x||) / ||v||: the module docstring's method, in a
    plain loop around SciPy. Returns the iterates."""
    x, iterates = x0.copy(), []
    for _ in range(steps):
        fx = f(x)

        def jv(v, x=x, fx=fx):
            v = np.ravel(v)
            size = np.linalg.norm(v)
            if size == 0:
                return np.zeros_like(v)
            s = epsilon * max(1.0, np.linalg.norm(x)) / size
            return (f(x + s * v) - fx) / s

        operator = scipy.sparse.linalg.LinearOperator((x.size, x.size), matvec=jv)
        d, _ = scipy.sparse.linalg.gmres(operator, -fx, restart=inner, maxiter=1, rtol=0.0,
                                         atol=0.0)
        x = x + d
        iterates.append(x.copy())
    return iterates


@pytest.mark.parametrize("inner", [1, 2, 4])
def test_newton_krylov_iterates_match_a_plain_loop_and_scipy_solution(inner):
    tasks = ms.ChandrasekharFamily().sample(6, seed=11)
    problem = tasks.problem
    method = ms.NewtonKrylov(inner=inner)
    steps = 4
    early = ms.run(method, problem, fixed_iterations=steps, rtol=0.0)
    converged = ms.run(method, problem, atol=1e-12, rtol=0.0, maxiter=100)
    assert bool(converged.converged.all())
    epsilon = float(torch.finfo(F64).eps) ** 0.5
    for i in range(problem.batch_size):
        operator, start = problem.unpadded(i)
        a, m = operator.numpy(), start.shape[0]

        def f(x, a=a):
            return x - 1.0 / (1.0 - a @ x)

        reference = plain_newton_krylov(f, start.numpy(), inner, steps, epsilon)
        np.testing.assert_allclose(early.x[i, :m].numpy(), reference[-1], rtol=1e-7, atol=0)
        assert bool((early.x[i, m:] == 0).all())  # padding untouched
        root = scipy.optimize.newton_krylov(f, start.numpy(), method="gmres",
                                            inner_maxiter=inner, line_search=None,
                                            f_tol=1e-13)
        np.testing.assert_allclose(converged.x[i, :m].numpy(), root, rtol=0, atol=1e-11)


@dataclass(frozen=True)
class CountedChandrasekhar(ChandrasekharSystem):
    """Counts the batched evaluations of ``f``."""

    calls: list = None

    def function(self, y):
        self.calls.append(1)
        return super().function(y)


def test_newton_krylov_spends_the_r2n2s_evaluations():
    base = ms.ChandrasekharFamily().sample(4, seed=12).problem
    for layers in (2, 3, 4):
        counterpart = ms.R2N2(layers=layers).classical(ms.NonlinearSystem)
        assert counterpart.evaluations_per_iteration == layers
        calls = []
        problem = CountedChandrasekhar(base.operator, base.mask, base.start, base.c, calls)
        ms.run(counterpart, problem, fixed_iterations=3, rtol=0.0)
        assert len(calls) == 1 + 3 * layers  # f(x_0), then n per Newton step


# --- the counterparts of an R2N2 ---------------------------------------------------------


def test_r2n2_counterpart_by_problem_type():
    method = ms.R2N2(layers=3, epsilon=2e-8)
    assert method.classical(ms.LinearSystem).config() == {"restart": 3}
    assert method.classical(ms.DiagonalSystem).config() == {"restart": 3}
    assert method.classical(ms.NonlinearSystem).config() == {"inner": 2, "epsilon": 2e-8}
    assert ms.R2N2(layers=1).classical(ms.NonlinearSystem).inner == 1
    for layers, tableau in ((1, ms.EULER), (2, ms.HEUN), (3, ms.RK3), (4, ms.RK4),
                            (6, ms.RK4)):
        rk = ms.R2N2(layers=layers).classical(ms.InitialValueProblem)
        assert rk.config() == ms.R2N2.from_tableau(tableau).config()
    assert CLASSICAL_TABLEAUS[2] is ms.HEUN
    for bad in (None, ms.EigenProblem, "LinearSystem"):
        with pytest.raises(TypeError, match="problem_type"):
            method.classical(bad)


@pytest.mark.parametrize("tableau, growth", [
    ("EULER", lambda h: 1 - h), ("HEUN", lambda h: 1 - h + h ** 2 / 2)])
def test_euler_and_heun_steps_on_the_test_equation(tableau, growth):
    """One step of ``x' = -x``: the stability polynomials ``1 - h`` and ``1 - h + h^2 / 2``."""
    method = ms.R2N2.from_tableau(getattr(ms, tableau))
    x = randn(3, 4, seed=13)
    h = 0.3

    @dataclass(frozen=True)
    class Decay(ms.InitialValueProblem):
        start: torch.Tensor
        step_size: torch.Tensor

        def function(self, y):
            return -y

        def index(self, idx):
            return Decay(self.start[idx], self.step_size[idx])

    problem = Decay(x, torch.full((3,), h, dtype=F64))
    state = method.init(problem, x, {})
    torch.testing.assert_close(method.step(problem, state, {})["x"], growth(h) * x)


# --- solve_baseline and the safeguard for an R2N2 solver --------------------------------------


@pytest.fixture(scope="module")
def linear_family():
    matrices = ms.tasks.r2n2_matrices(seed=0)
    return ms.MatrixSetFamily(torch.stack([matrices[k] for k in ("A1", "A2", "A3")]),
                              ms.tasks.matrix_set.PAPER_RHS_MEAN)


def test_solve_baseline_runs_the_counterpart_on_each_problem_type(linear_family):
    cases = [(linear_family, ms.GMRES(restart=4), {"rtol": 1e-10, "maxiter": 500}),
             (ms.ChandrasekharFamily(), ms.NewtonKrylov(inner=3, epsilon=1e-7),
              {"atol": 1e-10, "rtol": 0.0, "maxiter": 100}),
             (ms.VanDerPolFamily(steps=3), ms.R2N2.from_tableau(ms.RK4), {"maxiter": 3})]
    for family, classical, options in cases:
        tasks = family.sample(6, seed=14)
        solver = r2n2_solver(family, 4, seed=1)
        with pytest.raises(TypeError, match="problem_type"):
            _ = solver.classical_method  # an R2N2's depends on the problem: not yet known
        baseline = solver.solve_baseline(tasks, **options)
        reference = ms.run(classical, tasks.problem, **options)
        assert baseline.info["method"] == classical.name
        assert bool(baseline.converged.all())
        assert torch.equal(baseline.iterations, reference.iterations)
        torch.testing.assert_close(baseline.x, reference.x, rtol=0, atol=0)
        assert solver.classical_method_for(tasks.problem).config() == classical.config()


class _GivenWeights(ms.MetaSolver):
    """Per-task R2N2 weights given by hand (whatever the features)."""

    def __init__(self, stage: torch.Tensor, output: torch.Tensor):
        super().__init__({"stage_weights": ms.IdentityHead(stage.shape[1]),
                          "output_weights": ms.IdentityHead(output.shape[1])})
        self.register_buffer("stage", stage)
        self.register_buffer("output", output)

    def forward(self, features):
        rows = features.shape[0]
        return {"stage_weights": self.stage[:rows], "output_weights": self.output[:rows]}


SPD_LOW, SPD_HIGH, SIZE = 1.0, 10.0, 12


@pytest.fixture(scope="module")
def spd_tasks():
    """Tasks on one SPD matrix with spectrum [1, 10] (features: the right-hand side)."""
    q, _ = torch.linalg.qr(randn(SIZE, SIZE, seed=15))
    matrix = q @ torch.diag(torch.linspace(SPD_LOW, SPD_HIGH, SIZE, dtype=F64)) @ q.T
    matrix = (matrix + matrix.T) / 2
    rhs = randn(8, SIZE, seed=16)
    return ms.TaskBatch(ms.LinearSystem(matrix, rhs), rhs.clone())


def _richardson(batch, scale):
    """Two layers as two Richardson steps ``x <- x - w (A x - b)``, ``w = scale * 2 / (1 + 10)``:
    residual polynomial ``(1 - w t)^2``, spectral radius ``max |1 - w t|^2`` over [1, 10],
    below 1 for ``scale = 1`` (0.67) and above for ``scale = 2.5`` (about 13)."""
    w = scale * 2 / (SPD_LOW + SPD_HIGH)
    return torch.full((batch, 1), -w, dtype=F64), torch.full((batch, 2), -w, dtype=F64)


def _solve(solver, tasks, **options):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solver.solve(tasks, **{"rtol": 1e-10, "maxiter": 500, **options})


def test_a_failing_certificate_runs_gmres_instead_and_a_holding_one_does_not(spd_tasks):
    batch = len(spd_tasks)
    scales = torch.tensor([1.0, 2.5] * (batch // 2), dtype=F64)
    stage = torch.cat([_richardson(1, float(s))[0] for s in scales])
    output = torch.cat([_richardson(1, float(s))[1] for s in scales])
    solver = ms.LearnedSolver(ms.R2N2(layers=2), _GivenWeights(stage, output))
    failing = (scales > 1).tolist()

    raw = _solve(solver, spd_tasks, safeguard=False)
    assert raw.status.tolist() == [int(ms.Status.CONVERGED if not f else ms.Status.DIVERGED)
                                   for f in failing]
    guarded = _solve(solver, spd_tasks)
    assert guarded.fallback.tolist() == failing
    assert guarded.info["certificate_failed"].tolist() == failing
    assert bool(guarded.converged.all())
    exact = torch.linalg.solve(spd_tasks.problem.matrix, spd_tasks.problem.rhs.T).T
    assert float((guarded.x - exact).abs().max() / exact.abs().max()) < 1e-8
    # The uncertified instances never ran the R2N2: GMRES(2) from the start, nothing more.
    gmres = ms.run(ms.GMRES(restart=2), spd_tasks.problem, rtol=1e-10, maxiter=500)
    bad = torch.tensor(failing)
    assert torch.equal(guarded.iterations[bad], gmres.iterations[bad])
    # (A sub-batch rounds its products differently from the whole batch.)
    torch.testing.assert_close(guarded.x[bad], gmres.x[bad], rtol=1e-12, atol=0)
    # The certified ones ran the R2N2 as it is.
    assert torch.equal(guarded.iterations[~bad], raw.iterations[~bad])
    assert torch.equal(guarded.x[~bad], raw.x[~bad])
    # The radius is the certificate's, from the eigenvalues of A.
    method = solver.method
    for i in range(batch):
        certificate = method.certificate(spd_tasks.problem.matrix, stage[i], output[i])
        assert float(guarded.info["certificate_radius"][i]) == pytest.approx(
            certificate.spectral_radius, rel=1e-10)
    assert "fallback=4" in guarded.summary()


def test_a_holding_certificate_changes_nothing(spd_tasks):
    stage, output = _richardson(len(spd_tasks), 1.0)
    solver = ms.LearnedSolver(ms.R2N2(layers=2), _GivenWeights(stage, output))
    raw, guarded = _solve(solver, spd_tasks, safeguard=False), _solve(solver, spd_tasks)
    assert not guarded.fallback.any() and not guarded.info["certificate_failed"].any()
    assert bool((guarded.info["certificate_radius"] < 1).all())
    assert torch.equal(guarded.iterations, raw.iterations) and torch.equal(guarded.x, raw.x)


def test_a_failing_certificate_with_a_fixed_budget_and_a_constant_meta_solver(spd_tasks):
    """A trained R2N2's weights come from a ConstantMetaSolver; a large output weight fails
    the certificate everywhere, also for a fixed number of iterations."""
    solver = r2n2_solver(None, 2, stage_init=[-0.2], output_init=[-3.0, -3.0])
    guarded = _solve(solver, spd_tasks, fixed_iterations=6, rtol=0.0, maxiter=None)
    assert bool(guarded.fallback.all()) and bool(guarded.info["certificate_failed"].all())
    gmres = ms.run(ms.GMRES(restart=2), spd_tasks.problem, fixed_iterations=6, rtol=0.0)
    torch.testing.assert_close(guarded.x, gmres.x, rtol=0, atol=0)


def test_large_systems_skip_the_certificate():
    n = CERTIFICATE_MAX_SIZE + 1
    problem = ms.LinearSystem(torch.eye(n, dtype=F64), randn(2, n, seed=17))
    method = ms.R2N2(layers=1, output_weights=[-5.0])
    assert method.certificate_radius(problem, {}) is None
    # ... but a diagonal system gives its eigenvalues: |1 - 5 t| at t = 1, 2.
    diagonal = ms.DiagonalSystem(torch.tensor([[1.0, 0.5], [2.0, 0.1]], dtype=F64),
                                 randn(2, 2, seed=18))
    assert method.certificate_radius(diagonal, {}).tolist() == [4.0, 9.0]


def test_a_diverging_r2n2_on_the_h_equation_falls_back_to_newton_krylov():
    family = ms.ChandrasekharFamily()
    tasks = family.sample(6, seed=19)
    # x <- x + 2 f(x): away from the root (the fixed-point iteration has weight -1).
    solver = r2n2_solver(family, 1, output_init=[2.0])
    options = {"atol": 1e-10, "rtol": 0.0, "maxiter": 200}
    raw = _solve(solver, tasks, safeguard=False, **options)
    assert not raw.converged.any()
    guarded = _solve(solver, tasks, **options)
    assert bool(guarded.fallback.all()) and bool(guarded.converged.all())
    assert "certificate_failed" in guarded.info and not guarded.info["certificate_failed"].any()
    assert bool(torch.isnan(guarded.info["certificate_radius"]).all())  # no certificate here
    newton = ms.run(ms.NewtonKrylov(inner=1, epsilon=1e-7), tasks.problem, **options)
    torch.testing.assert_close(guarded.x, newton.x, rtol=0, atol=1e-9)


def test_a_steady_r2n2_that_falls_behind_newton_krylov_hands_over_to_it():
    """The fixed-point iteration (the experiment's starting weights) converges on the H-equation
    at a linear rate, about five times slower than Newton-Krylov: calibrated on training tasks,
    the rate test stops each run once Newton-Krylov is projected to finish sooner from its
    iterate, and Newton-Krylov finishes it (an absolute tolerance: no calibrated skip)."""
    family = ms.ChandrasekharFamily()
    solver = r2n2_solver(family, 3, stage_init=[-0.5] * 3, output_init=[-1.0, 0.0, 0.0])
    solver.record_training(family.sample(32, seed=5))
    tasks = family.sample(8, seed=19)
    options = {"atol": 1e-8, "rtol": 0.0, "maxiter": 200}
    raw = _solve(solver, tasks, safeguard=False, **options)
    newton = solver.solve_baseline(tasks, **options)
    guarded = _solve(solver, tasks, **options)
    assert bool(raw.converged.all()) and bool(guarded.converged.all())
    assert bool(guarded.info["rate_handover"].all())
    assert torch.equal(guarded.fallback, guarded.info["rate_handover"])
    assert bool((guarded.iterations < raw.iterations).all())
    assert float(guarded.iterations.double().mean()) < 2 * float(newton.iterations.double().mean())
    assert bool((guarded.residual <= 1e-8).all())
    torch.testing.assert_close(guarded.x, newton.x, rtol=0, atol=1e-7)
    # A calibration saved before the learned method's counts were recorded has no rate test.
    solver.calibration = {k: v for k, v in solver.calibration.items()
                          if not k.startswith("learned")}
    old = _solve(solver, tasks, **options)
    assert not old.fallback.any() and torch.equal(old.iterations, raw.iterations)


# --- calibration and the artifact -----------------------------------------------------------


def _train(solver, family, epochs=1):
    splits = ms.make_splits(family, n_train=16, n_validation=8, n_test=4, seed=0)
    ms.Trainer(solver, ms.WeightedResidualLoss(1), ms.TrainingConfig(epochs=epochs,
                                                                       batch_size=16),
               progress=False).fit(splits.train, splits.validation)
    return splits


def test_training_stores_the_counterpart_and_the_artifact_keeps_it(linear_family, tmp_path):
    solver = r2n2_solver(linear_family, 4, seed=2)
    assert solver.calibration is None
    _train(solver, linear_family)
    assert solver.classical_method.config() == {"restart": 4}
    assert solver.calibration is not None  # the R2N2 now has a budget: GMRES's counts
    assert any(count is not None for count in solver.calibration["iterations"])
    path = solver.save(tmp_path / "r2n2.safetensors")
    loaded = ms.load(path)
    assert isinstance(loaded.classical_method, ms.GMRES)
    assert loaded.classical_method.config() == {"restart": 4}
    assert loaded.calibration == solver.calibration

    tensors, document = read_tensors(path)
    assert document["classical_method"] == {"name": "gmres", "config": {"restart": 4}}
    old = dict(document)
    del old["classical_method"]
    write_tensors(tmp_path / "old.safetensors", tensors, old)
    with pytest.raises(ArtifactError, match="does not record its classical method"):
        ms.load(tmp_path / "old.safetensors")
    bad = dict(document, classical_method={"name": "no-such-method", "config": {}})
    write_tensors(tmp_path / "bad.safetensors", tensors, bad)
    with pytest.raises(ArtifactError, match="unknown classical method"):
        ms.load(tmp_path / "bad.safetensors")
    bad = dict(document, classical_method={"name": "gmres", "config": {"restart": 0}})
    write_tensors(tmp_path / "bad.safetensors", tensors, bad)
    with pytest.raises(ArtifactError, match="restart"):
        ms.load(tmp_path / "bad.safetensors")


def test_an_integrators_counterpart_is_stored_and_needs_no_budget(tmp_path):
    family = ms.VanDerPolFamily(steps=2)
    solver = r2n2_solver(family, 3, stage_init=ms.RK3.stage_weights(),
                         output_init=list(ms.RK3.b))
    _train(solver, family)
    assert solver.calibration is None  # an integrator takes the steps its problem asks for
    loaded = ms.load(solver.save(tmp_path / "vdp.safetensors"))
    assert loaded.classical_method.config() == ms.R2N2.from_tableau(ms.RK3).config()


def test_an_untrained_solver_saves_no_counterpart_and_a_given_one_is_kept(tmp_path):
    solver = r2n2_solver(None, 3)
    loaded = ms.load(solver.save(tmp_path / "untrained.safetensors"))
    assert loaded._classical is None
    assert isinstance(loaded.classical_method_for(ms.ChandrasekharFamily().sample(2).problem),
                      ms.NewtonKrylov)
    chosen = ms.GMRES(restart=10)
    solver = ms.LearnedSolver(ms.R2N2(layers=3), solver.metasolver, classical_method=chosen)
    loaded = ms.load(solver.save(tmp_path / "chosen.safetensors"))
    assert loaded.classical_method.config() == {"restart": 10}
    # The stored method answers for its own problem type; another type gets the R2N2's rule.
    assert isinstance(loaded.classical_method_for(ms.ChandrasekharFamily().sample(2).problem),
                      ms.NewtonKrylov)
    with pytest.raises(TypeError, match="classical_method"):
        ms.LearnedSolver(ms.R2N2(layers=3), solver.metasolver, classical_method="gmres")


class _TrainableJacobi(ms.Jacobi, torch.nn.Module):
    """A method with a weight of its own and no classical() counterpart."""

    name = "test-trainable-jacobi"

    def __init__(self):
        torch.nn.Module.__init__(self)
        ms.Jacobi.__init__(self)
        self.scale = torch.nn.Parameter(torch.ones((), dtype=F64))


def test_a_method_with_weights_and_no_counterpart_has_no_classical_method(spd_tasks):
    psi = ms.ConstantMetaSolver({"omega": ms.IdentityHead(1)}, init={"omega": 0.1},
                                in_features=SIZE)
    solver = ms.LearnedSolver(_TrainableJacobi(), psi)
    with pytest.raises(TypeError, match="names no classical counterpart"):
        solver.solve_baseline(spd_tasks, rtol=1e-6)
    solver.record_training(spd_tasks)  # the envelope only
    assert solver._classical is None and solver.calibration is None
    assert solver.feature_envelope is not None
    with pytest.raises(ValueError, match="weights of its own"):
        ms.LearnedSolver(ms.Jacobi(), psi, classical_method=_TrainableJacobi())
