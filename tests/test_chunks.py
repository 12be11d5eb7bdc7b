"""Large batches in bounded memory: ``run(..., history=False)`` keeps the first and last norms
only, and ``chunk_size`` solves a batch a slice at a time (the driver and a learned solve,
safeguard included) with the same per-instance results as one batch."""

from __future__ import annotations

import warnings

import pytest
import torch

import metasolve as ms
from metasolve.tasks.poisson1d import poisson1d_matrix

OPTIONS = {"rtol": 1e-6, "maxiter": 5000}


@pytest.fixture(scope="module")
def problem():
    rhs = torch.randn(23, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return ms.LinearSystem(poisson1d_matrix(16), rhs)


def _same_results(chunked: ms.Solution, whole: ms.Solution) -> None:
    assert torch.equal(chunked.iterations, whole.iterations)
    assert torch.equal(chunked.status, whole.status)
    torch.testing.assert_close(chunked.x, whole.x)
    torch.testing.assert_close(chunked.threshold, whole.threshold)


@pytest.mark.parametrize("method", [ms.Jacobi(), ms.ConjugateGradient()])
def test_chunks_give_the_results_of_one_batch(problem, method):
    whole = ms.run(method, problem, **OPTIONS)
    chunked = ms.run(method, problem, chunk_size=5, **OPTIONS)
    _same_results(chunked, whole)
    torch.testing.assert_close(chunked.residual_history, whole.residual_history)
    assert chunked.info["method"] == method.name and chunked.info["maxiter"] == 5000
    assert torch.equal(chunked.info["confirmations"], whole.info["confirmations"])


def test_chunks_slice_per_instance_parameters_starts_and_caps(problem):
    batch = problem.batch_size
    omega = torch.linspace(0.6, 1.0, batch, dtype=torch.float64)
    x0 = 0.01 * torch.ones(batch, 16, dtype=torch.float64)
    caps = torch.arange(50, 50 + 30 * batch, 30)
    options = {"params": {"omega": omega}, "x0": x0, "maxiter": caps, "rtol": 1e-6}
    whole = ms.run(ms.Jacobi(), problem, **options)
    chunked = ms.run(ms.Jacobi(), problem, chunk_size=4, **options)
    _same_results(chunked, whole)
    assert not bool(whole.converged.all())  # the caps stop some of them
    assert torch.equal(chunked.info["maxiter"], caps)
    assert torch.equal(chunked.info["params"]["omega"], omega)


def test_without_history_the_first_and_last_norms_are_kept(problem):
    whole = ms.run(ms.Jacobi(), problem, **OPTIONS)
    lean = ms.run(ms.Jacobi(), problem, history=False, **OPTIONS)
    assert lean.residual_history.shape == (2, problem.batch_size)
    torch.testing.assert_close(lean.residual_history[0], whole.residual_history[0])
    torch.testing.assert_close(lean.residual, whole.residual)
    assert torch.equal(lean.iterations, whole.iterations) and lean.info["history"] is False
    with pytest.raises(ValueError, match="history=False"):
        lean.iterations_to(1e-3)
    assert torch.equal(whole.iterations_to(1e-6), whole.iterations)
    chunked = ms.run(ms.Jacobi(), problem, history=False, chunk_size=6, **OPTIONS)
    assert chunked.residual_history.shape == (2, problem.batch_size)
    torch.testing.assert_close(chunked.residual, whole.residual)


@pytest.mark.parametrize(("option", "value", "error"), [
    ("history", "no", TypeError), ("history", None, TypeError), ("chunk_size", 0, ValueError),
    ("chunk_size", 2.5, TypeError)])
def test_bad_history_and_chunk_size_are_refused(problem, option, value, error):
    with pytest.raises(error, match=option):
        ms.run(ms.Jacobi(), problem, **{option: value}, **OPTIONS)


def test_throw_asks_about_the_whole_batch(problem):
    with pytest.raises(ms.ConvergenceError) as raised:
        ms.run(ms.Jacobi(), problem, chunk_size=5, throw=True, rtol=1e-6, maxiter=20)
    assert raised.value.solution.batch_size == problem.batch_size


def test_concatenate_joins_per_instance_entries_and_keeps_or_lists_the_rest(problem):
    a = ms.run(ms.Jacobi(), problem.index(slice(0, 3)), rtol=1e-6, maxiter=5000)
    b = ms.run(ms.Jacobi(), problem.index(slice(3, 5)), rtol=1e-3, maxiter=5000)
    a.info.update(inference_time=1.0, note="x")
    b.info.update(inference_time=2.0, note="y")
    joined = ms.Solution.concatenate([a, b])
    assert joined.batch_size == 5 and joined.wall_time == pytest.approx(a.wall_time + b.wall_time)
    assert joined.residual_history.shape[0] == max(a.residual_history.shape[0],
                                                   b.residual_history.shape[0])
    # The shorter history repeats its last row, as a stopped instance's does.
    assert torch.equal(joined.residual_history[-1, 3:], b.residual_history[-1])
    assert joined.info["inference_time"] == 3.0 and joined.info["note"] == ["x", "y"]
    assert joined.info["rtol"] == [1e-6, 1e-3] and joined.info["method"] == "jacobi"
    assert torch.equal(joined.info["confirmations"],
                       torch.cat([a.info["confirmations"], b.info["confirmations"]]))
    with pytest.raises(ValueError, match="parts"):
        ms.Solution.concatenate([])
    with pytest.raises(TypeError, match="parts"):
        ms.Solution.concatenate([a, "b"])


class _SignDamping(ms.MetaSolver):
    """A damping factor that diverges (1.6) on tasks whose first feature is negative, and
    converges (0.9) elsewhere: the safeguard falls back on those."""

    def __init__(self):
        super().__init__({"omega": ms.IdentityHead(1)})

    def forward(self, features):
        return {"omega": torch.where(features[:, :1] > 0, 0.9, 1.6).to(features.dtype)}


def test_a_safeguarded_learned_solve_in_chunks_gives_the_results_of_one_batch():
    family = ms.Poisson1DFamily(n=16, p=0.0)
    tasks = family.sample(20, seed=3)
    solver = ms.LearnedSolver(ms.Jacobi(), _SignDamping(), family=family)
    # The envelope of half the tasks: some of the rest lie outside it.
    solver.record_training_features(tasks.features[:10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = solver.solve(tasks, **OPTIONS)
    with pytest.warns(UserWarning) as caught:
        chunked = solver.solve(tasks, chunk_size=6, **OPTIONS)
    outside = [w for w in caught if "outside the envelope" in str(w.message)]
    assert len(outside) == 1 and "chunks of 6 tasks" in str(outside[0].message)
    assert bool(whole.fallback.any()) and bool(whole.out_of_distribution.any())
    assert not bool(whole.fallback.all())
    _same_results(chunked, whole)
    assert torch.equal(chunked.fallback, whole.fallback)
    assert torch.equal(chunked.out_of_distribution, whole.out_of_distribution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lean = solver.solve(tasks, chunk_size=6, history=False, **OPTIONS)
        baseline = solver.solve_baseline(tasks, chunk_size=7, **OPTIONS)
    _same_results(lean, whole)
    assert lean.residual_history.shape == (2, 20)
    torch.testing.assert_close(lean.residual, whole.residual)
    _same_results(baseline, solver.solve_baseline(tasks, **OPTIONS))


def test_concatenate_marks_entries_a_part_lacks_and_keeps_empty_ones(problem):
    a = ms.run(ms.Jacobi(), problem.index(slice(0, 2)), rtol=1e-6, maxiter=5000)
    b = ms.run(ms.Jacobi(), problem.index(slice(2, 4)), rtol=1e-6, maxiter=5000)
    a.info["rejected"] = torch.tensor([1, 2])
    b.info["budget"] = 7
    joined = ms.Solution.concatenate([a, b])
    assert joined.info["params"] == {}
    assert joined.info["budget"] == [None, 7]
    rejected = joined.info["rejected"]
    assert isinstance(rejected, list) and rejected[1] is None
    assert torch.equal(rejected[0], torch.tensor([1, 2]))


def _damping_solver(family, omega: float) -> ms.LearnedSolver:
    psi = ms.ConstantMetaSolver({"omega": ms.IdentityHead(1)}, init={"omega": omega},
                                in_features=family.feature_dim)
    return ms.LearnedSolver(ms.Jacobi(), psi, family=family)


def test_chunks_share_the_whole_batch_s_budget():
    """A slow damping factor under a calibrated budget (learned counts set by hand to three
    times the classical ones, means nine tenths), with half the tasks outside the training
    features: the budget is the outside one for every chunk, as in one batch, also for the
    chunks whose tasks all lie inside."""
    family = ms.Poisson1DFamily(n=16, p=0.0)
    tasks = family.sample(12, seed=3)
    solver = _damping_solver(family, 0.2)
    solver.record_training(family.sample(32, seed=5))
    calibration = solver.calibration
    calibration["learned_mean_iterations"] = [0.9 * m for m in calibration["mean_iterations"]]
    calibration["learned_iterations"] = [None if c is None else 3 * c
                                         for c in calibration["iterations"]]
    solver.record_training_features(tasks.features[:6])
    options = {"rtol": 1e-6, "maxiter": 20000}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = solver.solve(tasks, **options)
        chunked = solver.solve(tasks, chunk_size=6, **options)
    assert bool(whole.out_of_distribution[6:].any()) and not whole.out_of_distribution[:6].any()
    _same_results(chunked, whole)
    assert chunked.info["learned_budget"] == whole.info["learned_budget"]


def test_each_kind_of_warning_of_a_chunked_solve_is_given_once():
    """A learned factor that only ties the classical one (the safeguard says so) on tasks half
    of which lie outside the training features (the safeguard says that too): both kinds are
    given once each, the second saying in how many chunks it arose."""
    family = ms.Poisson1DFamily(n=16, p=0.0)
    tasks = family.sample(12, seed=3)
    solver = _damping_solver(family, 1.0)
    solver.record_training(family.sample(32, seed=5))
    solver.record_training_features(tasks.features[:2])
    with pytest.warns(UserWarning) as caught:
        solver.solve(tasks, chunk_size=4, **OPTIONS)
    texts = [str(w.message) for w in caught]
    assert sum("do not pay" in t for t in texts) == 1
    outside = [t for t in texts if "outside the envelope" in t]
    assert len(outside) == 1 and "in 3 of the 3 chunks of 4 tasks" in outside[0]
    assert all(w.filename == __file__ for w in caught)  # at the caller's line


@pytest.mark.parametrize("method", [ms.GMRES(restart=4), ms.Jacobi()])
def test_chunks_of_a_fixed_budget_and_of_a_per_instance_state_method(problem, method):
    for options in ({"fixed_iterations": 7, "rtol": 0.0}, OPTIONS):
        whole = ms.run(method, problem, **options)
        chunked = ms.run(method, problem, chunk_size=5, **options)
        _same_results(chunked, whole)


def test_parts_that_disagree_on_history_are_refused(problem):
    a = ms.run(ms.Jacobi(), problem.index(slice(0, 2)), history=False, **OPTIONS)
    b = ms.run(ms.Jacobi(), problem.index(slice(2, 4)), **OPTIONS)
    with pytest.raises(ValueError, match="history"):
        ms.Solution.concatenate([a, b])
