"""The safeguard of a learned solve fires when it must and not when it must not, and what it did is
reported in the Solution and kept in the artifact."""

from __future__ import annotations

import warnings

import pytest
import torch

import metasolve as ms
from metasolve.artifact import ArtifactError, read_tensors, write_tensors
from metasolve.learned.safeguard import RateTest, feature_envelope, outside_envelope, rate_test

OPTIONS = {"rtol": 1e-6, "maxiter": 5000}


@pytest.fixture(scope="module")
def family():
    return ms.Poisson1DFamily(n=16, p=0.0)


@pytest.fixture(scope="module")
def tasks(family):
    return family.sample(12, seed=3)


class _GivenGuess(ms.MetaSolver):
    """A meta-solver that predicts a given initial guess per task (whatever the features)."""

    def __init__(self, guess: torch.Tensor):
        super().__init__({"x0": ms.IdentityHead(guess.shape[1])})
        self.register_buffer("guess", guess)

    def forward(self, features):
        return {"x0": self.guess[: features.shape[0]]}


def _guess_solver(family, tasks, error: float) -> ms.LearnedSolver:
    """A learned guess: each task's exact solution plus ``error`` times a fixed rough vector
    (small: a good guess; large: a guess made worse on purpose)."""
    exact = tasks.problem.solution
    rough = torch.linspace(-1, 1, exact.shape[1], dtype=exact.dtype) ** 3
    guess = exact + error * exact.abs().amax(dim=1, keepdim=True) * rough
    return ms.LearnedSolver(ms.Jacobi(), _GivenGuess(guess), family=family)


def _damping_solver(family, omega: float) -> ms.LearnedSolver:
    psi = ms.ConstantMetaSolver({"omega": ms.IdentityHead(1)}, init={"omega": omega},
                                in_features=family.feature_dim)
    return ms.LearnedSolver(ms.Jacobi(), psi, family=family)


def _solve(solver, tasks, **options):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solver.solve(tasks, **{**OPTIONS, **options})


def test_a_good_learned_guess_is_kept(family, tasks):
    solver = _guess_solver(family, tasks, 1e-8)
    guarded, raw = _solve(solver, tasks), _solve(solver, tasks, safeguard=False)
    assert not guarded.info["guess_rejected"].any() and not guarded.fallback.any()
    assert torch.equal(guarded.iterations, raw.iterations)
    zero = ms.run(ms.Jacobi(), tasks.problem, **OPTIONS)
    assert bool((guarded.iterations < zero.iterations).all())


def test_a_guess_made_worse_on_purpose_is_replaced_by_the_classical_one(family, tasks):
    solver = _guess_solver(family, tasks, 50.0)
    zero = ms.run(ms.Jacobi(), tasks.problem, **OPTIONS)
    raw = _solve(solver, tasks, safeguard=False)
    assert bool((raw.iterations > zero.iterations).all())  # the bad guess hurts unguarded
    # Tested on every instance, or (the default) on those outside the training features.
    solver.record_training_features(tasks.features + 100.0)
    for guarded in (_solve(solver, tasks, check_guess="always"), _solve(solver, tasks)):
        assert bool(guarded.info["guess_rejected"].all())
        assert bool(guarded.out_of_distribution.all())
        assert torch.equal(guarded.iterations, zero.iterations)
        torch.testing.assert_close(guarded.x, zero.x)


def test_a_guess_is_trusted_inside_the_training_features(family, tasks):
    solver = _guess_solver(family, tasks, 50.0)
    solver.record_training_features(tasks.features)
    guarded = _solve(solver, tasks)
    assert not guarded.out_of_distribution.any() and not guarded.info["guess_rejected"].any()
    assert torch.equal(guarded.iterations, _solve(solver, tasks, safeguard=False).iterations)
    assert not _solve(solver, tasks, check_guess="never").info["guess_rejected"].any()
    with pytest.raises(ValueError, match="check_guess"):
        _solve(solver, tasks, check_guess="sometimes")


def test_a_diverging_relaxation_factor_falls_back_and_converges_to_the_answer(family, tasks):
    solver = _damping_solver(family, 1.6)  # Jacobi diverges beyond omega = 1 here
    raw, guarded = _solve(solver, tasks, safeguard=False), _solve(solver, tasks)
    assert bool((raw.status == ms.Status.DIVERGED).all())
    assert bool(guarded.fallback.all()) and bool(guarded.converged.all())
    exact = tasks.problem.solution
    assert float((torch.linalg.vector_norm(guarded.x - exact, dim=1)
                  / torch.linalg.vector_norm(exact, dim=1)).max()) < 1e-4
    # The count includes the failed attempt, and the history tells the same story.
    assert bool((guarded.iterations > raw.iterations).all())
    assert torch.equal(guarded.iterations_to(1e-6), guarded.iterations)
    assert "fallback=12" in repr(guarded)


def test_a_good_relaxation_factor_does_not_fall_back(family, tasks):
    solver = _damping_solver(family, 0.9)
    raw, guarded = _solve(solver, tasks, safeguard=False), _solve(solver, tasks)
    assert not guarded.fallback.any()
    assert torch.equal(guarded.iterations, raw.iterations)
    assert torch.equal(guarded.x, raw.x)


def test_the_fallback_gets_what_is_left_of_the_callers_cap(family, tasks):
    """``maxiter`` bounds the whole safeguarded solve: a learned attempt that diverges early
    leaves the classical run the rest of the cap; one that used all of it is not rerun."""
    cap = 300
    diverging = _solve(_damping_solver(family, 1.6), tasks, maxiter=cap)
    assert bool(diverging.fallback.all()) and bool((diverging.iterations <= cap).all())
    slow = _damping_solver(family, 0.02)  # converging, far too slowly for the cap
    raw, guarded = _solve(slow, tasks, safeguard=False, maxiter=cap), _solve(slow, tasks,
                                                                             maxiter=cap)
    assert bool((raw.status == ms.Status.MAX_ITERATIONS).all())
    assert not guarded.fallback.any()
    assert torch.equal(guarded.iterations, raw.iterations)
    assert torch.equal(guarded.status, raw.status)
    # A cap per instance bounds each instance's whole solve the same way.
    caps = torch.full((len(tasks),), cap, dtype=torch.int64)
    caps[0] = 5
    per_instance = _solve(_damping_solver(family, 1.6), tasks, maxiter=caps)
    assert bool((per_instance.iterations <= caps).all())
    assert per_instance.iterations[0] <= 5


@pytest.mark.parametrize("omega", [0.5, 0.9, 1.6])
def test_a_fixed_budget_keeps_the_better_of_learned_and_classical_per_instance(family, tasks,
                                                                              omega):
    """At a fixed budget each instance ends no worse than the classical method on the same
    budget: damping 0.5 loses to plain Jacobi on some instances, 0.9 wins on all, 1.6 diverges."""
    solver = _damping_solver(family, omega)
    budget = {"fixed_iterations": 20, "rtol": 0.0, "maxiter": None}
    raw = _solve(solver, tasks, safeguard=False, **budget)
    classical = solver.solve_baseline(tasks, **budget)
    guarded = _solve(solver, tasks, **budget)
    better = classical.residual < raw.residual
    assert torch.equal(guarded.fallback, better)
    assert bool(guarded.info["budget_compared"].all())
    torch.testing.assert_close(guarded.residual, torch.minimum(raw.residual, classical.residual))
    torch.testing.assert_close(guarded.x[better], classical.x[better])
    torch.testing.assert_close(guarded.x[~better], raw.x[~better].detach())
    assert bool((guarded.iterations == 20).all())
    assert guarded.info["fallback_time"] > 0
    # Only the instances outside the training features, or none, when asked.
    solver.record_training_features(tasks.features)
    for check in ("outside", "never"):
        kept = _solve(solver, tasks, check_budget=check, **budget)
        assert not kept.info["budget_compared"].any()
        torch.testing.assert_close(kept.residual, raw.residual.detach())
    with pytest.raises(ValueError, match="check_budget"):
        _solve(solver, tasks, check_budget="sometimes", **budget)


def test_solve_baseline_is_the_classical_method_for_any_meta_solver(family, tasks):
    psi = ms.NetworkMetaSolver(family.feature_dim, {"x0": ms.IdentityHead(family.n)})
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=family)  # classical: the zero guess
    baseline = solver.solve_baseline(tasks, **OPTIONS)
    zero = ms.run(ms.Jacobi(), tasks.problem, **OPTIONS)
    assert torch.equal(baseline.iterations, zero.iterations)


def test_instances_outside_the_training_features_are_flagged_and_warned(family):
    psi = ms.NetworkMetaSolver(family.feature_dim, {"x0": ms.IdentityHead(family.n)},
                               zero_init=True)
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=family)
    train = family.sample(64, seed=10)
    solver.record_training_features(train.features)
    inside = family.sample(8, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning in distribution
        assert not solver.solve(inside, **OPTIONS).out_of_distribution.any()
    shifted = ms.TaskBatch(inside.problem, inside.features * 10.0)
    with pytest.warns(UserWarning, match="outside the envelope"):
        flagged = solver.solve(shifted, **OPTIONS)
    assert bool(flagged.out_of_distribution.any())
    assert "out_of_distribution=" in flagged.summary()


def test_the_envelope_test_widens_by_the_margin():
    envelope = feature_envelope(torch.tensor([[0.0, 5.0], [1.0, 5.0]]))
    features = torch.tensor([[1.2, 5.0], [1.3, 5.0], [0.5, 6.2], [0.5, 6.3]])
    assert outside_envelope(features, envelope).tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="features"):
        outside_envelope(torch.zeros(2, 3), envelope)


def test_the_trainer_records_the_envelope_and_the_artifact_keeps_it(family, tmp_path):
    psi = ms.NetworkMetaSolver(family.feature_dim, {"x0": ms.IdentityHead(family.n)})
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=family)
    splits = ms.make_splits(family, n_train=32, n_validation=16, n_test=4, seed=0)
    ms.Trainer(solver, ms.FixedIterationLoss(0), ms.TrainingConfig(epochs=1, batch_size=32),
               progress=False).fit(splits.train, splits.validation)
    torch.testing.assert_close(solver.feature_envelope, feature_envelope(splits.train.features))
    path = solver.save(tmp_path / "model.safetensors")
    loaded = ms.load(path)
    assert torch.equal(loaded.feature_envelope, solver.feature_envelope)

    tensors, document = read_tensors(path)
    del document["feature_envelope"]
    write_tensors(tmp_path / "old.safetensors", tensors, document)
    with pytest.raises(ArtifactError, match="envelope of its training features"):
        ms.load(tmp_path / "old.safetensors")


def test_a_learned_factor_slower_than_classical_on_its_training_tasks_is_skipped(family, tasks):
    """Damping 0.2 converges, five times slower than Jacobi: without calibration the safeguard
    lets it run; once calibrated on training tasks, where it is slower too, the safeguard solves
    with the classical method, says so, and marks every instance."""
    solver = _damping_solver(family, 0.2)
    omega = float(solver.params(tasks.features)["omega"][0].detach())
    assert 0.15 < omega < 0.25
    options = {"rtol": 1e-6, "maxiter": 20000}
    unbudgeted = _solve(solver, tasks, **options)
    assert not unbudgeted.fallback.any() and bool(unbudgeted.converged.all())
    train = family.sample(32, seed=5)
    solver.record_training(train)
    calibration = solver.calibration
    assert calibration is not None and calibration["monitor"] == "residual"
    i = calibration["rtols"].index(1e-6)
    assert calibration["learned_mean_iterations"][i] > 3 * calibration["mean_iterations"][i]
    solver.record_training_features(torch.cat([train.features, tasks.features]))
    with pytest.warns(UserWarning, match="solves with the classical method"):
        skipped = solver.solve(tasks, **options)
    classical = ms.run(ms.Jacobi(), tasks.problem, **options)
    assert skipped.info["learned_skipped"] and bool(skipped.fallback.all())
    assert torch.equal(skipped.iterations, classical.iterations)
    torch.testing.assert_close(skipped.x, classical.x)


def test_the_budget_is_the_classical_count_outside_and_the_larger_count_inside(family, tasks):
    """A calibration in which the learned method paid on its training tasks (its 95th
    percentiles set here by hand to three times the classical ones, its means to nine tenths of
    the classical ones): the slow damping factor
    then runs under a budget, twice the classical 95th percentile outside the training
    features, where the classical method finishes each instance from where the attempt got to,
    and twenty times the learned one inside, which its whole run fits in."""
    solver = _damping_solver(family, 0.2)
    options = {"rtol": 1e-6, "maxiter": 20000}
    unbudgeted = _solve(solver, tasks, **options)
    train = family.sample(32, seed=5)
    solver.record_training(train)
    calibration = solver.calibration
    calibration["learned_mean_iterations"] = [0.9 * m for m in calibration["mean_iterations"]]
    calibration["learned_iterations"] = [None if c is None else 3 * c
                                         for c in calibration["iterations"]]
    solver.record_training_features(torch.cat([train.features, tasks.features]))
    i = calibration["rtols"].index(1e-6)
    zero = ms.run(ms.Jacobi(), tasks.problem, **options)
    inside = _solve(solver, tasks, **options)
    assert inside.info["learned_budget"] == 20 * 3 * calibration["iterations"][i] + 10
    shifted = ms.TaskBatch(tasks.problem, tasks.features * 50.0)
    outside = _solve(solver, shifted, **options)
    assert bool(outside.out_of_distribution.all())
    assert outside.info["learned_budget"] == 2 * calibration["iterations"][i] + 10
    # Inside, the learned method's own (larger) count leaves room for its whole run here.
    assert not inside.fallback.any() and torch.equal(inside.iterations, unbudgeted.iterations)
    assert bool(outside.fallback.all()) and bool(outside.converged.all())
    assert bool((outside.iterations < unbudgeted.iterations).all())
    assert bool((outside.iterations <= outside.info["learned_budget"] + zero.iterations).all())


# A calibration shaped like the H-equation's: Newton-Krylov's mean iterations to 1e-1 ... 1e-10
# (absolute: reference 1) accelerate, the learned method's have a steady rate, faster at first.
NEWTON_MEANS = [1.7, 2.1, 2.8, 3.0, 3.3, 3.8, 4.6, 5.0, 5.5, 6.2]
STEADY_MEANS = [1.0, 1.6, 2.0, 2.7, 3.4, 3.6, 4.4, 5.0, 5.4, 5.9]
RTOLS = [10.0 ** -k for k in range(1, 11)]


def _progress(test, decades_per_iteration, start=1.0, target=1e-8, steps=12):
    """The first iteration at which ``test`` stops an instance whose norm falls from ``start``
    by ``decades_per_iteration`` each iteration (``None``: never, before the target)."""
    one = torch.ones(1, dtype=torch.float64)
    for k in range(1, steps + 1):
        norm = start * 10.0 ** (-decades_per_iteration * k)
        if norm <= target:
            return None
        if bool(test(k, one * norm, one * start, one * target, one)[0]):
            return k
    return None


def test_the_rate_test_hands_over_a_steady_rate_that_falls_behind_a_newton_tail():
    test = RateTest(RTOLS, NEWTON_MEANS, STEADY_MEANS)
    # One decade per iteration needs 8 iterations to 1e-8; Newton-Krylov's tail is shorter.
    assert _progress(test, 1.0) is not None
    # Two decades per iteration (the learned method's own pace) keep it.
    assert _progress(test, 2.0) is None
    # Nothing is decided above the loosest calibrated tolerance, nor for a target stricter
    # than the strictest one.
    assert _progress(test, 0.05, start=1.0, steps=19) is None
    assert _progress(test, 1.0, target=1e-12) is None
    # Two steady rates, the classical one a third of a decade per iteration and the learned one
    # calibrated a little slower: an instance 10% slower than the classical rate stays (the
    # margin), one twice as slow is handed over.
    steady = RateTest(RTOLS, [3.0 * k for k in range(1, 11)], [3.3 * k for k in range(1, 11)])
    assert _progress(steady, 0.3, steps=30) is None
    assert _progress(steady, 1 / 6, steps=30) is not None
    # A calibration whose learned tail is the faster one: a slow instance is a hard one, and
    # the classical method's calibrated rate says nothing about it.
    fast_tail = RateTest(RTOLS, NEWTON_MEANS, [0.5 * m for m in NEWTON_MEANS])
    assert _progress(fast_tail, 0.3, steps=25) is None
    # No test without both methods' mean counts (a calibration saved before they were
    # recorded), for another monitor, or at a fixed budget.
    calibration = {"monitor": "residual", "rtols": RTOLS, "iterations": [None] * 10,
                   "mean_iterations": NEWTON_MEANS, "learned_mean_iterations": STEADY_MEANS}
    assert isinstance(rate_test(calibration, {"monitor": "residual"}), RateTest)
    assert rate_test(calibration, {"monitor": "error"}) is None
    assert rate_test(calibration, {"monitor": "residual", "fixed_iterations": 5}) is None
    old = {k: v for k, v in calibration.items() if k != "learned_mean_iterations"}
    assert rate_test(old, {"monitor": "residual"}) is None
    single = {**calibration, "rtols": RTOLS[:1], "mean_iterations": NEWTON_MEANS[:1],
              "learned_mean_iterations": STEADY_MEANS[:1]}
    assert rate_test(single, {"monitor": "residual"}) is None


def test_a_learned_factor_faster_than_the_classical_one_is_not_handed_over(family, tasks):
    """Jacobi damped by 0.9 (faster here: undamped Jacobi barely damps the highest mode),
    calibrated on training tasks: every instance runs to the end as it would unguarded, at a
    relative and at an absolute tolerance."""
    solver = _damping_solver(family, 0.9)
    solver.record_training(family.sample(32, seed=5))
    solver.record_training_features(tasks.features)
    assert rate_test(solver.calibration, {"monitor": "residual"}) is not None
    for options in ({"rtol": 1e-6}, {"rtol": 0.0, "atol": 1e-8}):
        raw = _solve(solver, tasks, safeguard=False, **options)
        guarded = _solve(solver, tasks, **options)
        assert bool(raw.converged.all())
        assert not guarded.info["rate_handover"].any() and not guarded.fallback.any()
        assert torch.equal(guarded.iterations, raw.iterations)
        assert torch.equal(guarded.x, raw.x)


def test_a_learned_factor_that_only_ties_the_classical_one_is_not_used(family, tasks):
    """The classical factor itself as the learned one: its calibrated means equal the
    classical method's at every tolerance, so at a calibrated tolerance the safeguard solves
    with the classical method and says why (the same answer here); at an absolute tolerance,
    which the calibration does not cover, the learned factor runs."""
    solver = _damping_solver(family, 1.0)
    solver.record_training(family.sample(32, seed=5))
    solver.record_training_features(tasks.features)
    raw = _solve(solver, tasks, safeguard=False, rtol=1e-6)
    with pytest.warns(UserWarning, match="do not pay"):
        skipped = solver.solve(tasks, **{**OPTIONS, "rtol": 1e-6})
    assert skipped.info["learned_skipped"] and bool(skipped.fallback.all())
    assert torch.equal(skipped.iterations, raw.iterations)
    torch.testing.assert_close(skipped.x, raw.x)
    absolute = _solve(solver, tasks, rtol=0.0, atol=1e-8)
    assert not absolute.fallback.any() and "learned_skipped" not in absolute.info


def test_throw_asks_about_the_final_result_not_the_learned_attempt(family, tasks):
    solver = _damping_solver(family, 1.6)  # diverges; the fallback converges
    guarded = _solve(solver, tasks, throw=True)
    assert bool(guarded.converged.all()) and bool(guarded.fallback.all())
    with pytest.raises(ms.ConvergenceError):
        _solve(solver, tasks, throw=True, maxiter=10)


class _GivenParameter(ms.MetaSolver):
    """A meta-solver that predicts given per-task values of one parameter."""

    def __init__(self, name: str, values: torch.Tensor):
        super().__init__({name: ms.IdentityHead(1)})
        self.name = name
        self.register_buffer("values", values)

    def forward(self, features):
        return {self.name: self.values[: features.shape[0]]}


def test_a_callers_x0_starts_the_fallback_of_the_instances_that_need_it(family, tasks):
    omegas = torch.tensor([0.9, 1.6] * 6, dtype=torch.float64)
    solver = ms.LearnedSolver(ms.Jacobi(), _GivenParameter("omega", omegas), family=family)
    x0 = 0.5 * tasks.problem.solution
    guarded = _solve(solver, tasks, x0=x0)
    assert guarded.fallback.tolist() == [False, True] * 6
    assert bool(guarded.converged.all())
    classical = ms.run(ms.Jacobi(), tasks.problem, x0=x0, **OPTIONS)
    assert bool((guarded.iterations[1::2] > classical.iterations[1::2]).all())


def test_an_empty_batch_is_solved_guarded_or_not(family, tasks):
    solver = _damping_solver(family, 0.9)
    empty = tasks.index(torch.arange(0))
    assert _solve(solver, empty).batch_size == 0
    assert _solve(solver, empty, safeguard=False).batch_size == 0


def test_calibrated_counts_grow_as_the_tolerance_tightens(family):
    solver = _damping_solver(family, 0.9)
    solver.record_training(family.sample(32, seed=5))
    counts = solver.calibration["iterations"]
    known = [c for c in counts if c is not None]
    assert known == sorted(known) and counts[: len(known)] == known  # None only at the end


def test_a_failed_instance_keeps_a_finite_result_over_a_classical_one_that_blows_up(family,
                                                                                    tasks):
    """At a fixed budget a diverged learned run falls back, unless the classical method ends
    non-finite there (van der Pol at steps where RK-3 blows up): nothing is gained by trading
    a finite result for NaN, and the instance is not marked as a fallback."""
    psi = ms.ConstantMetaSolver({"omega": ms.IdentityHead(1)}, init={"omega": 3.0},
                                in_features=family.feature_dim)
    budget = {"fixed_iterations": 20, "rtol": 0.0, "maxiter": None, "divergence_factor": 1e6}
    blowing = ms.LearnedSolver(ms.Jacobi(), psi, family=family,
                               classical_method=ms.Jacobi(omega=1e300))
    raw = _solve(blowing, tasks, safeguard=False, **budget)
    classical = blowing.solve_baseline(tasks, **budget)
    assert bool(torch.isfinite(raw.residual).all())
    assert bool((raw.status == ms.Status.DIVERGED).all())
    assert not bool(torch.isfinite(classical.residual).any())
    guarded = _solve(blowing, tasks, **budget)
    assert not guarded.fallback.any()
    torch.testing.assert_close(guarded.residual, raw.residual.detach())
    # A classical method that stays finite still replaces the diverged run.
    fine = ms.LearnedSolver(ms.Jacobi(), psi, family=family)
    assert bool(_solve(fine, tasks, **budget).fallback.all())
