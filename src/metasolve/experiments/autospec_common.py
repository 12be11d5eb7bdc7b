"""What the three AutoSpec experiments share: building and training an engine on synthetic
spectra. The transfer operators, evaluation sets and classical baselines are in
:mod:`metasolve.evaluation.spectral`."""

from __future__ import annotations

from pathlib import Path

import torch

from ..evaluation.shifts import ShiftedSet
from ..evaluation.spectral import evaluation_sets
from ..learned import AutoSpecEngine, LearnedSolver
from ..solvers import ChebyshevExpansion, ChebyshevSeries, ConjugateGradient, PolynomialRecurrence
from ..tasks import SpectrumFamily, make_splits
from ..training import LogResidualLoss, RelativeLogResidualLoss, Trainer, TrainingConfig


def make_engine_solver(family: SpectrumFamily, degree: int, paradigm: str,
                       hidden: tuple[int, ...], **engine_options) -> LearnedSolver:
    engine = AutoSpecEngine(family.probe_steps, degree, paradigm, hidden=hidden,
                            **engine_options)
    method = {"recurrence": PolynomialRecurrence, "basis": ChebyshevExpansion,
              "invsqrt": ChebyshevSeries}[paradigm]()
    # A matrix function has no residual: it is scored by its error against A^{-1/2} b.
    monitor = "error" if paradigm == "invsqrt" else "residual"
    return LearnedSolver(method, engine, family=family, monitor=monitor)


def train_engine(family: SpectrumFamily, degree: int, paradigm: str, hidden, n_train: int,
                 n_validation: int, training: TrainingConfig, seed: int, checkpoint: Path,
                 progress: bool, sharpness: float | None = None,
                 **engine_options) -> tuple[LearnedSolver, dict]:
    """Train an engine on synthetic spectra with the log-residual loss (the log relative error
    for a matrix function, whose monitor is the error), or, given a ``sharpness``, with the loss
    relative to the untrained engine's classical method
    (:class:`~metasolve.training.RelativeLogResidualLoss`)."""
    splits = make_splits(family, n_train, n_validation, 1, seed=seed)
    torch.manual_seed(seed)
    solver = make_engine_solver(family, degree, paradigm, hidden, **engine_options)
    loss = LogResidualLoss(degree) if sharpness is None \
        else RelativeLogResidualLoss(degree, sharpness)
    trainer = Trainer(solver, loss, training, checkpoint=checkpoint, progress=progress)
    history = trainer.fit(splits.train, splits.validation)
    return solver, {"best_epoch": history.best_epoch, "epochs": training.epochs,
                    "n_train": n_train, "best_validation_loss": history.best_validation_loss,
                    "loss": loss.kind, **({} if sharpness is None else {"sharpness": sharpness})}


def train_inside_cg(family: SpectrumFamily, degree: int, hidden, n_train: int,
                    n_validation: int, training: TrainingConfig, seed: int, checkpoint: Path,
                    progress: bool, cg_iterations: int, sharpness: float,
                    **engine_options) -> tuple[LearnedSolver, dict]:
    """Train a basis engine as CG's polynomial preconditioner: ``cg_iterations`` unrolled CG
    iterations on synthetic spectra, the log residual relative to CG with the Chebyshev
    polynomial on the probe's interval (the untrained engine's;
    :class:`~metasolve.training.RelativeLogResidualLoss` of sharpness ``sharpness``). Returns
    the trained solver, whose method is CG, and what its training reports."""
    splits = make_splits(family, n_train, n_validation, 1, seed=seed)
    torch.manual_seed(seed)
    solver = make_engine_solver(family, degree, "basis", hidden, **engine_options) \
        .deployed(ConjugateGradient())
    loss = RelativeLogResidualLoss(cg_iterations, sharpness)
    history = Trainer(solver, loss, training, checkpoint=checkpoint,
                      progress=progress).fit(splits.train, splits.validation)
    return solver, {"best_epoch": history.best_epoch, "epochs": training.epochs,
                    "n_train": n_train, "best_validation_loss": history.best_validation_loss,
                    "loss": loss.kind, "sharpness": sharpness, "cg_iterations": cg_iterations}


def spectral_shifted_sets(settings, model: LearnedSolver, count: int = 128) -> list[ShiftedSet]:
    """The shifted sets of an AutoSpec engine (``metasolve reproduce autospec-linear --shift
    ood``, the same for autospec-invsqrt): held-out spectra of its training family, spectra with
    condition numbers above (1e6 to 1e8) and below (2 to 10) the training range, and the
    experiment's transfer operators (``settings.transfer``, ``settings.rhs_per_operator``
    right-hand sides each), all at the engine's degree (fixed budget)."""
    config = model.family.config()
    options = {"fixed_iterations": model.metasolver.degree, "rtol": 0.0,
               "divergence_factor": 1e300}
    seed = settings.seed
    sets = [ShiftedSet("none", model.family.sample(count, seed=seed + 101), options)]
    for label, low, high in (("kappa 1e6 to 1e8", 1e6, 1e8), ("kappa 2 to 10", 2.0, 10.0)):
        family = SpectrumFamily(**{**config, "kappa_min": low, "kappa_max": high})
        sets.append(ShiftedSet(label, family.sample(count, seed=seed + 102), options))
    for name, tasks, _ in evaluation_sets(model.family, settings.transfer, 1,
                                          settings.rhs_per_operator, seed)[1:]:
        sets.append(ShiftedSet(name, tasks, options))
    return sets
