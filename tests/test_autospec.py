"""AutoSpec building blocks: the Chebyshev-expansion solve, the engine, polynomial-
preconditioned CG, the synthetic spectrum family, the transfer operators, the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch

import metasolve as ms
from metasolve.learned import probe_inputs, split_probe
from metasolve.polynomials import (
    chebyshev_coefficients_from_nodes,
    chebyshev_nodes,
    chebyshev_solve_expansion,
)
from metasolve.probes import lanczos_probe
from metasolve.solvers import residual_polynomial
from metasolve.tasks import operators

F64 = torch.float64


def _spectrum_system(batch=3, size=60, seed=0, low=1e-3):
    g = torch.Generator().manual_seed(seed)
    lam = torch.exp(torch.empty(batch, size, dtype=F64).uniform_(math.log(low), 0.0,
                                                                  generator=g))
    lam[:, 0], lam[:, -1] = low, 1.0
    return ms.DiagonalSystem(lam, torch.randn(batch, size, generator=g, dtype=F64))


def _dense_q(coefficients, lower, upper, eigenvalues):
    """``q(lambda)`` from the Chebyshev series, evaluated with NumPy's ``chebval``."""
    mapped = (2 * eigenvalues - (lower + upper)) / (upper - lower)
    return np.polynomial.chebyshev.chebval(mapped, coefficients)


def test_chebyshev_expansion_of_chebyshev_iteration_is_chebyshev_iteration():
    system = _spectrum_system()
    lo = torch.full((3,), 1e-3, dtype=F64)
    hi = torch.ones(3, dtype=F64)
    for k in (1, 7, 60):
        theta = {"coefficients": chebyshev_solve_expansion(lo, hi, k), "lower": lo, "upper": hi}
        ours = ms.run(ms.ChebyshevExpansion(), system, params=theta, fixed_iterations=k,
                      rtol=0.0)
        cheb = ms.run(ms.Chebyshev(1e-3, 1.0), system, fixed_iterations=k, rtol=0.0)
        scale = cheb.x.abs().max()
        assert float((ours.x - cheb.x).abs().max() / scale) < 1e-12
        # The tracked residual is the true one.
        true = torch.linalg.vector_norm(system.residual(ours.x), dim=1)
        torch.testing.assert_close(ours.residual_history[-1], true, rtol=1e-9, atol=1e-13)


def test_chebyshev_expansion_equals_the_dense_polynomial():
    system = _spectrum_system(batch=2, size=30, seed=3)
    g = torch.Generator().manual_seed(1)
    coefficients = torch.randn(2, 9, generator=g, dtype=F64)
    lo, hi = torch.tensor([1e-3, 0.01], dtype=F64), torch.tensor([1.0, 1.5], dtype=F64)
    theta = {"coefficients": coefficients, "lower": lo, "upper": hi}
    solution = ms.run(ms.ChebyshevExpansion(), system, params=theta, fixed_iterations=9, rtol=0.0)
    for b in range(2):
        lam = system.eigenvalues[b].numpy()
        q = _dense_q(coefficients[b].numpy(), lo[b].item(), hi[b].item(), lam)
        np.testing.assert_allclose(solution.x[b].numpy(), q * system.rhs[b].numpy(),
                                   rtol=1e-10, atol=1e-12)


def test_chebyshev_expansion_matches_a_dense_symmetric_matrix():
    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(25, 25, generator=g, dtype=F64))
    lam = torch.linspace(0.1, 4.0, 25, dtype=F64)
    matrix = q @ torch.diag(lam) @ q.T
    system = ms.LinearSystem(matrix, torch.randn(2, 25, generator=g, dtype=F64))
    coefficients = torch.randn(2, 6, generator=g, dtype=F64)
    lo, hi = torch.full((2,), 0.1, dtype=F64), torch.full((2,), 4.0, dtype=F64)
    solution = ms.run(ms.ChebyshevExpansion(), system, fixed_iterations=6, rtol=0.0,
                      params={"coefficients": coefficients, "lower": lo, "upper": hi})
    for b in range(2):
        dense = q @ torch.diag(torch.tensor(_dense_q(coefficients[b].numpy(), 0.1, 4.0,
                                                     lam.numpy()))) @ q.T
        torch.testing.assert_close(solution.x[b], dense @ system.rhs[b], rtol=1e-10,
                                   atol=1e-12)


def test_nodes_and_coefficients_interpolate_polynomials_exactly():
    lo, hi = torch.tensor([0.5], dtype=F64), torch.tensor([3.0], dtype=F64)
    nodes = chebyshev_nodes(lo, hi, 7)
    values = 1 + nodes - 2 * nodes ** 3 + 0.1 * nodes ** 6  # degree 6 < 7 nodes
    coefficients = chebyshev_coefficients_from_nodes(values)
    t = torch.linspace(0.5, 3.0, 11, dtype=F64)
    dense = _dense_q(coefficients[0].numpy(), 0.5, 3.0, t.numpy())
    np.testing.assert_allclose(dense, (1 + t - 2 * t ** 3 + 0.1 * t ** 6).numpy(), rtol=1e-12)


def test_chebyshev_expansion_rejects_bad_parameters():
    system = _spectrum_system(batch=2)
    lo, hi = torch.ones(2, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    coefficients = torch.ones(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="lower"):
        ms.run(ms.ChebyshevExpansion(), system, fixed_iterations=2,
               params={"coefficients": coefficients, "lower": lo, "upper": hi})
    with pytest.raises(ValueError, match="coefficients"):
        ms.run(ms.ChebyshevExpansion(), system, fixed_iterations=2, params={"lower": hi})
    with pytest.raises(ValueError, match="maxiter <= 3"):
        ms.run(ms.ChebyshevExpansion(), system, fixed_iterations=4,
               params={"coefficients": coefficients, "lower": hi, "upper": lo})


def test_diagonal_system_is_the_diagonal_matrix():
    system = _spectrum_system(batch=2, size=5)
    x = torch.randn(2, 5, dtype=F64)
    dense = ms.LinearSystem(torch.diag_embed(system.eigenvalues), system.rhs)
    torch.testing.assert_close(system.matvec(x), dense.matvec(x))
    assert system.index(torch.tensor([1])).batch_size == 1
    with pytest.raises(ValueError, match="matrix"):
        ms.DiagonalSystem(torch.ones(2, 4, dtype=F64), torch.ones(2, 5, dtype=F64))


def _engine_tasks(batch=4, steps=8, seed=0):
    family = ms.SpectrumFamily(size=64, probe_steps=steps)
    return family, family.sample(batch, seed=seed)


def _chebyshev_on_probe(tasks, probe_steps, steps):
    """Chebyshev iteration on the interval of the tasks' probe, ``steps`` iterations."""
    lower, upper = split_probe(tasks.features, probe_steps).interval()
    return ms.run(ms.Chebyshev(), tasks.problem, params={"lower": lower, "upper": upper},
                  fixed_iterations=steps, rtol=0.0)


@pytest.mark.parametrize("paradigm", ["recurrence", "basis"])
def test_an_untrained_engine_is_chebyshev_on_the_probe_interval(paradigm):
    family, tasks = _engine_tasks()
    engine = ms.AutoSpecEngine(8, 20, paradigm)
    method = ms.PolynomialRecurrence() if paradigm == "recurrence" else ms.ChebyshevExpansion()
    solver = ms.LearnedSolver(method, engine, family=family)
    with torch.no_grad():
        ours = solver.solve(tasks, fixed_iterations=20, rtol=0.0)
    cheb = _chebyshev_on_probe(tasks, 8, 20)
    torch.testing.assert_close(ours.x, cheb.x, rtol=1e-9, atol=1e-9 * float(cheb.x.abs().max()))


@pytest.mark.parametrize("paradigm", ["recurrence", "basis"])
def test_engine_coefficients_scale_with_the_operator(paradigm):
    _, tasks = _engine_tasks()
    torch.manual_seed(0)
    engine = ms.AutoSpecEngine(8, 10, paradigm)
    with torch.no_grad():
        engine.net[-1].weight.normal_(0, 0.3)
        big = tasks.features.clone()
        big[:, :8] *= 1e3
        big[:, 8:] *= 1e3
        small_theta, big_theta = engine(tasks.features), engine(big)
    assert torch.equal(probe_inputs(split_probe(tasks.features, 8)).round(decimals=9),
                       probe_inputs(split_probe(big, 8)).round(decimals=9))
    for name, value in small_theta.items():
        power = {"initial": -1, "step": -1, "momentum": 0, "coefficients": -1, "lower": 1,
                 "upper": 1}[name]
        torch.testing.assert_close(big_theta[name], value * 1e3 ** power, rtol=1e-8, atol=0)


@pytest.mark.parametrize("paradigm", ["recurrence", "basis"])
def test_engine_gradients_pass_gradcheck(paradigm):
    tasks = ms.SpectrumFamily(size=12, probe_steps=4, kappa_max=100.0).sample(2, seed=1)
    torch.manual_seed(0)
    engine = ms.AutoSpecEngine(4, 5, paradigm, hidden=(3,))
    method = ms.PolynomialRecurrence() if paradigm == "recurrence" else ms.ChebyshevExpansion()
    loss = ms.LogResidualLoss(5)
    name = f"net.{len(engine.net) - 1}.bias"

    def objective(bias):
        theta = torch.func.functional_call(engine, {name: bias}, (tasks.features,))
        return loss(ms.run(method, tasks.problem, params=theta, **loss.run_options())).sum()

    bias = (0.1 * torch.randn(engine.n_outputs, dtype=F64)).requires_grad_()
    assert torch.autograd.gradcheck(objective, (bias,), eps=1e-6, atol=1e-5)


def test_engine_trains_and_round_trips_through_an_artifact(tmp_path):
    family = ms.SpectrumFamily(size=32, probe_steps=5)
    splits = ms.make_splits(family, 64, 16, 16, seed=0)
    torch.manual_seed(0)
    solver = ms.LearnedSolver(ms.PolynomialRecurrence(),
                              ms.AutoSpecEngine(5, 12, "recurrence", hidden=(8,)), family=family)
    loss = ms.LogResidualLoss(12)
    with torch.no_grad():
        before = float(loss(solver.solve(splits.test, **loss.run_options())).mean())
    ms.Trainer(solver, loss, ms.TrainingConfig(epochs=6, batch_size=16, lr=1e-2),
               progress=False).fit(splits.train, splits.validation)
    with torch.no_grad():
        after = float(loss(solver.solve(splits.test, **loss.run_options())).mean())
    assert after < before  # training lowers the held-out log residual below Chebyshev's
    path = tmp_path / "engine.safetensors"
    solver.save(path)
    loaded = ms.load(path)
    with torch.no_grad():
        for name, value in solver.params(splits.test.features).items():
            torch.testing.assert_close(loaded.params(splits.test.features)[name], value)


def test_engine_rejects_bad_features_and_arguments():
    engine = ms.AutoSpecEngine(4, 6)
    with pytest.raises(ValueError, match="8 columns"):
        engine(torch.ones(2, 7, dtype=F64))
    bad = torch.ones(2, 8, dtype=F64)
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="not symmetric positive definite"):
        engine(bad)
    with pytest.raises(ValueError, match="paradigm"):
        ms.AutoSpecEngine(4, 6, "neither")
    with pytest.raises(ValueError, match="not parameters"):
        ms.LearnedSolver(ms.ChebyshevExpansion(), engine)


def test_cg_matches_scipy_and_a_polynomial_preconditioner_cuts_iterations():
    a = operators.poisson2d(12)
    system = operators.sparse_system(a, 3, seed=0)
    plain = ms.run(ms.ConjugateGradient(), system, rtol=1e-10, maxiter=1000)
    assert bool(plain.converged.all())
    for b in range(3):
        reference = spla.spsolve(a.tocsc(), system.rhs[b].numpy())
        np.testing.assert_allclose(plain.x[b].numpy(), reference, rtol=1e-8, atol=1e-9)
    low, high = 8 * math.sin(math.pi / 26) ** 2, 8.0
    lo, hi = torch.full((3,), low, dtype=F64), torch.full((3,), high, dtype=F64)
    precond = {"coefficients": chebyshev_solve_expansion(lo, hi, 6), "lower": lo, "upper": hi}
    pcg = ms.run(ms.ConjugateGradient(), system, params=precond, rtol=1e-10, maxiter=1000)
    assert bool(pcg.converged.all())
    assert int(pcg.iterations.max()) < int(plain.iterations.min()) / 2
    torch.testing.assert_close(pcg.x, plain.x, rtol=1e-7, atol=1e-8)


def test_cg_reports_breakdown_on_an_indefinite_matrix_and_rejects_partial_params():
    matrix = torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=F64))
    system = ms.LinearSystem(matrix, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=F64))
    solution = ms.run(ms.ConjugateGradient(), system, rtol=1e-12, maxiter=10)
    assert solution.status.tolist()[0] == int(ms.Status.BREAKDOWN)
    assert solution.status.tolist()[1] == int(ms.Status.CONVERGED)  # never saw the -1
    with pytest.raises(ValueError, match="needs all of"):
        ms.run(ms.ConjugateGradient(), system, params={"lower": torch.ones(2, dtype=F64)})


def test_log_residual_loss_is_the_log_of_the_reduction():
    system = _spectrum_system(batch=2)
    loss = ms.LogResidualLoss(5)
    solution = ms.run(ms.Chebyshev(1e-3, 1.0), system, **loss.run_options())
    expected = torch.log(solution.residual_history[-1] / solution.residual_history[0])
    torch.testing.assert_close(loss(solution), expected)
    with pytest.raises(ValueError, match="m"):
        ms.LogResidualLoss(0)


@pytest.mark.parametrize("paradigm", ["recurrence", "basis"])
def test_engine_baseline_is_chebyshev_on_the_probe_interval_whatever_its_weights(paradigm):
    family, tasks = _engine_tasks()
    torch.manual_seed(0)
    engine = ms.AutoSpecEngine(8, 20, paradigm)
    with torch.no_grad():
        engine.net[-1].weight.normal_(0, 0.3)  # a "trained" engine, far from Chebyshev
    method = ms.PolynomialRecurrence() if paradigm == "recurrence" else ms.ChebyshevExpansion()
    solver = ms.LearnedSolver(method, engine, family=family)
    base = solver.solve_baseline(tasks, fixed_iterations=20, rtol=0.0)
    with torch.no_grad():
        learned = solver.solve(tasks, fixed_iterations=20, rtol=0.0, safeguard=False)
    cheb = _chebyshev_on_probe(tasks, 8, 20)
    scale = float(cheb.x.abs().max())
    torch.testing.assert_close(base.x, cheb.x, rtol=1e-9, atol=1e-9 * scale)
    assert not base.x.requires_grad
    assert float((learned.x - cheb.x).abs().max()) > 1e-6 * scale  # the weights do matter


@pytest.mark.parametrize("paradigm", ["invsqrt", "filter"])
def test_engine_baseline_of_the_other_paradigms_is_the_untrained_engine(paradigm):
    _, tasks = _engine_tasks()
    features = tasks.features if paradigm == "invsqrt" else torch.cat(
        [tasks.features, 2 * tasks.features[:, 7:8]], dim=1)  # p = 8 Ritz values, norms, b
    torch.manual_seed(0)
    engine = ms.AutoSpecEngine(8, 12, paradigm, modes=3)
    with torch.no_grad():
        untrained = engine(features)
        engine.net[-1].weight.normal_(0, 0.3)
        engine.net[-1].bias.normal_(0, 0.3)
        trained = engine(features)
    base = engine.baseline_params(features)
    for name, value in untrained.items():
        torch.testing.assert_close(base[name], value, rtol=1e-12, atol=0)
    assert any(not torch.allclose(trained[k], untrained[k]) for k in untrained)


def test_relative_log_residual_loss_is_a_softplus_of_the_log_ratio():
    system = _spectrum_system(batch=3)
    loss = ms.RelativeLogResidualLoss(6, sharpness=2.0)
    learned = ms.run(ms.Chebyshev(1e-3, 1.0), system, **loss.run_options())
    base = ms.run(ms.Chebyshev(1e-1, 1.0), system, **loss.run_options())
    plain = ms.LogResidualLoss(6)
    gap = plain(learned) - plain(base)
    torch.testing.assert_close(loss(learned, base), torch.nn.functional.softplus(2 * gap) / 2)
    # Against itself the loss is log(2) / beta, its value for an untrained engine.
    torch.testing.assert_close(loss(base, base), torch.full((3,), math.log(2) / 2, dtype=F64))
    with pytest.raises(ValueError, match="baseline"):
        loss(learned)
    with pytest.raises(ValueError, match="tasks"):
        loss(learned, ms.run(ms.Chebyshev(1e-3, 1.0), _spectrum_system(batch=2),
                             **loss.run_options()))
    with pytest.raises(ValueError, match="sharpness"):
        ms.RelativeLogResidualLoss(6, sharpness=0.0)
    rebuilt = ms.training.loss_from_config(loss.config())
    assert isinstance(rebuilt, ms.RelativeLogResidualLoss) and rebuilt.sharpness == 2.0


def test_training_against_the_baseline_starts_at_log2_over_beta_and_lowers_it():
    family = ms.SpectrumFamily(size=32, probe_steps=5)
    splits = ms.make_splits(family, 64, 16, 16, seed=0)
    torch.manual_seed(0)
    solver = ms.LearnedSolver(ms.PolynomialRecurrence(),
                              ms.AutoSpecEngine(5, 12, "recurrence", hidden=(8,)), family=family)
    loss = ms.RelativeLogResidualLoss(12, sharpness=4.0)
    trainer = ms.Trainer(solver, loss, ms.TrainingConfig(epochs=6, batch_size=16, lr=1e-2),
                         progress=False)
    with torch.no_grad():
        assert float(trainer.batch_loss(splits.test)) == pytest.approx(math.log(2) / 4,
                                                                       rel=1e-6)
    trainer.fit(splits.train, splits.validation)
    with torch.no_grad():
        assert float(trainer.batch_loss(splits.test)) < math.log(2) / 4
    # A meta-solver with no classical baseline cannot be trained against one, nor can a wrapper
    # that would not pass the baseline on.
    with pytest.raises(ValueError, match="baseline"):
        ms.FailurePenaltyLoss(loss)
    constant = ms.LearnedSolver(ms.Jacobi(), ms.ConstantMetaSolver(
        {"omega": ms.IdentityHead(1)}), family=ms.Poisson1DFamily(n=8))
    with pytest.raises(TypeError, match="baseline"):
        ms.Trainer(constant, loss, progress=False)


def test_spectrum_family_draws_reproducible_spectra_with_the_asked_conditioning():
    family = ms.SpectrumFamily(size=40, probe_steps=6, kappa_min=10.0, kappa_max=1e4)
    a, b = family.sample(50, seed=3), family.sample(50, seed=3)
    assert torch.equal(a.problem.eigenvalues, b.problem.eigenvalues)
    assert torch.equal(a.features, b.features)
    eig = a.problem.eigenvalues
    kappa = eig.max(1).values / eig.min(1).values
    assert bool(((kappa > 10 * (1 - 1e-9)) & (kappa < 1e4 * (1 + 1e-9))).all())
    assert a.features.shape == (50, 12)
    ritz = a.features[:, :6]
    assert bool((ritz[:, -1] <= eig.max(1).values * (1 + 1e-12)).all())
    with pytest.raises(ValueError, match="kinds"):
        ms.SpectrumFamily(kinds=("square",))
    with pytest.raises(ValueError, match="probe_steps"):
        ms.SpectrumFamily(size=4, probe_steps=6)


def test_transfer_operators_are_spd_with_the_stated_extremes():
    from metasolve.evaluation.spectral import Operator, exact_extremes

    for operator in (Operator("p2", "poisson2d", {"m": 7}), Operator("p3", "poisson3d", {"m": 4}),
                     Operator("an", "anisotropic2d", {"m": 6, "epsilon": 0.05}),
                     Operator("rs", "random_spd", {"n": 50})):
        matrix = operator.matrix()
        values = np.linalg.eigvalsh(matrix.toarray())
        assert abs(matrix - matrix.T).max() == 0
        low, high = exact_extremes(operator, matrix)
        np.testing.assert_allclose([low, high], [values[0], values[-1]], rtol=1e-10)
        assert values[0] > 0
    probe = lanczos_probe(operators.sparse_system(operators.poisson2d(7), 1).matvec, 49, 10)
    assert float(probe.ritz_values[0, -1]) <= 8.0


def test_residual_polynomial_of_richardson_is_one_minus_ht_to_the_k():
    h = torch.tensor([0.5], dtype=F64)
    params = {"initial": h, "momentum": torch.zeros(1, 4, dtype=F64),
              "step": h.expand(1, 4).contiguous()}
    t = torch.linspace(0.1, 3.0, 7, dtype=F64)
    torch.testing.assert_close(residual_polynomial(ms.PolynomialRecurrence(), params, t, 4),
                               (1 - 0.5 * t) ** 4)


def test_basis_corrections_change_the_polynomial_and_the_extrema_fit_is_exact():
    from metasolve.polynomials import chebyshev_extrema, chebyshev_fit_at_extrema

    lo, hi = torch.tensor([0.5], dtype=F64), torch.tensor([3.0], dtype=F64)
    points = chebyshev_extrema(lo, hi, 8)
    coefficients = chebyshev_fit_at_extrema(1 + points - 0.3 * points ** 5, 7)  # degree 5 < 7
    t = torch.linspace(0.5, 3.0, 9, dtype=F64)
    np.testing.assert_allclose(_dense_q(coefficients[0].numpy(), 0.5, 3.0, t.numpy()),
                               (1 + t - 0.3 * t ** 5).numpy(), rtol=1e-11)
    _, tasks = _engine_tasks()
    torch.manual_seed(0)
    engine = ms.AutoSpecEngine(8, 12, "basis")
    with torch.no_grad():
        untrained = engine(tasks.features)["coefficients"]
        engine.net[-1].weight.normal_(0, 0.3)
        corrected = engine(tasks.features)["coefficients"]
    assert float((corrected - untrained).abs().max() / untrained.abs().max()) > 1e-3


def test_eigen_problem_checks_dtype_and_wanted_type():
    system = operators.sparse_system(operators.poisson2d(4), 1)
    with pytest.raises(TypeError, match="start"):
        ms.EigenProblem(system, torch.ones(1, 16, 3, dtype=torch.float32),
                        torch.ones(1, dtype=F64), 2)
    with pytest.raises(TypeError, match="wanted"):
        ms.EigenProblem(system, torch.ones(1, 16, 3, dtype=F64), torch.ones(1, dtype=F64), 2.0)


def _preconditioner_moving_the_lower_end(family, factor, **engine_options):
    """A basis engine of degree 6 whose network puts the lower end at ``factor`` times the
    probe's on every operator (its last layer's bias only)."""
    engine = ms.AutoSpecEngine(family.probe_steps, 6, "basis", hidden=(4,), modes=0,
                               **engine_options)
    with torch.no_grad():
        engine.net[-1].bias[0] = math.atanh(math.log(factor) / engine.lower_range)
    return ms.LearnedSolver(ms.ChebyshevExpansion(), engine, family=family)


def test_above_the_condition_limit_the_engine_gives_the_classical_parameters(tmp_path):
    family = ms.SpectrumFamily(size=64, probe_steps=6)
    tasks = family.sample(8, seed=3)
    probe = split_probe(tasks.features, 6)
    estimate = probe.ritz_values[:, -1] / probe.ritz_values[:, 0]
    limit = float(estimate.median())
    solver = _preconditioner_moving_the_lower_end(family, 2.0, condition_limit=limit)
    with torch.no_grad():
        learned = solver.params(tasks.features)
        classical = solver.classical_params(tasks.features)
    above = estimate > limit
    assert 0 < int(above.sum()) < len(above)
    for name, value in learned.items():
        torch.testing.assert_close(value[above], classical[name][above], rtol=0, atol=0)
    # Below the limit the lower end is the network's: twice the probe's.
    torch.testing.assert_close(learned["lower"][~above], 2 * classical["lower"][~above])
    path = tmp_path / "limited.safetensors"
    solver.save(path)
    loaded = ms.load(path)
    assert loaded.metasolver.condition_limit == limit
    with torch.no_grad():
        torch.testing.assert_close(loaded.params(tasks.features)["lower"], learned["lower"])


def test_the_condition_limit_is_checked():
    with pytest.raises(ValueError, match="condition_limit must be at least 1"):
        ms.AutoSpecEngine(4, 6, "basis", condition_limit=0.5)
    with pytest.raises(ValueError, match="condition_limit"):
        ms.AutoSpecEngine(4, 6, "basis", condition_limit=float("nan"))
    with pytest.raises(TypeError, match="condition_limit"):
        ms.AutoSpecEngine(4, 6, "basis", condition_limit="10")
    with pytest.raises(ValueError, match="'filter' paradigm"):
        ms.AutoSpecEngine(4, 6, "filter", condition_limit=10.0)
    engine = ms.AutoSpecEngine(4, 6, "basis")
    with pytest.raises(ValueError, match="condition_limit must be at least 1"):
        engine.condition_limit = 0.9  # checked when set, too
    assert engine.condition_limit is None


def _cg_iterations(solver, tasks, learned):
    deployed = solver.deployed(ms.ConjugateGradient())
    with torch.no_grad():
        solution = deployed.solve(tasks, rtol=1e-8, maxiter=500, safeguard=False) if learned \
            else deployed.solve_baseline(tasks, rtol=1e-8, maxiter=500)
    # An instance that does not converge costs the whole cap, as in the calibration.
    return torch.where(solution.converged, solution.iterations.double(), 500.0)


def test_under_the_calibrated_limit_no_instance_needs_more_iterations():
    family = ms.SpectrumFamily(size=400, probe_steps=6)
    # Grid Laplacians, where a higher lower end pays at these sizes, and a random sparse SPD
    # matrix, whose dense bottom makes it cost CG iterations.
    sets = [(name, ms.TaskBatch(system, family.features_of(system.matvec, system.size, 4, i)))
            for i, (name, system) in enumerate(
                (name, operators.sparse_system(matrix, 4, seed=i)) for i, (name, matrix) in
                enumerate((("poisson3d-8", operators.poisson3d(8)),
                           ("poisson2d-40", operators.poisson2d(40)),
                           ("random-spd-600", operators.random_spd(600, seed=1)))))]
    solver = _preconditioner_moving_the_lower_end(family, 2.0)
    limit, report = ms.calibrate_condition_limit(solver.deployed(ms.ConjugateGradient()), sets,
                                                 rtol=1e-8, maxiter=500)
    assert solver.metasolver.condition_limit is None  # left as it was
    assert [row["name"] for row in report] == ["poisson3d-8", "poisson2d-40", "random-spd-600"]
    solver.metasolver.condition_limit = limit
    losing = 0
    for (name, tasks), row in zip(sets, report, strict=True):
        classical = _cg_iterations(solver, tasks, learned=False)
        limited = _cg_iterations(solver, tasks, learned=True)
        assert bool((limited <= classical).all()), name
        assert row["classical"] == pytest.approx(float(classical.mean()))
        assert row["limited"] == pytest.approx(float(limited.mean()))
        losing += row["learned"] > row["classical"]
    # The unlimited engine loses on the random matrix; the limit keeps its gains on the grids.
    assert losing == 1 and report[2]["learned"] > report[2]["classical"]
    assert report[2]["trusted"] < report[2]["instances"]
    assert report[2]["first_slower"] > limit
    assert report[0]["first_slower"] is None and report[1]["first_slower"] is None
    assert report[2]["limited"] == report[2]["classical"]
    for row in report[:2]:
        assert row["trusted"] == row["instances"] and row["limited"] < row["classical"]


def test_calibrating_the_condition_limit_rejects_what_it_cannot_use():
    family = ms.SpectrumFamily(size=32, probe_steps=4)
    with pytest.raises(ValueError, match="task_sets"):
        ms.calibrate_condition_limit(_preconditioner_moving_the_lower_end(family, 2.0), [],
                                     rtol=1e-8)
    relaxation = ms.ConstantMetaSolver({"omega": ms.IntervalHead(0.5, 1.5)}, init={"omega": 0.8})
    other = ms.LearnedSolver(ms.Jacobi(), relaxation)
    with pytest.raises(TypeError, match="AutoSpecEngine"):
        ms.calibrate_condition_limit(other, [("x", family.sample(2, seed=0))], rtol=1e-8)
