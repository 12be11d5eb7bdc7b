"""What the three AutoSpec experiments share: the transfer operators with their exact spectral
bounds, the probe of a transfer system, and training an engine on synthetic spectra."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..learned import AutoSpecEngine, LearnedSolver
from ..solvers import ChebyshevExpansion, PolynomialRecurrence
from ..tasks import SpectrumFamily, TaskBatch, make_splits, operators, probe_features
from ..training import LogResidualLoss, Trainer, TrainingConfig


@dataclass(frozen=True)
class Operator:
    """A transfer operator: how to build it, and its exact extreme eigenvalues."""

    name: str
    builder: str
    args: dict = field(default_factory=dict)

    def matrix(self) -> sp.csr_matrix:
        return getattr(operators, self.builder)(**self.args)


# The transfer set of the issue: 2D and 3D Poisson, anisotropic diffusion, a scikit-fem
# elasticity matrix, random sparse SPD; the first has more than 1e5 unknowns.
TRANSFER = (
    Operator("poisson2d-320", "poisson2d", {"m": 320}),
    Operator("poisson3d-40", "poisson3d", {"m": 40}),
    Operator("anisotropic2d-200", "anisotropic2d", {"m": 200, "epsilon": 1e-2}),
    Operator("elasticity-24x4x4", "elasticity", {"cells": (24, 4, 4)}),
    Operator("random-spd-4000", "random_spd", {"n": 4000}),
)
TRANSFER_SMOKE = (
    Operator("poisson2d-16", "poisson2d", {"m": 16}),
    Operator("random-spd-200", "random_spd", {"n": 200}),
)


def _tensor_laplacian_extremes(m: int, scales: list[float]) -> tuple[float, float]:
    angle = math.pi / (2 * (m + 1))
    low = sum(4 * s * math.sin(angle) ** 2 for s in scales)
    high = sum(4 * s * math.cos(angle) ** 2 for s in scales)
    return low, high


def exact_extremes(operator: Operator, matrix: sp.csr_matrix) -> tuple[float, float]:
    """``(lambda_min, lambda_max)``: closed form for the grid Laplacians, a dense symmetric
    eigensolver for the others (at most a few thousand unknowns)."""
    args = operator.args
    if operator.builder == "poisson2d":
        return _tensor_laplacian_extremes(args["m"], [1.0, 1.0])
    if operator.builder == "poisson3d":
        return _tensor_laplacian_extremes(args["m"], [1.0, 1.0, 1.0])
    if operator.builder == "anisotropic2d":
        return _tensor_laplacian_extremes(args["m"], [args.get("epsilon", 1e-2), 1.0])
    values = np.linalg.eigvalsh(matrix.toarray())
    return float(values[0]), float(values[-1])


def probed(system, probe_steps: int, seed: int) -> TaskBatch:
    """``system`` with the Lanczos-probe features of each instance (``probe_steps`` products)."""
    return TaskBatch(system, probe_features(system.matvec, system.size, probe_steps,
                                            system.batch_size, seed))


def make_engine_solver(family: SpectrumFamily, degree: int, paradigm: str,
                       hidden: tuple[int, ...]) -> LearnedSolver:
    engine = AutoSpecEngine(family.probe_steps, degree, paradigm, hidden=hidden)
    method = PolynomialRecurrence() if paradigm == "recurrence" else ChebyshevExpansion()
    return LearnedSolver(method, engine, family=family)


def train_engine(family: SpectrumFamily, degree: int, paradigm: str, hidden, n_train: int,
                 n_validation: int, training: TrainingConfig, seed: int, checkpoint: Path,
                 progress: bool) -> tuple[LearnedSolver, dict]:
    """Train a linear-solve engine with the log-residual loss on synthetic spectra."""
    splits = make_splits(family, n_train, n_validation, 1, seed=seed)
    torch.manual_seed(seed)
    solver = make_engine_solver(family, degree, paradigm, hidden)
    trainer = Trainer(solver, LogResidualLoss(degree), training, checkpoint=checkpoint,
                      progress=progress)
    history = trainer.fit(splits.train, splits.validation)
    return solver, {"best_epoch": history.best_epoch, "epochs": training.epochs,
                    "n_train": n_train, "best_validation_loss": history.best_validation_loss}
