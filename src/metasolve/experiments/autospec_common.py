"""What the three AutoSpec experiments share: building and training an engine on synthetic
spectra. The transfer operators, evaluation sets and classical baselines are in
:mod:`metasolve.evaluation.spectral`."""

from __future__ import annotations

from pathlib import Path

import torch

from ..learned import AutoSpecEngine, LearnedSolver
from ..solvers import ChebyshevExpansion, ChebyshevSeries, PolynomialRecurrence
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
