"""The safeguarded mode of neural SCS (learned/neural_scs.py; docs/architecture.md, sec. 6): a
learned step or start is kept only where the fixed-point residual does not rise, as in SCS's
safeguarded Anderson acceleration. A model with random weights, guarded, converges to the real
``scs`` package's solution (unguarded it does not); a perfect correction is always accepted;
``solve_baseline`` is plain SCS; unguarded solves (training, the paper's tables) are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("scs")

import metasolve as ms  # noqa: E402
from metasolve.baselines.scs_reference import solve_batch_with_scs  # noqa: E402
from metasolve.learned import IdentityHead, LearnedSolver, NetworkMetaSolver  # noqa: E402
from metasolve.learned.neural_scs import IntermittentSCS, RecurrentSCS  # noqa: E402
from metasolve.learned.safeguard import outside_envelope  # noqa: E402
from metasolve.solution import Status  # noqa: E402
from metasolve.solvers.anderson import AndersonSCS  # noqa: E402
from metasolve.solvers.scs import SCS, cold_start, primal_dual, tau_normalized  # noqa: E402
from metasolve.tasks.conic import LassoFamily  # noqa: E402

torch.set_num_threads(1)

TIGHT = {"eps_abs": 1e-8, "eps_rel": 1e-8}
MAXITER = 3000
KINDS = ("recurrent", "intermittent")


@pytest.fixture(scope="module")
def lasso():
    family = LassoFamily(p=5, q=10)
    return family, family.sample(4, seed=3)


@pytest.fixture(scope="module")
def scs_solutions(lasso):
    _, tasks = lasso
    refs = solve_batch_with_scs(tasks.problem, eps_abs=1e-10, eps_rel=1e-10)
    assert all(ref["status"] == "solved" for ref in refs)
    return refs


def _randomize(module, scale: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _solver(kind: str, family, dim: int, random: bool = True, **scs_options) -> LearnedSolver:
    """A neural SCS solver as the experiments build one, with random weights (scale 0.3) in
    the acceleration model and the initializer, or untrained."""
    options = {**TIGHT, **scs_options}
    if kind == "recurrent":
        method = RecurrentSCS(dim, hidden=8, encoder=(16,), **options)
        heads = {"start_correction": IdentityHead(dim), "hidden0": IdentityHead(8)}
    else:
        method = IntermittentSCS(dim, family.feature_dim, access=(1, 2, 5, 10), hidden=(16,),
                                 **options)
        heads = {"start_correction": IdentityHead(dim)}
    metasolver = NetworkMetaSolver(family.feature_dim, heads, hidden=(16,), activation="relu")
    if random:
        _randomize(method, 0.3, seed=0)
        _randomize(metasolver, 0.3, seed=1)
    return LearnedSolver(method, metasolver, family=family)


def _x_error(program, solution, refs) -> np.ndarray:
    """Per instance, ``||x - x_scs|| / max(1, ||x_scs||)``."""
    x = primal_dual(program, solution.x)["x"].detach().numpy()
    return np.array([np.linalg.norm(x[i] - ref["x"]) / max(1.0, np.linalg.norm(ref["x"]))
                     for i, ref in enumerate(refs)])


# --------------------------------------------------------------------------------------------
# (a) random weights: guarded converges to scs's solution, unguarded does not
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_random_weights_guarded_converge_to_scs_solution(kind, lasso, scs_solutions):
    family, tasks = lasso
    solver = _solver(kind, family, tasks.problem.size)
    with torch.no_grad():
        guarded = solver.solve(tasks, maxiter=MAXITER)
        plain = ms.run(SCS(**TIGHT), tasks.problem, maxiter=MAXITER)
    assert bool((guarded.status == Status.CONVERGED).all()), guarded.summary()
    assert float(_x_error(tasks.problem, guarded, scs_solutions).max()) <= 1e-5
    # The random steps and starts were refused (a step is counted only where proposed) and
    # the solve reports it; it costs no more iterations than plain SCS.
    rejected = guarded.info["rejected_steps"]
    assert bool((rejected > 0).all()) and bool(guarded.fallback.all())
    assert bool(guarded.info["start_rejected"].all())
    assert bool(guarded.info["guess_rejected"].all())
    assert bool((guarded.iterations <= plain.iterations).all())
    if kind == "intermittent":  # only the access set's steps are proposed
        assert bool((rejected <= 4).all())
    assert not solver.method.guarded  # the guarded view did not switch the model itself


@pytest.mark.parametrize("kind", KINDS)
def test_random_weights_unguarded_fail(kind, lasso, scs_solutions):
    """The same weights without the safeguard: the test above is not vacuous."""
    family, tasks = lasso
    solver = _solver(kind, family, tasks.problem.size)
    with torch.no_grad():
        unguarded = solver.solve(tasks, maxiter=MAXITER, safeguard=False)
    failed = (unguarded.status != Status.CONVERGED) | torch.as_tensor(
        _x_error(tasks.problem, unguarded, scs_solutions) > 1e-5)
    assert int(failed.sum()) >= 3, unguarded.summary()
    assert unguarded.fallback is None and "rejected_steps" not in unguarded.info


# --------------------------------------------------------------------------------------------
# (b) steps that help are accepted
# --------------------------------------------------------------------------------------------


class _Oracle(RecurrentSCS):
    """A "perfect" model: every proposal is the solution's (tau-normalised) fixed point."""

    def __init__(self, target: torch.Tensor, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = target

    def propose(self, problem, state, z, fz):
        _, extra, proposed = super().propose(problem, state, z, fz)
        return self.target.clone(), extra, proposed


@pytest.fixture(scope="module")
def fixed_points(lasso):
    _, tasks = lasso
    solved = ms.run(SCS(), tasks.problem, fixed_iterations=4000, rtol=0.0)
    assert bool((solved.residual_history[-1] < 1e-12).all())
    return tau_normalized(solved.x.detach())


def test_perfect_corrections_and_start_are_accepted(lasso, fixed_points):
    family, tasks = lasso
    program = tasks.problem
    oracle = _Oracle(fixed_points, program.size, hidden=4, encoder=(8,), **TIGHT).safeguarded()
    with torch.no_grad():
        stepped = ms.run(oracle, program, maxiter=50)
        started = ms.run(oracle, program, maxiter=50,
                         params={"start_correction": fixed_points - cold_start(program)})
    for solution in (stepped, started):
        assert bool((solution.status == Status.CONVERGED).all()), solution.summary()
        assert int(solution.info["rejected_steps"].sum()) == 0
        assert not bool(solution.info["start_rejected"].any())
    assert bool((stepped.iterations == 1).all())  # the first step lands on the solution
    assert bool((started.iterations == 0).all())  # the start is the solution
    plain = ms.run(SCS(**TIGHT), program, maxiter=MAXITER)
    assert bool((plain.iterations > 20).all())


def test_a_worse_start_is_replaced_by_the_cold_start(lasso, fixed_points):
    """Per instance: the perfect start is kept, a far-off one replaced by SCS's cold start (and
    the recurrent model's ``hidden0`` by zero, the untrained model's)."""
    family, tasks = lasso
    program = tasks.problem
    method = RecurrentSCS(program.size, hidden=4, encoder=(8,), **TIGHT)
    good = fixed_points - cold_start(program)
    bad = 100.0 * torch.randn(program.batch_size, program.size,
                              generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    mixed = torch.where(torch.tensor([True, False, True, False]).unsqueeze(1), good, bad)
    hidden = torch.ones(program.batch_size, 4, dtype=torch.float64)
    with torch.no_grad():
        solution = ms.run(method.safeguarded(), program, fixed_iterations=0,
                          params={"start_correction": mixed, "hidden0": hidden})
        state = method.safeguarded().init(program, cold_start(program),
                                          {"start_correction": mixed, "hidden0": hidden})
    assert solution.info["start_rejected"].tolist() == [False, True, False, True]
    torch.testing.assert_close(solution.x[1], cold_start(program)[1], rtol=0, atol=0)
    assert float(solution.residual_history[0][0]) < 1e-10
    assert state["hidden"][:, 0].tolist() == [1.0, 0.0, 1.0, 0.0]


# --------------------------------------------------------------------------------------------
# (c) the baseline is plain SCS; (d) unguarded solves are unchanged
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_solve_baseline_is_plain_scs(kind, lasso):
    family, tasks = lasso
    solver = _solver(kind, family, tasks.problem.size, alpha=1.2)
    assert solver.classical_method.config() == SCS(alpha=1.2, **TIGHT).config()
    baseline = solver.solve_baseline(tasks, maxiter=MAXITER)
    plain = ms.run(SCS(alpha=1.2, **TIGHT), tasks.problem, maxiter=MAXITER)
    for name in ("x", "residual_history", "iterations", "status", "reference_norm"):
        assert torch.equal(getattr(baseline, name), getattr(plain, name)), name


@pytest.mark.parametrize("kind", KINDS)
def test_unguarded_solves_run_the_model_as_it_is(kind, lasso):
    """``safeguard=False`` (training, the papers' tables) is ``run`` of the model with the
    predicted parameters, value and gradient, with nothing of the safeguard in it."""
    family, tasks = lasso
    solver = _solver(kind, family, tasks.problem.size, random=False)
    _randomize(solver.method, 0.01, seed=2)
    _randomize(solver.metasolver, 0.01, seed=3)
    solution = solver.solve(tasks, fixed_iterations=6, rtol=0.0, safeguard=False)
    solution.residual_history.sum().backward()
    mine = [p.grad.clone() for p in solver.model.parameters()]
    solver.model.zero_grad()
    direct = ms.run(solver.method, tasks.problem, params=solver.metasolver(tasks.features),
                    fixed_iterations=6, rtol=0.0)
    direct.residual_history.sum().backward()
    theirs = [p.grad.clone() for p in solver.model.parameters()]
    assert torch.equal(solution.residual_history, direct.residual_history)
    assert torch.equal(solution.x, direct.x)
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
    assert "rejected_steps" not in solution.info and solution.fallback is None


def test_guarded_view_shares_weights_and_config(lasso):
    family, tasks = lasso
    method = IntermittentSCS(tasks.problem.size, family.feature_dim, hidden=(8,))
    view = method.safeguarded()
    assert view.guarded and not method.guarded
    assert view.config() == method.config()
    assert all(a is b for a, b in zip(view.parameters(), method.parameters(), strict=True))
    assert view.context_scale is method.context_scale
    with pytest.raises(ValueError):
        method.safeguarded(factor=0.0)


def test_out_of_distribution_is_reported_as_for_other_solvers(lasso):
    family, tasks = lasso
    solver = _solver("intermittent", family, tasks.problem.size)
    solver.record_training_features(tasks.features[:2])
    expected = outside_envelope(tasks.features, solver.feature_envelope)
    assert bool(expected.any())
    with torch.no_grad(), pytest.warns(UserWarning, match="envelope"):
        solution = solver.solve(tasks, maxiter=MAXITER)
    assert torch.equal(solution.out_of_distribution, expected)
    assert bool(solution.converged.all())


def test_anderson_reports_its_rejected_steps(lasso):
    _, tasks = lasso
    solution = ms.run(AndersonSCS(**TIGHT), tasks.problem, maxiter=MAXITER)
    rejected = solution.info["rejected_steps"]
    assert rejected.shape == (tasks.problem.batch_size,) and bool((rejected >= 0).all())
    assert bool((rejected <= solution.iterations).all())
