"""Losses, the trainer, and checkpoint/resume."""

from __future__ import annotations

import pytest
import torch

import metasolve as ms
from metasolve.training import loss_from_config


@pytest.fixture(scope="module")
def splits():
    return ms.make_splits(ms.Poisson1DFamily(n=16, p=0.0), 64, 32, 8, seed=0)


def _solver(seed=0):
    torch.manual_seed(seed)
    family = ms.Poisson1DFamily(n=16, p=0.0)
    psi = ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16))}, hidden=(15, 15))
    return ms.LearnedSolver(ms.Jacobi(), psi, family=family, monitor="error")


def _params(solver):
    return {k: v.detach().clone() for k, v in solver.metasolver.state_dict().items()}


def test_fixed_iteration_loss_is_squared_relative_error(splits):
    tasks = splits.validation
    loss = ms.FixedIterationLoss(5)
    assert loss.run_options() == {"fixed_iterations": 5, "rtol": 0.0}
    sol = ms.run(ms.Jacobi(), tasks.problem, monitor="error", **loss.run_options())
    err = torch.linalg.vector_norm(sol.x - tasks.problem.solution, dim=1)
    ref = torch.linalg.vector_norm(tasks.problem.solution, dim=1)
    assert torch.allclose(loss(sol), (err / ref) ** 2)
    # m = 0 is supervised learning of the solution itself: a zero guess scores exactly 1.
    zero = ms.FixedIterationLoss(0)
    sol0 = ms.run(ms.Jacobi(), tasks.problem, monitor="error", **zero.run_options())
    assert torch.allclose(zero(sol0), torch.ones(len(tasks), dtype=torch.float64))


def test_loss_configs_round_trip():
    for loss in (ms.FixedIterationLoss(7), ms.IterationSurrogateLoss(1e-4, 300, gain=2.0,
                                                                      log_scale=False)):
        again = loss_from_config(loss.config())
        assert type(again) is type(loss) and again.config() == loss.config()
    with pytest.raises(ValueError, match="loss kind"):
        loss_from_config({"kind": "nope"})


def test_linear_scale_surrogate_is_the_literal_form(splits):
    tasks = splits.validation
    loss = ms.IterationSurrogateLoss(1e-2, 500, gain=3.0, log_scale=False)
    sol = ms.run(ms.Jacobi(), tasks.problem, monitor="error", **loss.run_options())
    # Recompute L_k = ||u^(k) - u|| / ||u|| with a plain loop and sum sigmoid(a (L_k - eps)).
    A, b, u = tasks.problem.matrix, tasks.problem.rhs, tasks.problem.solution
    expected = []
    for i in range(len(tasks)):
        x, total = torch.zeros_like(b[i]), 0.0
        while True:
            rel = float(torch.linalg.vector_norm(x - u[i]) / torch.linalg.vector_norm(u[i]))
            if rel <= 1e-2:
                break
            total += float(torch.sigmoid(torch.tensor(3.0 * (rel - 1e-2))))
            x = x + (b[i] - A @ x) / torch.diagonal(A)
        expected.append(total)
    assert torch.allclose(loss(sol), torch.tensor(expected, dtype=torch.float64))


def test_surrogate_charges_a_diverged_instance_up_to_the_cap():
    # Jacobi with omega = 3 diverges on this matrix; omega = 1 converges.
    A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64)
    problem = ms.LinearSystem(A, b)
    loss = ms.IterationSurrogateLoss(1e-10, maxiter=200)
    sol = ms.run(ms.Jacobi(), problem, params={"omega": torch.tensor([1.0, 3.0],
                                                                       dtype=torch.float64)},
                 **loss.run_options())
    assert sol.status.tolist() == [ms.Status.CONVERGED, ms.Status.DIVERGED]
    value = loss(sol)
    assert value[1] > value[0]
    assert value[1] >= 200 - 1


def test_tiny_training_lowers_validation_loss(splits):
    solver = _solver()
    before = _params(solver)
    loss = ms.FixedIterationLoss(5)
    trainer = ms.Trainer(solver, loss, ms.TrainingConfig(epochs=3, batch_size=32, lr=1e-3),
                         progress=False)
    with torch.no_grad():
        initial = float(trainer.batch_loss(splits.validation))
    history = trainer.fit(splits.train, splits.validation)
    assert history.epoch == [0, 1, 2]
    assert len(history.train_loss) == len(history.validation_loss) == len(history.lr) == 3
    assert all(torch.isfinite(torch.tensor(history.validation_loss)))
    assert history.best_validation_loss == min(history.validation_loss)
    assert history.validation_loss[history.best_epoch] == history.best_validation_loss
    assert history.best_validation_loss < initial
    # The model left in the solver is the best one, and it really changed.
    with torch.no_grad():
        assert float(trainer.batch_loss(splits.validation)) == pytest.approx(
            history.best_validation_loss, rel=1e-12)
    assert any(not torch.equal(before[k], v) for k, v in _params(solver).items())
    assert solver.settings["training"]["best_epoch"] == history.best_epoch
    assert solver.settings["training"]["train_size"] == 64
    # The model file carries its training time (metasolve bench's break-even solves).
    assert solver.settings["training"]["train_seconds"] == history.seconds > 0


class _Interrupt(Exception):
    pass


def _config():
    # Slow moment averaging (betas 0.999, 0.999) makes this large rate overshoot within four
    # epochs, which the resume test below needs.
    return ms.TrainingConfig(epochs=4, batch_size=32, lr=0.1, seed=1, plateau_patience=0,
                             plateau_factor=0.5, betas=(0.999, 0.999))


def test_resumed_training_ends_where_an_uninterrupted_run_does(splits, tmp_path):
    loss = ms.FixedIterationLoss(5)

    # Run A: four epochs in one go.
    solver_a = _solver(seed=1)
    history_a = ms.Trainer(solver_a, loss, _config(), progress=False).fit(splits.train,
                                                                          splits.validation)
    # With this (large) learning rate and patience 0 the run has an epoch that does not improve:
    # the scheduler cuts the rate after the resume point and the best model is not the last one,
    # so scheduler state and best-model bookkeeping must both survive the resume.
    assert len(history_a.epoch) == 4
    assert history_a.lr[-1] < history_a.lr[0]
    assert 1 < history_a.best_epoch < 3

    # Run B: killed right after the checkpoint of epoch 2 ...
    ckpt = tmp_path / "ckpt.safetensors"
    seen = []

    def die_after_two_epochs(epoch, history):
        seen.append(epoch)
        if epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        ms.Trainer(_solver(seed=1), loss, _config(), checkpoint=ckpt, progress=False,
                   on_epoch=die_after_two_epochs).fit(splits.train, splits.validation)
    assert seen == [0, 1] and ckpt.exists()

    # ... and resumed by a fresh trainer (its model deliberately initialised differently).
    solver_b = _solver(seed=99)
    trainer_b = ms.Trainer(solver_b, loss, _config(), checkpoint=ckpt, progress=False)
    history_b = trainer_b.fit(splits.train, splits.validation)
    assert history_b.epoch == [0, 1, 2, 3]
    assert history_b.validation_loss == pytest.approx(history_a.validation_loss, rel=1e-12)
    assert history_b.lr == history_a.lr
    assert history_b.best_epoch == history_a.best_epoch
    params_a, params_b = _params(solver_a), _params(solver_b)
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name

    # A finished checkpoint resumes to the same final model without training further.
    solver_c = _solver(seed=5)
    history_c = ms.Trainer(solver_c, loss, _config(), checkpoint=ckpt,
                           progress=False).fit(splits.train, splits.validation)
    assert history_c.epoch == [0, 1, 2, 3]
    for name, value in _params(solver_c).items():
        assert torch.allclose(value, params_a[name], rtol=0, atol=1e-12)


def test_checkpoint_from_other_settings_is_refused(splits, tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    loss = ms.FixedIterationLoss(1)
    config = ms.TrainingConfig(epochs=1, batch_size=64, lr=1e-3)
    ms.Trainer(_solver(), loss, config, checkpoint=ckpt, progress=False).fit(
        splits.train, splits.validation)
    for other_loss, other_config in ((loss, ms.TrainingConfig(epochs=1, batch_size=64, lr=1e-2)),
                                     (ms.FixedIterationLoss(2), config)):
        trainer = ms.Trainer(_solver(), other_loss, other_config, checkpoint=ckpt,
                             progress=False)
        with pytest.raises(ms.ArtifactError, match="different settings"):
            trainer.fit(splits.train, splits.validation)
    # A solver artifact is not a checkpoint either.
    model = tmp_path / "model.safetensors"
    _solver().save(model)
    with pytest.raises(ms.ArtifactError, match="checkpoint"):
        ms.Trainer(_solver(), loss, config, checkpoint=model, progress=False).fit(
            splits.train, splits.validation)


def test_trainer_rejects_bad_arguments(splits):
    with pytest.raises(TypeError, match="solver"):
        ms.Trainer("solver", ms.FixedIterationLoss(1))
    with pytest.raises(TypeError, match="loss"):
        ms.Trainer(_solver(), lambda sol: sol.residual)
    trainer = ms.Trainer(_solver(), ms.FixedIterationLoss(1),
                         ms.TrainingConfig(epochs=1), progress=False)
    with pytest.raises(TypeError, match="validation"):
        trainer.fit(splits.train, splits.validation.problem)


def test_a_finished_run_is_extended_by_asking_for_more_epochs(splits, tmp_path):
    loss = ms.FixedIterationLoss(5)
    solver_a = _solver(seed=1)
    history_a = ms.Trainer(solver_a, loss, _config(), progress=False).fit(splits.train,
                                                                          splits.validation)
    ckpt = tmp_path / "ckpt.safetensors"
    short = ms.TrainingConfig(**{**_config().__dict__, "epochs": 2})
    ms.Trainer(_solver(seed=1), loss, short, checkpoint=ckpt, progress=False).fit(
        splits.train, splits.validation)
    solver_b = _solver(seed=7)
    history_b = ms.Trainer(solver_b, loss, _config(), checkpoint=ckpt, progress=False).fit(
        splits.train, splits.validation)
    assert history_b.epoch == [0, 1, 2, 3]
    assert history_b.validation_loss == pytest.approx(history_a.validation_loss, rel=1e-12)
    for name, value in _params(solver_b).items():
        assert torch.allclose(value, _params(solver_a)[name], rtol=0, atol=1e-12), name


def test_fit_twice_without_a_checkpoint_starts_a_fresh_history(splits):
    solver = _solver()
    trainer = ms.Trainer(solver, ms.FixedIterationLoss(5),
                         ms.TrainingConfig(epochs=2, batch_size=32, lr=1e-3), progress=False)
    trainer.fit(splits.train, splits.validation)
    second = trainer.fit(splits.train, splits.validation)
    assert second.epoch == [0, 1]
    assert second.best_epoch in (0, 1)


def test_a_checkpoint_with_more_epochs_than_asked_is_refused(splits, tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    loss = ms.FixedIterationLoss(5)
    ms.Trainer(_solver(), loss, ms.TrainingConfig(epochs=3, batch_size=32, lr=1e-3),
               checkpoint=ckpt, progress=False).fit(splits.train, splits.validation)
    with pytest.raises(ms.ArtifactError, match="3 trained epochs"):
        ms.Trainer(_solver(), loss, ms.TrainingConfig(epochs=2, batch_size=32, lr=1e-3),
                   checkpoint=ckpt, progress=False).fit(splits.train, splits.validation)


@ms.register_method
class _LearnedDampingJacobi(ms.Jacobi, torch.nn.Module):
    """Jacobi whose damping is a weight of the method itself (a model inside the step)."""

    name = "test-learned-damping-jacobi"

    def __init__(self, omega: float = 0.8):
        torch.nn.Module.__init__(self)
        ms.Jacobi.__init__(self, omega)
        self.log_omega = torch.nn.Parameter(torch.tensor(float(omega), dtype=torch.float64).log())

    def step(self, problem, state, params):
        return super().step(problem, state, {"omega": self.log_omega.exp().expand(
            problem.batch_size)})


def test_weights_inside_the_method_are_trained_and_saved(splits, tmp_path):
    family = ms.Poisson1DFamily(n=16, p=0.0)
    psi = ms.ConstantMetaSolver({"x0": ms.IdentityHead(16)}, in_features=16)
    solver = ms.LearnedSolver(_LearnedDampingJacobi(0.5), psi, family=family, monitor="error")
    before = solver.method.log_omega.item()
    ms.Trainer(solver, ms.FixedIterationLoss(10),
               ms.TrainingConfig(epochs=3, batch_size=32, lr=1e-2, betas=(0.9, 0.999)),
               progress=False).fit(splits.train, splits.validation)
    after = solver.method.log_omega.item()
    assert after > before  # damping 0.5 is too small for Jacobi on Poisson: it grows
    solver.save(tmp_path / "m.safetensors")
    loaded = ms.load(tmp_path / "m.safetensors")
    assert loaded.method.log_omega.item() == after


def test_grad_clip_bounds_the_gradient_adam_sees(splits, monkeypatch):
    seen = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm):
        parameters = list(parameters)
        total = original(parameters, max_norm)
        seen.append(float(torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters]))))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    config = ms.TrainingConfig(epochs=1, batch_size=32, lr=1e-3, grad_clip=1e-3)
    ms.Trainer(_solver(), ms.FixedIterationLoss(5), config, progress=False).fit(
        splits.train, splits.validation)
    assert len(seen) == 2  # 64 training tasks, batch 32
    assert all(norm <= 1e-3 * (1 + 1e-6) for norm in seen)
    with pytest.raises(ValueError, match="grad_clip"):
        ms.TrainingConfig(grad_clip=-1.0)


def test_milestones_cut_the_learning_rate_at_fixed_epochs(splits, tmp_path):
    """Appendix C.3's schedule: the rate is cut at given epochs whatever the validation loss
    does, and a resumed run keeps the schedule."""
    config = ms.TrainingConfig(epochs=4, batch_size=32, lr=1e-3, milestones=(1, 3),
                               plateau_factor=0.2)
    history = ms.Trainer(_solver(seed=1), ms.FixedIterationLoss(5), config,
                         progress=False).fit(splits.train, splits.validation)
    # history.lr[e] is the rate after epoch e, the one epoch e + 1 trains with: epoch 0 runs at
    # 1e-3, epochs 1 and 2 at 2e-4, epoch 3 at 4e-5.
    assert history.lr == pytest.approx([2e-4, 2e-4, 4e-5, 4e-5])
    ckpt = tmp_path / "ckpt.safetensors"
    short = ms.TrainingConfig(**{**config.__dict__, "epochs": 2})
    ms.Trainer(_solver(seed=1), ms.FixedIterationLoss(5), short, checkpoint=ckpt,
               progress=False).fit(splits.train, splits.validation)
    resumed = ms.Trainer(_solver(seed=1), ms.FixedIterationLoss(5), config, checkpoint=ckpt,
                         progress=False).fit(splits.train, splits.validation)
    assert resumed.lr == pytest.approx(history.lr)
    assert resumed.validation_loss == pytest.approx(history.validation_loss, rel=1e-12)
    with pytest.raises(ValueError, match="milestones"):
        ms.TrainingConfig(milestones=(150, 100))
    with pytest.raises(TypeError, match="milestones"):
        ms.TrainingConfig(milestones=100)


# -- Gauss-Newton (IRLS) refinement ------------------------------------------------------------

def _linear_solver(seed=0):
    """A meta-solver affine in its weights: ``L_m`` is then exactly quadratic in them."""
    torch.manual_seed(seed)
    psi = ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16))}, hidden=())
    return ms.LearnedSolver(ms.Jacobi(), psi, family=ms.Poisson1DFamily(n=16, p=0.0),
                            monitor="error")


def _refiner(solver, loss, **config):
    from metasolve.training.gauss_newton import GaussNewtonRefiner

    trainer = ms.Trainer(solver, loss, ms.TrainingConfig(epochs=1), progress=False)
    return GaussNewtonRefiner(solver, loss, ms.GaussNewtonConfig(**config), trainer.identity())


def _mean_loss_of_weights(solver, loss, tasks):
    from torch.func import functional_call

    names = [n for n, _ in solver.metasolver.named_parameters()]
    shapes = [w.shape for w in solver.metasolver.parameters()]

    def value(theta):
        weights, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            weights[name] = theta[start:start + shape.numel()].view(shape)
            start += shape.numel()
        params = functional_call(solver.metasolver, weights, (tasks.features,))
        return loss(ms.run(solver.method, tasks.problem, params=params, monitor="error",
                           **loss.run_options())).mean()

    return value


def test_gauss_newton_model_of_l_m_is_the_exact_hessian(splits):
    # For an affine meta-solver and a linear stationary method, L_m is a quadratic in the
    # weights: the IRLS Gauss-Newton matrix must be its exact Hessian, the gradient exact.
    solver, loss, tasks = _linear_solver(), ms.FixedIterationLoss(3), splits.train
    refiner = _refiner(solver, loss, chunk_size=24)  # several chunks, summed
    theta = refiner._flat()
    value, curvature, gradient = refiner._model(tasks, theta)
    # A second build (chunked in the order of the first one's iteration counts): same sums.
    again = refiner._model(tasks, theta)
    assert torch.allclose(again[1], curvature, rtol=1e-10) and again[0] == pytest.approx(value)
    exact = _mean_loss_of_weights(solver, loss, tasks)
    assert value == pytest.approx(float(exact(theta)), rel=1e-12)
    assert torch.allclose(gradient, torch.func.grad(exact)(theta), rtol=1e-8, atol=1e-14)
    hessian = torch.autograd.functional.hessian(exact, theta)
    assert torch.allclose(curvature, hessian, rtol=1e-7, atol=1e-12 * float(hessian.abs().max()))


def test_gauss_newton_gradient_of_the_surrogate_is_exact(splits):
    solver = _solver()
    with torch.no_grad():  # a non-trivial guess, so every weight has a gradient
        for w in solver.metasolver.parameters():
            w.add_(0.01 * torch.randn_like(w))
    loss, tasks = ms.IterationSurrogateLoss(1e-4, maxiter=300), splits.validation
    refiner = _refiner(solver, loss)
    theta = refiner._flat()
    _, curvature, gradient = refiner._model(tasks, theta)
    assert refiner._chunks(tasks)[0].tolist() != list(range(len(tasks)))  # chunked by count
    assert torch.allclose(gradient, torch.func.grad(_mean_loss_of_weights(solver, loss, tasks))(
        theta), rtol=1e-7, atol=1e-12)
    assert torch.linalg.eigvalsh(curvature).min() >= -1e-10 * float(curvature.abs().max())


def test_gauss_newton_refinement_solves_an_affine_l_m_fit(splits):
    # With an affine meta-solver, L_m is quadratic: one undamped step reaches its minimum, and
    # Levenberg-Marquardt gets there in a few. The kept model is never worse on validation.
    solver, loss = _linear_solver(), ms.FixedIterationLoss(2)
    trainer = ms.Trainer(solver, loss, ms.TrainingConfig(epochs=1), progress=False)
    with torch.no_grad():
        before = float(trainer.batch_loss(splits.train))
    history = trainer.refine_gauss_newton(splits.train, splits.validation,
                                          ms.GaussNewtonConfig(iterations=8, damping=1e-6))
    with torch.no_grad():
        after = float(trainer.batch_loss(splits.train))
    assert history.train_loss[-1] < 1e-6 * before
    assert after < 1e-6 * before
    assert history.best_validation_loss <= history.start_validation_loss
    assert solver.settings["training"]["gauss_newton"]["iterations"] == 8


def test_gauss_newton_resumes_where_an_uninterrupted_run_ends(splits, tmp_path):
    # Exactly: the checkpoint holds all the state an iteration reads (see test_fit_resume.py).
    loss = ms.FixedIterationLoss(3)
    whole = _solver()
    ms.Trainer(whole, loss, ms.TrainingConfig(epochs=1), progress=False).refine_gauss_newton(
        splits.train, splits.validation, ms.GaussNewtonConfig(iterations=3))
    parts = _solver()
    trainer = ms.Trainer(parts, loss, ms.TrainingConfig(epochs=1), progress=False)
    checkpoint = tmp_path / "gn.safetensors"
    trainer.refine_gauss_newton(splits.train, splits.validation,
                                ms.GaussNewtonConfig(iterations=1), checkpoint=checkpoint)
    trainer.refine_gauss_newton(splits.train, splits.validation,
                                ms.GaussNewtonConfig(iterations=3), checkpoint=checkpoint)
    for a, b in zip(_params(whole).values(), _params(parts).values(), strict=True):
        assert torch.equal(a, b)
    other = ms.Trainer(_solver(), ms.FixedIterationLoss(2), ms.TrainingConfig(epochs=1),
                       progress=False)
    with pytest.raises(ms.ArtifactError, match="different settings"):
        other.refine_gauss_newton(splits.train, splits.validation,
                                  ms.GaussNewtonConfig(iterations=3), checkpoint=checkpoint)


class _FinalIterateLoss(ms.training.Loss):
    """Scores the final iterate directly, not through the monitored norms."""

    kind = "final-iterate-test"

    def run_options(self):
        return {"fixed_iterations": 2, "rtol": 0.0}

    def __call__(self, solution):
        return solution.x.pow(2).sum(dim=1)

    def config(self):
        return {"kind": self.kind}

    @property
    def label(self):
        return "final iterate"


def test_gauss_newton_rejects_bad_arguments(splits):
    with pytest.raises(ValueError, match="monitored norms"):
        ms.Trainer(_solver(), _FinalIterateLoss(), progress=False).refine_gauss_newton(
            splits.train, splits.validation, ms.GaussNewtonConfig(iterations=1))
    trainer = ms.Trainer(_solver(), ms.FixedIterationLoss(2), progress=False)
    with pytest.raises(TypeError, match="config"):
        trainer.refine_gauss_newton(splits.train, splits.validation, {"iterations": 3})
    with pytest.raises(TypeError, match="train"):
        trainer.refine_gauss_newton(splits.train.features, splits.validation)
    with pytest.raises(ValueError, match="damping"):
        ms.GaussNewtonConfig(damping=-1.0)
    with pytest.raises(ValueError, match="iterations"):
        ms.GaussNewtonConfig(iterations=0)


def test_a_fit_that_does_not_train_says_why(splits):
    """A learning rate far below the weights' resolution leaves them, and the validation loss,
    unchanged: no epoch improves on the start, the fit warns and its history says why."""
    trainer = ms.Trainer(_solver(seed=1), ms.FixedIterationLoss(5),
                         ms.TrainingConfig(epochs=2, batch_size=16, lr=1e-300), progress=False)
    with pytest.warns(ms.TrainingWarning, match="no epoch improved"):
        history = trainer.fit(splits.train, splits.validation)
    assert history.best_epoch == -1 and "starting weights" in history.untrained


def test_a_loss_that_ignores_the_weights_is_refused(splits):
    psi = ms.ConstantMetaSolver({"omega": ms.IntervalHead(0.0, 1.0)},
                                in_features=splits.train.features.shape[1])
    trainer = ms.Trainer(ms.LearnedSolver(ms.Jacobi(), psi), ms.FixedIterationLoss(0),
                         ms.TrainingConfig(epochs=1), progress=False)
    with pytest.raises(ValueError, match="does not depend on the trained weights"):
        trainer.fit(splits.train, splits.validation)


def test_a_fit_whose_every_step_fails_says_so(splits, monkeypatch):
    solver = _solver(seed=1)
    trainer = ms.Trainer(solver, ms.FixedIterationLoss(5), _config(), progress=False)
    before = {k: v.clone() for k, v in solver.model.state_dict().items()}
    monkeypatch.setattr(trainer, "batch_loss",
                        lambda tasks: torch.tensor(float("nan"), requires_grad=True))
    with pytest.warns(ms.TrainingWarning, match="every one of the"):
        history = trainer.fit(splits.train, splits.validation)
    assert history.skipped_steps > 0 and "failed" in history.untrained
    assert all(torch.equal(before[k], v) for k, v in solver.model.state_dict().items())


def test_a_fit_that_trains_does_not_warn(splits):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ms.TrainingWarning)
        history = ms.Trainer(_solver(seed=1), ms.FixedIterationLoss(5), _config(),
                             progress=False).fit(splits.train, splits.validation)
    assert history.best_epoch >= 0 and history.untrained == ""
