"""What the three AutoSpec experiments share: the transfer operators with their exact spectral
bounds, the probe of a transfer system, and training an engine on synthetic spectra."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..learned import AutoSpecEngine, LearnedSolver
from ..problems import LinearSystem
from ..solvers import ChebyshevExpansion, ChebyshevSeries, PolynomialRecurrence
from ..tasks import SpectrumFamily, TaskBatch, make_splits, operators
from ..tasks.operators import sparse_system
from ..training import LogResidualLoss, RelativeLogResidualLoss, Trainer, TrainingConfig

SYNTHETIC = "synthetic (held out)"


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


def _grid_eigenvalues(operator: Operator) -> tuple[list[int], np.ndarray] | None:
    """Grid shape and eigenvalues (on that grid) of a tensor-product Laplacian, else None."""
    args = operator.args
    if operator.builder not in ("poisson2d", "poisson3d", "anisotropic2d"):
        return None
    m = args["m"]
    one = 4 * np.sin(np.arange(1, m + 1) * np.pi / (2 * (m + 1))) ** 2
    if operator.builder == "poisson2d":
        return [m, m], one[:, None] + one[None, :]
    if operator.builder == "anisotropic2d":  # kron(I, eps T) + kron(T, I): eps on the fast axis
        return [m, m], one[:, None] + args.get("epsilon", 1e-2) * one[None, :]
    return [m, m, m], one[:, None, None] + one[None, :, None] + one[None, None, :]


def exact_extremes(operator: Operator, matrix: sp.csr_matrix) -> tuple[float, float]:
    """``(lambda_min, lambda_max)``: from the closed-form spectrum of a grid Laplacian, else a
    dense symmetric eigensolver (at most a few thousand unknowns)."""
    grid = _grid_eigenvalues(operator)
    if grid is not None:
        return float(grid[1].min()), float(grid[1].max())
    values = np.linalg.eigvalsh(matrix.toarray())
    return float(values[0]), float(values[-1])


def exact_inverse_sqrt(operator: Operator, matrix: sp.csr_matrix,
                       rhs: torch.Tensor) -> torch.Tensor:
    """``A^{-1/2} b`` for each row of ``rhs`` to round-off: by the orthonormal sine transform
    that diagonalizes a grid Laplacian (DST-I on every axis), or a dense eigendecomposition."""
    from scipy.fft import dstn

    grid = _grid_eigenvalues(operator)
    if grid is None:
        values, vectors = np.linalg.eigh(matrix.toarray())
        return torch.tensor((vectors @ ((vectors.T @ rhs.numpy().T) / np.sqrt(values)[:, None])).T,
                            dtype=torch.float64)
    out = []
    for b in rhs.numpy():
        shape, eig = grid
        coefficients = dstn(b.reshape(shape), type=1, norm="ortho")
        out.append(dstn(coefficients / np.sqrt(eig), type=1, norm="ortho").reshape(-1))
    return torch.tensor(np.stack(out), dtype=torch.float64)


def evaluation_sets(family: SpectrumFamily, transfer, n_test: int, rhs_per_operator: int,
                    seed: int) -> list[tuple[str, TaskBatch, torch.Tensor]]:
    """``(name, tasks, exact extremes (B, 2))``: held-out synthetic spectra of ``family``, then
    each transfer operator with ``rhs_per_operator`` right-hand sides and ``family``'s probe.
    For the ``"inverse-sqrt"`` family the systems carry ``A^{-1/2} b`` as their solution."""
    test = make_splits(family, 1, 1, n_test, seed=seed).test
    eig = test.problem.eigenvalues
    sets = [(SYNTHETIC, test, torch.stack([eig.min(1).values, eig.max(1).values], dim=1))]
    for i, operator in enumerate(transfer):
        matrix = operator.matrix()
        system = sparse_system(matrix, rhs_per_operator, seed=seed + 1 + i)
        if family.function == "inverse-sqrt":
            system = LinearSystem(system.matrix, system.rhs,
                                  exact_inverse_sqrt(operator, matrix, system.rhs))
        extremes = torch.tensor(exact_extremes(operator, matrix), dtype=torch.float64)
        features = family.features_of(system.matvec, system.size, system.batch_size, seed + i)
        sets.append((operator.name, TaskBatch(system, features),
                     extremes.expand(system.batch_size, 2)))
    return sets


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
