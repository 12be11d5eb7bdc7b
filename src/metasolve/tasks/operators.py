"""Large sparse symmetric positive definite test operators, for applying a method trained
elsewhere (the AutoSpec issue's transfer set): each builder returns a SciPy CSR matrix, and
:func:`sparse_system` wraps one with a batch of right-hand sides as a
:class:`~metasolve.problems.LinearSystem` (a torch sparse CSR matrix shared by the batch).

* ``poisson2d(m)``: the 5-point Laplacian on an ``m x m`` grid (Dirichlet), ``N = m^2``;
  eigenvalues ``4 (sin^2(i pi / (2 (m + 1))) + sin^2(j pi / (2 (m + 1))))``.
* ``poisson3d(m)``: the 7-point Laplacian on an ``m^3`` grid, ``N = m^3``.
* ``anisotropic2d(m, epsilon)``: ``-epsilon u_xx - u_yy`` (5-point), strong coupling in ``y``.
* ``elasticity(cells)``: the clamped elastic beam of
  :class:`~metasolve.tasks.elasticity.ElasticBeamFamily` (scikit-fem, trilinear hexahedra),
  clamped unknowns eliminated, width 0.2 and unit material constants.
* ``random_spd(n, per_row, shift, seed)``: ``R^T R + shift * lambda_max I`` with a random sparse
  ``R`` (``per_row`` entries per row), a matrix without grid structure.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from ..problems import LinearSystem
from ..validation import check_count, check_positive
from .elasticity import ElasticBeamFamily


def _laplacian1d(m: int, scale: float = 1.0) -> sp.csr_matrix:
    return scale * sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m), dtype=np.float64)


def poisson2d(m: int) -> sp.csr_matrix:
    m = check_count("m", m, minimum=2)
    t, eye = _laplacian1d(m), sp.eye(m)
    return (sp.kron(eye, t) + sp.kron(t, eye)).tocsr()


def poisson3d(m: int) -> sp.csr_matrix:
    m = check_count("m", m, minimum=2)
    t, eye = _laplacian1d(m), sp.eye(m)
    return (sp.kron(sp.kron(eye, eye), t) + sp.kron(sp.kron(eye, t), eye)
            + sp.kron(sp.kron(t, eye), eye)).tocsr()


def anisotropic2d(m: int, epsilon: float = 1e-2) -> sp.csr_matrix:
    m = check_count("m", m, minimum=2)
    epsilon = check_positive("epsilon", epsilon)
    eye = sp.eye(m)
    return (sp.kron(eye, _laplacian1d(m, epsilon)) + sp.kron(_laplacian1d(m), eye)).tocsr()


def elasticity(cells: tuple[int, int, int] = (24, 4, 4)) -> sp.csr_matrix:
    family = ElasticBeamFamily(cells=cells, clamped="eliminate")
    matrix = family.matrices(torch.tensor([[0.2, 1.0, 1.0, 1.0]], dtype=torch.float64))[0]
    return sp.csr_matrix(matrix.numpy())


def arpack_start(n: int, seed: int = 0) -> np.ndarray:
    """A seeded start vector for ARPACK (``eigsh(..., v0=...)``): without one ARPACK draws its
    own random start, and the eigenvalues it returns then differ from run to run in the last
    digits (docs/architecture.md, convention 13)."""
    return np.random.default_rng(seed).standard_normal(n)


def random_spd(n: int, per_row: int = 4, shift: float = 1e-4, seed: int = 0) -> sp.csr_matrix:
    n = check_count("n", n, minimum=2)
    per_row = check_count("per_row", per_row, minimum=1)
    shift = check_positive("shift", shift)
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n), per_row)
    cols = rng.integers(0, n, size=n * per_row)
    factor = sp.csr_matrix((rng.standard_normal(n * per_row), (rows, cols)), shape=(n, n))
    gram = (factor.T @ factor).tocsr()
    top = sp.linalg.eigsh(gram, k=1, which="LA", v0=arpack_start(n, seed),
                          return_eigenvectors=False)[0]
    return (gram + shift * top * sp.eye(n)).tocsr()


def to_torch_csr(matrix: sp.spmatrix) -> torch.Tensor:
    """A SciPy sparse matrix as a torch sparse CSR tensor (float64)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    matrix.sort_indices()
    with warnings.catch_warnings():  # PyTorch calls its CSR support "beta" at every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                       torch.from_numpy(matrix.indices.astype(np.int64)),
                                       torch.from_numpy(matrix.data), size=matrix.shape,
                                       check_invariants=True)


def sparse_system(matrix: sp.spmatrix, batch: int, seed: int = 0) -> LinearSystem:
    """``matrix`` shared by ``batch`` standard normal right-hand sides drawn from ``seed``."""
    batch = check_count("batch", batch, minimum=1)
    rhs = torch.randn(batch, matrix.shape[0], generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)
    return LinearSystem(to_torch_csr(matrix), rhs)
