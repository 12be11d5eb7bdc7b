"""Linear systems over a small fixed set of matrices with random right-hand sides: the R2N2
paper's linear test problems (sec. 4.1, supplement SM2.1).

A task is ``(A_i, b)`` with ``A_i`` drawn uniformly from the family's matrices and
``b = b_mean + U(-halfwidth, halfwidth)^m``. :func:`r2n2_matrices` generates the paper's matrix
collection from its recipes (``A = At^T At + diag(lambda)``, shifted diagonals, random symmetric
products, noisier bases), since the printed values of ``A_1``-``A_3`` did not survive extraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..problems import LinearSystem
from ..validation import check_nonnegative, check_tensor
from .base import TaskBatch, TaskFamily, register_family

#: The mean right-hand side printed in SM2.1 (``b~ ~ N(0, 5 I)``; it is 5 times NumPy's first
#: five standard normals from seed 42).
PAPER_RHS_MEAN = (2.483570, -0.691321, 3.238442, 7.615149, -1.170766)
#: The spectrum boost ``lambda`` of SM2.1 and the diagonal shift ``Delta lambda`` of A_4-A_7.
PAPER_SPECTRUM = (1.0, 0.75, 0.5, 0.1, 0.1)
PAPER_SHIFT = (0.5, 0.4, 0.3, 0.2, 0.1)


def r2n2_matrices(seed: int = 0) -> dict[str, torch.Tensor]:
    """The R2N2 paper's 5 x 5 matrices ``A_1``-``A_19`` (SM2.1), generated from its recipes
    (which fix the size: ``lambda`` and ``Delta lambda`` have five entries each).

    * ``A_1``-``A_3`` (training): ``At^T At + diag(lambda)``, ``At`` entries ``N(0, 0.1)``
      (read as variance 0.1: the printed ``A_1`` has diagonal excess ~0.3-0.6, which a standard
      deviation of 0.1 cannot give);
    * ``A_4``-``A_7``: ``A_1 + s diag(Delta lambda)`` with ``s = -1, 0.5, 1.3, 2.5``;
    * ``A_8``-``A_11``: ``At At^T`` with ``At`` entries ``U(0, sigma)``, ``sigma ~ U(0, 5)``;
    * ``A_12``-``A_19``: as ``A_1`` with variance ``sigma_l`` in ``{0.3, 0.5, 0.7, 1}``, two each.
    """
    dim = len(PAPER_SPECTRUM)
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.diag(torch.tensor(PAPER_SPECTRUM, dtype=torch.float64))

    def boosted(variance: float) -> torch.Tensor:
        at = torch.randn(dim, dim, generator=g, dtype=torch.float64) * variance ** 0.5
        return at.T @ at + spectrum

    out = {f"A{i}": boosted(0.1) for i in (1, 2, 3)}
    shift = torch.diag(torch.tensor(PAPER_SHIFT, dtype=torch.float64))
    for i, s in zip((4, 5, 6, 7), (-1.0, 0.5, 1.3, 2.5), strict=True):
        out[f"A{i}"] = out["A1"] + s * shift
    for i in (8, 9, 10, 11):
        sigma = 5.0 * float(torch.rand(1, generator=g, dtype=torch.float64))
        at = sigma * torch.rand(dim, dim, generator=g, dtype=torch.float64)
        out[f"A{i}"] = at @ at.T
    for i, variance in zip(range(12, 20), (0.3, 0.3, 0.5, 0.5, 0.7, 0.7, 1.0, 1.0), strict=True):
        out[f"A{i}"] = boosted(variance)
    return out


@register_family
class MatrixSetFamily(TaskFamily):
    """``A x = b`` with ``A`` from a fixed set and ``b`` uniform around a mean.

    Args:
        matrices: ``(K, m, m)`` (or nested lists), the matrices drawn from.
        rhs_mean: ``(m,)`` the mean right-hand side ``b~``.
        rhs_halfwidth: ``b - b~`` is uniform on ``[-halfwidth, halfwidth]^m`` (SM2.1: 1).

    Features are the right-hand sides (a constant meta-solver such as an R2N2 ignores them).

    Example:
        >>> fam = MatrixSetFamily(r2n2_matrices()["A1"][None], PAPER_RHS_MEAN)
        >>> fam.sample(4, seed=0).problem.matrix.shape
        torch.Size([4, 5, 5])
    """

    name = "matrix-set"

    def __init__(self, matrices, rhs_mean: Sequence[float], rhs_halfwidth: float = 1.0):
        matrices = torch.as_tensor(matrices, dtype=torch.float64)
        check_tensor("matrices", matrices, ndim=3)
        k, m, m2 = matrices.shape
        if m != m2 or k < 1:
            raise ValueError(f"matrices must be (K, m, m) with K >= 1, got {tuple(matrices.shape)}")
        self.matrices = matrices
        self.rhs_mean = check_tensor("rhs_mean", torch.as_tensor(rhs_mean, dtype=torch.float64),
                                     shape=(m,))
        self.rhs_halfwidth = check_nonnegative("rhs_halfwidth", rhs_halfwidth)

    def config(self):
        return {"matrices": self.matrices.tolist(), "rhs_mean": self.rhs_mean.tolist(),
                "rhs_halfwidth": self.rhs_halfwidth}

    @classmethod
    def declared_size(cls, config):
        # The matrices are written out in the config itself (bounded by the file), as (K, m, m).
        matrices = config.get("matrices")
        if not (isinstance(matrices, list) and matrices and isinstance(matrices[0], list)):
            raise TypeError("matrices must be a (K, m, m) nested list")
        return len(matrices) * len(matrices[0]) ** 2

    @property
    def feature_dim(self) -> int:
        return int(self.matrices.shape[1])

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        which = torch.randint(0, self.matrices.shape[0], (n,), generator=generator)
        noise = torch.rand(n, self.feature_dim, generator=generator, dtype=torch.float64)
        rhs = self.rhs_mean + self.rhs_halfwidth * (2 * noise - 1)
        matrices = self.matrices[which]
        solution = torch.linalg.solve(matrices, rhs.unsqueeze(-1)).squeeze(-1)
        return TaskBatch(LinearSystem(matrices, rhs, solution), rhs)
