"""The AutoSpec filter as a learned eigensolver: its solves go through LearnedSolver.solve, the
safeguard falls back to Chebyshev-filtered subspace iteration where the learned filter fails,
the artifact round-trips, and autospec-eigen's shifted sets exist and run."""

import math

import pytest
import torch

import metasolve as ms
from metasolve.evaluation.shifts import measure, shift_records
from metasolve.experiments import autospec_eigen
from metasolve.learned import (
    AutoSpecEngine,
    LearnedFilterSubspaceIteration,
    autospec_filter,
    filter_eigen_solver,
)
from metasolve.learned.autospec_filter import spectrum_eigen_tasks
from metasolve.solvers import FilteredSubspaceIteration
from metasolve.tasks import FilterStateFamily

SMOKE = autospec_eigen.SCALES["smoke"]
RTOL = 1e-3  # the smoke spectra's calibration reaches it on every training task


def _family():
    return FilterStateFamily(size=SMOKE.size, block=SMOKE.block, degree=SMOKE.degree,
                             iterations=SMOKE.iterations, probe_steps=SMOKE.probe_steps)


@pytest.fixture(scope="module")
def untrained():
    """The eigensolver of an untrained engine, whose filter is Chebyshev's (its zero last
    layer), calibrated on the smoke spectra, where it ties Chebyshev's filter."""
    family = _family()
    torch.manual_seed(0)
    engine = AutoSpecEngine(SMOKE.block, SMOKE.degree, "filter", hidden=SMOKE.hidden, modes=0,
                            lower_range=20.0)
    return filter_eigen_solver(engine, family, SMOKE.wanted,
                               training_features=family.sample(16, seed=0).features)


@pytest.fixture(scope="module")
def solver(untrained):
    """The same engine with a calibration in which its filter paid on the training spectra
    (learned means set here to nine tenths of Chebyshev's), so that the safeguard runs it and
    its mechanisms (the pace test, the budget) act."""
    calibration = dict(untrained.calibration)
    calibration["learned_mean_iterations"] = [0.9 * m for m in calibration["mean_iterations"]]
    return ms.LearnedSolver(untrained.method, untrained.metasolver, family=untrained.family,
                            settings=untrained.settings,
                            feature_envelope=untrained.feature_envelope,
                            calibration=calibration, classical_method=untrained.classical_method)


def test_a_filter_that_ties_chebyshev_s_on_its_training_spectra_is_not_used(untrained):
    tasks = spectrum_eigen_tasks(untrained.family, 6, SMOKE.wanted, seed=3)
    with pytest.warns(UserWarning, match="do not pay"):
        guarded = untrained.solve(tasks, rtol=RTOL, maxiter=500)
    classical = untrained.solve_baseline(tasks, rtol=RTOL, maxiter=500)
    assert guarded.info["learned_skipped"] and bool(guarded.fallback.all())
    assert torch.equal(guarded.iterations, classical.iterations)


def _spoiled(solver):
    """A copy whose filter is bad on purpose: the cut sits e^-20 below theta_p, so that the
    filter no longer separates the wanted eigenvalues from the rest."""
    copy = ms.LearnedSolver(LearnedFilterSubspaceIteration(solver.method.engine.config()),
                            solver.metasolver, family=solver.family,
                            feature_envelope=solver.feature_envelope,
                            calibration=solver.calibration,
                            classical_method=solver.classical_method)
    copy.method.engine.load_state_dict(solver.method.engine.state_dict())
    with torch.no_grad():
        copy.method.engine.net[-1].bias.fill_(-10.0)
    return copy


def test_the_untrained_filter_is_chebyshev_filtered_subspace_iteration(solver):
    tasks = spectrum_eigen_tasks(solver.family, 6, SMOKE.wanted, seed=3)
    learned = solver.solve(tasks, safeguard=False, rtol=RTOL, maxiter=500)
    # The zero last layer's cut is theta_p: the classical filter exactly.
    classical = solver.solve_baseline(tasks, rtol=RTOL, maxiter=500)
    assert isinstance(solver.classical_method, FilteredSubspaceIteration)
    assert not isinstance(solver.classical_method, LearnedFilterSubspaceIteration)
    assert torch.equal(learned.iterations, classical.iterations)
    assert solver.calibration is not None
    assert solver.calibration["iterations"][2] is not None  # rtol 1e-3 calibrated


def test_the_pace_test_hands_a_spoiled_filter_to_the_chebyshev_filter(solver):
    bad = _spoiled(solver)
    tasks = spectrum_eigen_tasks(solver.family, 6, SMOKE.wanted, seed=4)
    unguarded = bad.solve(tasks, safeguard=False, rtol=RTOL, maxiter=2000)
    classical = bad.solve_baseline(tasks, rtol=RTOL, maxiter=2000)
    guarded = bad.solve(tasks, rtol=RTOL, maxiter=2000)
    assert bool(classical.converged.all())
    assert not bool(unguarded.converged.all())  # the spoiled filter stalls on some
    assert bool(guarded.converged.all())
    # The stalled instances switched filters inside the iteration, not at the budget: they
    # cost a few learned steps more than the classical filter, not the budget's.
    stalled = ~unguarded.converged
    assert bool((guarded.info["rejected_steps"][stalled] > 0).all())
    assert bool(guarded.fallback[stalled].all())
    assert bool((guarded.iterations[stalled] <= classical.iterations[stalled] + 10).all())
    assert not bool(guarded.info["rate_handover"].any())


def test_without_the_pace_test_the_budget_stops_a_spoiled_filter(solver, monkeypatch):
    monkeypatch.setattr(autospec_filter, "PACE_SLACK", math.inf)
    bad = _spoiled(solver)
    tasks = spectrum_eigen_tasks(solver.family, 6, SMOKE.wanted, seed=4)
    unguarded = bad.solve(tasks, safeguard=False, rtol=RTOL, maxiter=2000)
    guarded = bad.solve(tasks, rtol=RTOL, maxiter=2000)
    assert bool(guarded.converged.all())
    assert not bool(guarded.info["rejected_steps"].any())
    assert bool(guarded.fallback[~unguarded.converged].all())
    # The learned attempt stops at its budget (calibrated on the training spectra), not at
    # the cap, and the classical filter finishes from there.
    budget = guarded.info["learned_budget"]
    assert budget is not None and budget < 2000
    assert bool((guarded.iterations[guarded.fallback] > budget).all())
    quick = unguarded.converged & (unguarded.iterations <= budget)
    assert bool(quick.any()) and not bool(guarded.fallback[quick].any())


def test_the_chebyshev_pace_does_not_overstate_the_chebyshev_filter_s_rate():
    """Once the Ritz values settle, Chebyshev's filter gains at least its projected decades
    per step, less a tenth of a decade (the unwanted eigenvalues lie above theta_p): the pace
    test does not hand a learned filter to a much slower Chebyshev filter."""
    family = _family()
    tasks = spectrum_eigen_tasks(family, 16, SMOKE.wanted, seed=7)
    engine = AutoSpecEngine(SMOKE.block, SMOKE.degree, "filter", hidden=SMOKE.hidden, modes=0)
    method = LearnedFilterSubspaceIteration(engine)
    chebyshev = FilteredSubspaceIteration(SMOKE.degree)
    problem = tasks.problem
    projected, levels = [], []
    with torch.no_grad():
        state = chebyshev.init(problem, problem.start, {})
        for _ in range(16):
            projected.append(method.chebyshev_pace(problem, state))
            levels.append(method._level(problem, state))
            state = chebyshev.step(problem, state, {})
    # The mean over steps 4 to 15, on instances still above round-off after them.
    gained = (levels[-1] - levels[4]) / 11
    pace = torch.stack(projected[4:15]).mean(dim=0)
    late = levels[-1] < 10
    assert int(late.sum()) >= 4
    assert bool((pace[late] > 0).all())
    assert bool((gained[late] >= pace[late] - 0.1).all())


def test_the_pace_test_on_a_chebyshev_filter_changes_nothing(solver):
    """The untrained engine's filter is Chebyshev's: where the pace test refuses it (while the
    Ritz values settle, the projection can overstate), the switch is to the same filter."""
    tasks = spectrum_eigen_tasks(solver.family, 8, SMOKE.wanted, seed=8)
    guarded = solver.solve(tasks, rtol=RTOL, maxiter=2000)
    classical = solver.solve_baseline(tasks, rtol=RTOL, maxiter=2000)
    assert bool((guarded.info["rejected_steps"] > 0).any())  # the switch happened
    assert torch.equal(guarded.iterations, classical.iterations)
    assert torch.allclose(guarded.x, classical.x)
    assert bool(guarded.converged.all())


def test_a_good_filter_does_not_fall_back(solver):
    tasks = spectrum_eigen_tasks(solver.family, 8, SMOKE.wanted, seed=5)
    guarded = solver.solve(tasks, rtol=RTOL, maxiter=2000)
    assert bool(guarded.converged.all())
    assert not bool(guarded.fallback.any())
    assert not bool(guarded.info["rejected_steps"].any())


def test_the_eigen_solver_round_trips_through_an_artifact(solver, tmp_path):
    path = solver.save(tmp_path / "eigen.safetensors")
    loaded = ms.load(path)
    assert isinstance(loaded.method, LearnedFilterSubspaceIteration)
    assert loaded.calibration == solver.calibration
    tasks = spectrum_eigen_tasks(solver.family, 3, SMOKE.wanted, seed=6)
    a = solver.solve(tasks, safeguard=False, rtol=RTOL, maxiter=500)
    b = loaded.solve(tasks, safeguard=False, rtol=RTOL, maxiter=500)
    assert torch.equal(a.iterations, b.iterations)


def test_autospec_eigen_shifted_sets_run_at_smoke_scale(solver):
    sets = autospec_eigen.shifted_sets(SMOKE, solver, count=4)
    assert [s.shift for s in sets] == ["none", "kappa 1e6 to 1e8", "kappa 2 to 10",
                                       "poisson2d-12"]
    for shifted in sets:
        assert shifted.options == {"rtol": SMOKE.rtol, "maxiter": SMOKE.filtered_cap}
    records = shift_records(autospec_eigen.NAME, "eigen", sets[-1], measure(solver, sets[-1]))
    get = {(r["method"], r["metric"]): r["value"] for r in records}
    assert get[("classical", "converged_fraction")] == 1.0
    assert get[("safeguarded", "classical_solved_lost_fraction")] == 0.0
    # The engine's state-level model has no eigenproblem sets.
    state_model = ms.LearnedSolver(ms.solvers.ChebyshevSeries(), solver.method.engine,
                                   family=solver.family, monitor="error")
    assert autospec_eigen.shifted_sets(SMOKE, state_model) == []
