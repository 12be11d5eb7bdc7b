"""What the R2N2 experiments share: their scale settings and training protocol. The trained
object (:func:`~metasolve.learned.r2n2_solver`, an R2N2 whose weights are a constant
meta-solver's ``theta``) and its frozen method live in :mod:`metasolve.learned.r2n2`.

Training protocol (R2N2 paper, sec. 3.4, scaled to 2 CPU cores): full-batch Adam (the paper:
25,000 epochs at learning rate 1e-3; ours: ``Settings.training``, a larger rate and fewer
epochs, cut by 1/2 when the validation loss stalls), then full-batch L-BFGS with a strong-Wolfe
line search (the paper's optional fine-tuning; kept only if it lowers the validation loss). An
R2N2 has ``n(n-1)/2 + n`` weights, so both are cheap; the model with the best validation loss is
kept. The paper splits its data 70/30 into training and test sets; we also hold out a
validation set for model selection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..learned import LearnedSolver
from ..tasks.base import Splits
from ..training import Loss, Trainer, TrainingConfig


@dataclass(frozen=True)
class Settings:
    """One scale of an R2N2 experiment."""

    train: int
    validation: int
    test: int
    training: TrainingConfig
    lbfgs_iterations: int = 300
    seed: int = 0
    extra: dict = field(default_factory=dict)


def full_batch_adam(epochs: int, batch_size: int, lr: float) -> TrainingConfig:
    """Adam on the whole training set per step, the rate halved after 200 stalled epochs."""
    return TrainingConfig(epochs=epochs, batch_size=batch_size, lr=lr, betas=(0.9, 0.999),
                          plateau_patience=200, plateau_factor=0.5)


def train_r2n2(solver: LearnedSolver, loss: Loss, splits: Splits, settings: Settings,
               checkpoint: Path, progress: bool = False) -> dict:
    """Adam (resumable from ``checkpoint``), then L-BFGS; returns what the records report."""
    trainer = Trainer(solver, loss, settings.training, checkpoint=checkpoint, progress=progress)
    history = trainer.fit(splits.train, splits.validation)
    kept = trainer.refine_lbfgs(splits.train, splits.validation, settings.lbfgs_iterations) \
        if settings.lbfgs_iterations else False
    return {"best_epoch": history.best_epoch, "lbfgs_kept": kept,
            "validation_loss": trainer.history.best_validation_loss,
            "epochs": settings.training.epochs, "lr": settings.training.lr,
            "train_tasks": len(splits.train), "test_tasks": len(splits.test)}
