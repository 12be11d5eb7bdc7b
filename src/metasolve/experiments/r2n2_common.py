"""What the R2N2 experiments share: the trained object (an R2N2 whose weights are the constant
meta-solver's ``theta``), and its training protocol. Figure and record helpers that any
experiment may use live in :mod:`metasolve.experiments.common`.

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

import torch

from ..learned import R2N2, ConstantMetaSolver, IdentityHead, LearnedSolver
from ..tasks.base import Splits, TaskFamily
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


def r2n2_solver(family: TaskFamily, layers: int, *, stage_init=None, output_init=None,
                seed: int = 0, output_steps: int = 1, difference: str = "none") -> LearnedSolver:
    """An R2N2 whose weights are trained as a :class:`ConstantMetaSolver` (one ``theta`` for the
    whole family, as in the paper). Weights not given start at ``N(0, 0.1^2)`` from ``seed``."""
    method = R2N2(layers=layers, output_steps=output_steps, difference=difference)
    generator = torch.Generator().manual_seed(seed)
    n_stage, n_output = method.n_stage_weights, method.n_output_weights
    if stage_init is None:
        stage_init = 0.1 * torch.randn(n_stage, generator=generator, dtype=torch.float64)
    if output_init is None:
        output_init = 0.1 * torch.randn(n_output, generator=generator, dtype=torch.float64)
    heads = {"output_weights": IdentityHead(n_output)}
    init = {"output_weights": output_init}
    if n_stage:
        heads = {"stage_weights": IdentityHead(n_stage), **heads}
        init["stage_weights"] = stage_init
    metasolver = ConstantMetaSolver(heads, init=init)
    return LearnedSolver(method, metasolver, family=family)


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


def weights_of(solver: LearnedSolver) -> dict[str, list[float]]:
    """The trained R2N2 weights (the same for every task)."""
    features = torch.zeros(1, solver.metasolver.in_features or 1, dtype=torch.float64)
    with torch.no_grad():
        params = solver.params(features)
    return {key: value[0].tolist() for key, value in params.items()}


def trained_method(solver: LearnedSolver) -> R2N2:
    """The trained R2N2 as a plain method with constant weights (for analysis and reuse)."""
    weights = weights_of(solver)
    method = solver.method
    return R2N2(layers=method.layers, output_steps=method.output_steps,
                difference=method.difference, epsilon=method.epsilon,
                stage_weights=weights.get("stage_weights", []),
                output_weights=weights["output_weights"])
