"""Resumable fits (Adam and Gauss-Newton): exact resumes, refused checkpoints, atomic saves."""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict

import pytest
import torch

import metasolve as ms
from metasolve.artifact import read_tensors, write_tensors
from metasolve.training.gauss_newton import GaussNewtonRefiner

N = 8  # unknowns: small enough for a Gauss-Newton iteration to take a fraction of a second


@pytest.fixture(scope="module")
def splits():
    return ms.make_splits(ms.Poisson1DFamily(n=N, p=0.0), 32, 16, 8, seed=0)


def _solver(seed=0, hidden=(), p=0.0):
    torch.manual_seed(seed)
    psi = ms.NetworkMetaSolver(N, {"x0": ms.BasisHead(ms.sine_basis(N))}, hidden=hidden)
    return ms.LearnedSolver(ms.Jacobi(), psi, family=ms.Poisson1DFamily(n=N, p=p),
                            monitor="error")


def _weights(solver):
    return {k: v.detach().clone() for k, v in solver.model.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _adam(solver, count, splits, checkpoint=None):
    config = ms.TrainingConfig(epochs=count, batch_size=16, lr=0.1, seed=1, plateau_patience=0,
                               plateau_factor=0.5)
    trainer = ms.Trainer(solver, ms.FixedIterationLoss(5), config, checkpoint=checkpoint,
                         progress=False)
    return trainer.fit(splits.train, splits.validation)


# The surrogate stops each instance at its own iteration count, so the training set is chunked
# in count order (four chunks of 8): a resume must restore that order to be exact.
_SURROGATE = ms.IterationSurrogateLoss(1e-2, maxiter=100)


def _gauss_newton(solver, count, splits, checkpoint=None, loss=None):
    trainer = ms.Trainer(solver, loss or ms.FixedIterationLoss(3), ms.TrainingConfig(epochs=1),
                         progress=False)
    return trainer.refine_gauss_newton(
        splits.train, splits.validation, ms.GaussNewtonConfig(iterations=count, chunk_size=8),
        checkpoint=checkpoint)


FITS = {"adam": _adam, "gauss-newton": _gauss_newton}
UNITS = {"adam": "trained epochs", "gauss-newton": "Gauss-Newton iterations"}


# -- exact resumes -----------------------------------------------------------------------------

def test_resumed_adam_run_is_bitwise_the_uninterrupted_one(splits, tmp_path):
    whole = _solver(hidden=(15, 15))
    history = _adam(whole, 4, splits)
    assert history.lr[-1] < history.lr[0]  # the scheduler acted: its state must survive
    checkpoint = tmp_path / "adam.safetensors"
    first = _adam(_solver(hidden=(15, 15)), 2, splits, checkpoint)
    resumed = _solver(hidden=(15, 15), seed=42)  # fresh trainer and model: all from the file
    again = asdict(_adam(resumed, 4, splits, checkpoint))
    # The wall-clock is summed over both runs (the artifact's training time), not replayed.
    assert again.pop("seconds") > first.seconds > 0
    assert again == {k: v for k, v in asdict(history).items() if k != "seconds"}
    assert resumed.settings["training"]["train_seconds"] > first.seconds
    _assert_same_weights(_weights(whole), _weights(resumed))


def test_resumed_gauss_newton_is_bitwise_the_uninterrupted_one(splits, tmp_path):
    whole = _solver()
    history = _gauss_newton(whole, 2, splits, loss=_SURROGATE)
    assert len(history.iteration) == 2 and not history.stopped
    checkpoint = tmp_path / "gn.safetensors"
    _gauss_newton(_solver(), 1, splits, checkpoint, loss=_SURROGATE)
    resumed = _solver(seed=42)
    assert asdict(_gauss_newton(resumed, 2, splits, checkpoint, loss=_SURROGATE)) == \
        asdict(history)
    _assert_same_weights(_weights(whole), _weights(resumed))


@pytest.mark.parametrize("kind", FITS)
def test_a_finished_checkpoint_ends_at_once_with_its_best_weights(kind, splits, tmp_path,
                                                                  monkeypatch):
    fit, checkpoint = FITS[kind], tmp_path / "ckpt.safetensors"
    finished = _solver()
    history = fit(finished, 2, splits, checkpoint)

    def no_step(*args, **kwargs):
        raise AssertionError("a finished checkpoint must not be trained further")

    monkeypatch.setattr(ms.Trainer, "batch_loss", no_step)
    monkeypatch.setattr(GaussNewtonRefiner, "mean_loss", no_step)
    again = _solver(seed=42)
    assert asdict(fit(again, 2, splits, checkpoint)) == asdict(history)
    _assert_same_weights(_weights(finished), _weights(again))


# -- refused checkpoints -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", FITS)
def test_a_checkpoint_holding_more_than_asked_is_refused(kind, splits, tmp_path):
    fit, checkpoint = FITS[kind], tmp_path / "ckpt.safetensors"
    fit(_solver(), 2, splits, checkpoint)
    shorter = _solver(seed=42)
    before = _weights(shorter)
    with pytest.raises(ms.ArtifactError) as refused:
        fit(shorter, 1, splits, checkpoint)
    message = str(refused.value)
    assert str(checkpoint) in message
    assert f"holds 2 {UNITS[kind]}, more than the 1 asked for" in message
    _assert_same_weights(before, _weights(shorter))  # left as it was


@pytest.mark.parametrize("kind", FITS)
def test_a_checkpoint_from_another_family_is_refused(kind, splits, tmp_path):
    fit, checkpoint = FITS[kind], tmp_path / "ckpt.safetensors"
    fit(_solver(p=0.0), 1, splits, checkpoint)
    with pytest.raises(ms.ArtifactError, match=r"different settings \(family\)"):
        fit(_solver(p=0.01), 2, splits, checkpoint)


# -- atomic saves ------------------------------------------------------------------------------

def _save_repeatedly(path, barrier, worker, times):
    """Child process: save ``path`` ``times`` times (an exception makes the exit code 1)."""
    barrier.wait()
    for i in range(times):
        write_tensors(path, {"x": torch.full((64,), float(worker))},
                      {"kind": "checkpoint", "worker": worker, "save": i})


def test_two_processes_saving_the_same_checkpoint_never_collide(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_save_repeatedly, args=(path, barrier, w, 200))
               for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [process.exitcode for process in workers] == [0, 0]
    tensors, document = read_tensors(path)  # whole, and one of the two last saves
    assert document["save"] == 199
    assert torch.equal(tensors["x"], torch.full((64,), float(document["worker"])))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def test_a_refinement_after_a_changed_fit_refuses_its_old_checkpoint(tmp_path):
    """Gauss-Newton after Adam is a later stage: when the Adam stage is extended, the old
    refinement checkpoint started from other weights and must not be resumed."""
    family = ms.Poisson1DFamily(n=8)
    splits = ms.make_splits(family, 16, 8, 4, seed=0)

    def run(epochs):
        torch.manual_seed(0)
        psi = ms.NetworkMetaSolver(8, {"x0": ms.BasisHead(ms.sine_basis(8))}, hidden=(4,))
        solver = ms.LearnedSolver(ms.Jacobi(), psi, family=family, monitor="error")
        trainer = ms.Trainer(solver, ms.FixedIterationLoss(2),
                             ms.TrainingConfig(epochs=epochs, batch_size=8),
                             checkpoint=tmp_path / "adam.safetensors", progress=False)
        trainer.fit(splits.train, splits.validation)
        trainer.refine_gauss_newton(splits.train, splits.validation,
                                    ms.GaussNewtonConfig(iterations=1),
                                    checkpoint=tmp_path / "gn.safetensors")

    run(1)
    with pytest.raises(ms.ArtifactError, match="started from other weights"):
        run(2)
