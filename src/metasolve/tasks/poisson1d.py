"""1D Poisson equation ``-u'' = f`` on (0, 1), ``u(0) = u(1) = 0``, with random sources
(GBMS paper, sec. 2.2.1 and Appendix C.1).

Finite differences on ``N`` interior points, ``h = 1 / (N + 1)``: ``A = tridiag(-1, 2, -1) / h^2``
with eigenpairs ``mu_i = 4 sin^2(i pi h / 2) / h^2`` and ``v_i(x_j) = sqrt(2h) sin(i pi x_j)``
(orthonormal). A task is ``f = sum_i c_i mu_i v_i``, so its exact solution is ``u = sum_i c_i v_i``.

* ``P1`` (eq. 43, hard for Jacobi): ``c_i ~ N(0, s_i^2)`` with ``s_i = |N + 1 - 2i| / (N - 1)``,
  weight on the lowest and highest modes, which Jacobi damps slowest.
* ``P2`` (eq. 44, easy): ``s_i = 1 - |N + 1 - 2i| / (N - 1)``, weight on the middle modes.
* The mixture ``p P1 + (1 - p) P2``.

The paper writes ``N(0, s_i)`` without saying whether ``s_i`` is a variance or a standard
deviation. We read it as the standard deviation: the resulting zero-guess Jacobi iteration counts
(the ``Psi_base`` row of Table 3) match the paper within one iteration, while reading it as a
variance gives about 11 more iterations at every tolerance (checked with
``metasolve reproduce poisson-jacobi``).

Features for a meta-solver: ``h^2 f``, the right-hand side of the unscaled stencil
``tridiag(-1, 2, -1) u = h^2 f``. It carries the same information as ``f`` (the paper's input) at
unit scale, which Adam with the paper's learning rate needs.
"""

from __future__ import annotations

import math

import torch

from ..problems import LinearSystem
from ..validation import check_count, check_nonnegative
from .base import TaskBatch, TaskFamily, register_family


def poisson1d_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """``tridiag(-1, 2, -1) / h^2``, dense ``(n, n)``."""
    h = 1.0 / (n + 1)
    main = torch.full((n,), 2.0, dtype=dtype)
    off = torch.full((n - 1,), -1.0, dtype=dtype)
    return (torch.diag(main) + torch.diag(off, 1) + torch.diag(off, -1)) / h**2


def sine_basis(n: int, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal eigenvectors of the 1D Dirichlet Laplacian as columns, ``(n, n)``."""
    h = 1.0 / (n + 1)
    x = torch.arange(1, n + 1, dtype=dtype) * h
    modes = torch.arange(1, n + 1, dtype=dtype)
    return math.sqrt(2 * h) * torch.sin(math.pi * x[:, None] * modes[None, :])


def poisson1d_eigenvalues(n: int, dtype=torch.float64) -> torch.Tensor:
    h = 1.0 / (n + 1)
    modes = torch.arange(1, n + 1, dtype=dtype)
    return 4.0 * torch.sin(modes * math.pi * h / 2) ** 2 / h**2


@register_family
class Poisson1DFamily(TaskFamily):
    """Random-source 1D Poisson problems from the mixture ``p P1 + (1 - p) P2``.

    Args:
        n: interior grid points ``N`` (the paper uses 16).
        p: probability of the hard distribution ``P1``.

    Example:
        >>> fam = Poisson1DFamily(n=16, p=0.01)
        >>> tasks = fam.sample(8, seed=0)
        >>> tasks.problem.rhs.shape, tasks.features.shape
        (torch.Size([8, 16]), torch.Size([8, 16]))
    """

    name = "poisson1d"

    def __init__(self, n: int = 16, p: float = 0.0):
        self.n = check_count("n", n, minimum=2)
        self.p = check_nonnegative("p", p)
        if self.p > 1:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.matrix = poisson1d_matrix(self.n)
        self.basis = sine_basis(self.n)
        self.eigenvalues = poisson1d_eigenvalues(self.n)

    def config(self):
        return {"n": self.n, "p": self.p}

    @classmethod
    def declared_size(cls, config):
        n = check_count("n", config.get("n", 16), minimum=2)
        return 2 * n * n  # the dense matrix and the sine basis, built in __init__

    @property
    def feature_dim(self) -> int:
        return self.n

    def mode_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Standard deviations ``s_i`` of the coefficients under ``P1`` and ``P2``."""
        i = torch.arange(1, self.n + 1, dtype=torch.float64)
        s1 = torch.abs(self.n + 1 - 2 * i) / (self.n - 1)
        return s1, 1.0 - s1

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        s1, s2 = self.mode_scales()
        hard = torch.rand(n, generator=generator, dtype=torch.float64) < self.p
        scale = torch.where(hard[:, None], s1, s2)
        coeffs = torch.randn(n, self.n, generator=generator, dtype=torch.float64) * scale
        solution = coeffs @ self.basis.T
        rhs = (coeffs * self.eigenvalues) @ self.basis.T
        h2 = 1.0 / (self.n + 1) ** 2
        return TaskBatch(LinearSystem(self.matrix, rhs, solution), rhs * h2)
