"""Chandrasekhar's H-equation (R2N2 paper, sec. 4.2 and supplement SM2.2; Kelley 2003).

The composite-midpoint discretisation with ``m`` nodes ``mu_i = (i - 1/2) / m``::

    f(x)_j = x_j - 1 / (1 - (A_c x)_j),   A_c[j, i] = c mu_j / (2 m (mu_j + mu_i))   (eq. 21)

for ``c`` in (0, 1). A batch may mix sizes: each instance is stored padded to the batch's
largest ``m`` with a mask, and ``f`` is zero on padded entries (so any method that only combines
``f``-values, such as the R2N2, leaves them at zero and never mixes them with the real ones).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..problems import NonlinearSystem, check_vectors
from ..validation import (
    check_count,
    check_counts,
    check_finite_number,
    check_positive,
    check_tensor,
)
from .base import TaskBatch, TaskFamily, register_family

#: SM2.2: training values of ``c``, and the two outside the training range.
TRAIN_C = (0.875, 0.905, 0.935)
EXTRAPOLATION_C = (0.85, 0.95)


def h_equation_operator(m: int, c: float, dtype=torch.float64) -> torch.Tensor:
    """``A_c`` of eq. (21), ``(m, m)``."""
    mu = (torch.arange(1, m + 1, dtype=dtype) - 0.5) / m
    return c * mu[:, None] / (2 * m * (mu[:, None] + mu[None, :]))


@dataclass(frozen=True)
class ChandrasekharSystem(NonlinearSystem):
    """A batch of discretised H-equations, padded to a common size.

    Args:
        operator: ``(B, M, M)`` the matrices ``A_c`` (zero outside each instance's ``m x m``).
        mask: ``(B, M)`` 1 on an instance's unknowns, 0 on padding.
        start: ``(B, M)`` initial guesses (zero on padding).
        c: ``(B,)`` the parameters ``c``.
    """

    operator: torch.Tensor
    mask: torch.Tensor
    start: torch.Tensor
    c: torch.Tensor

    def __post_init__(self):
        check_tensor("start", self.start, ndim=2)
        b, m = self.start.shape
        check_tensor("operator", self.operator, shape=(b, m, m))
        check_tensor("mask", self.mask, shape=(b, m))
        check_tensor("c", self.c, shape=(b,))

    @property
    def sizes(self) -> torch.Tensor:
        """``(B,)`` each instance's number of unknowns ``m``."""
        return self.mask.sum(dim=1).round().to(torch.int64)

    def function(self, y: torch.Tensor) -> torch.Tensor:
        ay = torch.bmm(self.operator, y.unsqueeze(-1)).squeeze(-1)
        return self.mask * (y - 1.0 / (1.0 - ay))

    def jacobian(self, y: torch.Tensor) -> torch.Tensor:
        """``I - diag(1 / (1 - A_c y)^2) A_c`` on the real unknowns; zero rows on padding."""
        ay = torch.bmm(self.operator, y.unsqueeze(-1)).squeeze(-1)
        eye = torch.diag_embed(self.mask)
        return eye - (self.mask / (1.0 - ay) ** 2).unsqueeze(-1) * self.operator

    def index(self, idx) -> ChandrasekharSystem:
        return ChandrasekharSystem(self.operator[idx], self.mask[idx], self.start[idx],
                                   self.c[idx])

    def check_batch(self, name: str, value: torch.Tensor) -> torch.Tensor:
        value = check_vectors(name, value, like=self.start)
        if bool((value * (1 - self.mask) != 0).any()):
            raise ValueError(f"{name} must be zero on the padded entries (mask == 0)")
        return value

    def unpadded(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Instance ``i``'s ``(A_c, x_0)`` without padding (for reference solvers)."""
        m = int(self.sizes[i])
        return self.operator[i, :m, :m], self.start[i, :m]


def _integer(value):
    # NumPy integers are integers too; bools and non-integers go on to check_count's TypeError.
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


@register_family
class ChandrasekharFamily(TaskFamily):
    """H-equations with ``m`` and ``c`` drawn from given sets and ``x_0 ~ N(mean, variance I)``.

    Args:
        sizes: the sizes ``m`` drawn from, ints >= 1.
        c_values: the parameters ``c`` drawn from, in (0, 1).
        mean, variance: ``x_0 ~ N(mean, variance I)``; ``mean`` finite, ``variance > 0``.

    SM2.2's training family: ``sizes=(10, 20)``, ``c_values=TRAIN_C``, ``x_0 ~ N(1, 0.2 I)``.
    The extrapolation sets of sec. 4.2: ``sizes=(100,)``, ``c_values=EXTRAPOLATION_C``,
    ``variance=2.0`` (10-fold) and ``mean=5.0``. Features are ``(c, m / 100)``.

    Example:
        >>> tasks = ChandrasekharFamily().sample(6, seed=0)
        >>> tasks.problem.start.shape, tasks.problem.sizes.tolist()[:3]
        (torch.Size([6, 20]), [10, 20, 20])
    """

    name = "chandrasekhar"

    def __init__(self, sizes: Sequence[int] = (10, 20), c_values: Sequence[float] = TRAIN_C,
                 mean: float = 1.0, variance: float = 0.2):
        sizes = list(sizes)
        if not sizes:
            raise ValueError("sizes must hold at least one size m, got none")
        # A size of 10.7 is a mistake, not a request for 10 unknowns: reject it.
        sizes = [check_count("sizes", _integer(m), minimum=1) for m in sizes]
        c_values = [float(c) for c in c_values]
        if not c_values or any(not 0 < c < 1 for c in c_values):
            raise ValueError(f"c_values must lie in (0, 1), got {c_values}")
        self.sizes, self.c_values = tuple(sizes), tuple(c_values)
        self.mean = check_finite_number("mean", mean)
        self.variance = check_positive("variance", variance)

    def config(self):
        return {"sizes": list(self.sizes), "c_values": list(self.c_values), "mean": self.mean,
                "variance": self.variance}

    @classmethod
    def declared_size(cls, config):
        sizes = check_counts("sizes", config.get("sizes", [10, 20]), minimum=1)
        return max(sizes, default=1) ** 2  # one instance's dense (m, m) operator

    @property
    def feature_dim(self) -> int:
        return 2

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        size_index = torch.randint(0, len(self.sizes), (n,), generator=generator)
        c_index = torch.randint(0, len(self.c_values), (n,), generator=generator)
        width = max(self.sizes)
        noise = torch.randn(n, width, generator=generator, dtype=torch.float64)
        operator = torch.zeros(n, width, width, dtype=torch.float64)
        mask = torch.zeros(n, width, dtype=torch.float64)
        c = torch.tensor([self.c_values[i] for i in c_index.tolist()], dtype=torch.float64)
        for i, (s, cv) in enumerate(zip(size_index.tolist(), c.tolist(), strict=True)):
            m = self.sizes[s]
            operator[i, :m, :m] = h_equation_operator(m, cv)
            mask[i, :m] = 1.0
        start = mask * (self.mean + self.variance ** 0.5 * noise)
        sizes = mask.sum(dim=1)
        features = torch.stack([c, sizes / 100.0], dim=1)
        return TaskBatch(ChandrasekharSystem(operator, mask, start, c), features)
