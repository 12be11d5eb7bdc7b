"""The AutoSpec evaluation protocol (AutoSpec paper, sec. 5): the transfer operators with their
exact spectral references, the evaluation sets (held-out synthetic spectra, then each transfer
operator with its own probe), and the classical polynomial methods a learned engine is compared
with at equal products (Richardson with the probe's step, Chebyshev on the probe's interval or on
the exact one, CG; Chebyshev interpolants and Lanczos for ``A^{-1/2} b``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ..learned.autospec import split_probe
from ..polynomials import chebyshev_coefficients_from_nodes, chebyshev_nodes
from ..probes import lanczos_function, lanczos_probe
from ..problems import LinearSystem
from ..solvers import Chebyshev, ChebyshevSeries, ConjugateGradient, PolynomialRecurrence, run
from ..tasks import SpectrumFamily, TaskBatch, make_splits, operators
from ..tasks.operators import sparse_system

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
# Operators of the transfer set's kinds at other sizes, parameters and seeds, held out from it:
# what a learned preconditioner's condition limit is calibrated on, so that the transfer set
# stays a test (metasolve.learned.autospec, "Where the engine is trusted").
HELD_OUT = (
    Operator("poisson2d-100", "poisson2d", {"m": 100}),
    Operator("poisson2d-200", "poisson2d", {"m": 200}),
    Operator("poisson3d-20", "poisson3d", {"m": 20}),
    Operator("poisson3d-30", "poisson3d", {"m": 30}),
    Operator("anisotropic2d-150-0.1", "anisotropic2d", {"m": 150, "epsilon": 0.1}),
    Operator("anisotropic2d-150-0.001", "anisotropic2d", {"m": 150, "epsilon": 1e-3}),
    Operator("elasticity-12x3x3", "elasticity", {"cells": (12, 3, 3)}),
    Operator("random-spd-2000-seed3", "random_spd", {"n": 2000, "seed": 3}),
    Operator("random-spd-4000-seed1", "random_spd", {"n": 4000, "seed": 1}),
    Operator("random-spd-8000-seed4", "random_spd", {"n": 8000, "seed": 4}),
)
HELD_OUT_SMOKE = (
    Operator("poisson3d-8", "poisson3d", {"m": 8}),
    Operator("random-spd-300-seed1", "random_spd", {"n": 300, "seed": 1}),
)


def grid_eigenvalues(operator: Operator) -> tuple[list[int], np.ndarray] | None:
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
    grid = grid_eigenvalues(operator)
    if grid is not None:
        return float(grid[1].min()), float(grid[1].max())
    values = np.linalg.eigvalsh(matrix.toarray())
    return float(values[0]), float(values[-1])


def exact_inverse_sqrt(operator: Operator, matrix: sp.csr_matrix,
                       rhs: torch.Tensor) -> torch.Tensor:
    """``A^{-1/2} b`` for each row of ``rhs`` to round-off: by the orthonormal sine transform
    that diagonalizes a grid Laplacian (DST-I on every axis), or a dense eigendecomposition."""
    from scipy.fft import dstn

    grid = grid_eigenvalues(operator)
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


def held_out_sets(family: SpectrumFamily, held_out, rhs_per_operator: int
                  ) -> list[tuple[str, TaskBatch]]:
    """``(name, tasks)`` for each held-out operator (:data:`HELD_OUT`), ``rhs_per_operator``
    random right-hand sides each and ``family``'s probe, on seeds of their own (100 + i for the
    right-hand sides, 200 + i for the probe)."""
    sets = []
    for i, operator in enumerate(held_out):
        system = sparse_system(operator.matrix(), rhs_per_operator, seed=100 + i)
        features = family.features_of(system.matvec, system.size, rhs_per_operator, 200 + i)
        sets.append((operator.name, TaskBatch(system, features)))
    return sets


def relative_residual(problem, x) -> torch.Tensor:
    """``(B,)`` ``||b - A x|| / ||b||``."""
    return (torch.linalg.vector_norm(problem.residual(x), dim=1)
            / torch.linalg.vector_norm(problem.rhs, dim=1))


def relative_error(problem, x) -> torch.Tensor:
    """``(B,)`` ``||x - x*|| / ||x*||`` against the problem's stored solution."""
    return (torch.linalg.vector_norm(x - problem.solution, dim=1)
            / torch.linalg.vector_norm(problem.solution, dim=1))


def probe_baseline_params(features: torch.Tensor, probe_steps: int,
                          steps: int) -> dict[str, dict]:
    """Parameters of the probe-based baselines: Richardson with the step ``2 / (a + b)`` and
    Chebyshev on the probe's interval ``[a, b]``."""
    lower, upper = split_probe(features, probe_steps).interval()
    step = 2 / (lower + upper)
    richardson = {"initial": step,
                  "momentum": torch.zeros(features.shape[0], steps, dtype=step.dtype),
                  "step": step.unsqueeze(1).expand(-1, steps).contiguous()}
    return {"richardson": richardson, "chebyshev-estimated": {"lower": lower, "upper": upper}}


def linear_baselines(tasks: TaskBatch, extremes: torch.Tensor, degree: int,
                     probe_steps: int) -> dict[str, torch.Tensor]:
    """Per-instance relative residuals of every classical method at equal products: ``degree``
    steps after the ``probe_steps``-step probe, or ``degree + probe_steps`` without it."""
    k, s = degree, probe_steps
    params = probe_baseline_params(tasks.features, s, k)
    exact = {"lower": extremes[:, 0].contiguous(), "upper": extremes[:, 1].contiguous()}
    runs = {"richardson": (PolynomialRecurrence(), params["richardson"], k),
            "chebyshev-estimated": (Chebyshev(), params["chebyshev-estimated"], k),
            "chebyshev-exact-K": (Chebyshev(), exact, k),
            "chebyshev-exact-budget": (Chebyshev(), exact, k + s),
            "cg-budget": (ConjugateGradient(), {}, k + s)}
    out = {}
    for name, (method, theta, steps) in runs.items():
        solution = run(method, tasks.problem, params=theta, fixed_iterations=steps, rtol=0.0,
                       divergence_factor=1e300)
        out[name] = relative_residual(tasks.problem, solution.x)
    return out


def inverse_sqrt_interpolant(lower: torch.Tensor, upper: torch.Tensor, degree: int) -> dict:
    """Parameters of :class:`~metasolve.solvers.ChebyshevSeries` for the Chebyshev
    interpolant of ``t^{-1/2}`` on ``[lower, upper]``."""
    nodes = chebyshev_nodes(lower, upper, degree)
    return {"coefficients": chebyshev_coefficients_from_nodes(nodes.rsqrt()), "lower": lower,
            "upper": upper}


def inverse_sqrt_baselines(tasks: TaskBatch, extremes: torch.Tensor, degree: int, block: int,
                           probe_matvecs: int, seed: int) -> dict[str, torch.Tensor]:
    """Per-instance relative errors of the classical approximations of ``A^{-1/2} b`` of
    ``degree``: Chebyshev interpolants on the subspace probe's interval (``block`` vectors), on
    a Lanczos probe's interval of ``probe_matvecs`` products, on the exact interval, and
    Lanczos itself."""
    problem = tasks.problem
    lower, upper = split_probe(tasks.features, block).interval()
    lanczos = lanczos_probe(problem.matvec, problem.size, probe_matvecs, problem.batch_size,
                            seed=seed).interval()
    out = {}
    for name, (low, high) in (("chebyshev-estimated", (lower, upper)),
                              ("chebyshev-lanczos", lanczos),
                              ("chebyshev-exact", (extremes[:, 0].contiguous(),
                                                   extremes[:, 1].contiguous()))):
        solution = run(ChebyshevSeries(), problem,
                       params=inverse_sqrt_interpolant(low, high, degree),
                       fixed_iterations=degree, rtol=0.0, monitor="error",
                       divergence_factor=1e300)
        out[name] = relative_error(problem, solution.x)
    out["lanczos"] = relative_error(problem, lanczos_function(problem.matvec, problem.rhs,
                                                              degree, torch.rsqrt))
    return out
