"""Constrained output heads: map unconstrained network outputs ``z`` to valid solver parameters.

Each head reads ``n_outputs`` columns of the last layer and returns one parameter ``theta``
per instance. Heads are data: ``config()`` rebuilds them from an artifact's JSON; tensors they hold
(a basis) are buffers saved in the safetensors file.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ..registry import Registry
from ..validation import check_count, check_counts, check_finite_number, check_tensor

HEADS = Registry("head kind", key="kind")
_register = HEADS.register


class Head(nn.Module):
    kind: ClassVar[str] = ""
    n_outputs: int
    #: Whether the head's output is mapped onto each problem (:meth:`place`) before it reaches
    #: the method: a parameter whose size the problem sets, not the network (a guess on a grid
    #: of any size).
    needs_problem: ClassVar[bool] = False

    def config(self) -> dict:
        return {}

    def place(self, theta: torch.Tensor, problem) -> torch.Tensor:
        """``theta`` as the method reads it on ``problem``; only heads with
        :attr:`needs_problem` change it."""
        return theta

    @classmethod
    def sizes(cls, config: dict) -> tuple[int, int] | None:
        """``(n_outputs, stored entries)`` of the head :meth:`config` describes, computed from
        the config alone (nothing is built), with its fields' types checked (``TypeError`` or
        ``ValueError`` otherwise). Loading an artifact reads it to bound memory before building
        anything; ``None`` means the kind does not declare its sizes."""
        return None


@_register
class IdentityHead(Head):
    """``theta = z`` with ``dim`` entries (an unconstrained vector, e.g. an initial guess)."""

    kind = "identity"

    def __init__(self, dim: int):
        super().__init__()
        self.n_outputs = check_count("dim", dim, minimum=1)

    def config(self):
        return {"dim": self.n_outputs}

    @classmethod
    def sizes(cls, config):
        return check_count("dim", config.get("dim"), minimum=1), 0

    def forward(self, z):
        return z


@_register
class IntervalHead(Head):
    """``theta = low + (high - low) sigmoid(z)``, a scalar in ``(low, high)``.

    Eq. (48) of the GBMS paper is the case ``(low, high) = (1, 2)`` for a relaxation factor.
    """

    kind = "interval"

    def __init__(self, low: float, high: float):
        super().__init__()
        low = check_finite_number("low", low)
        high = check_finite_number("high", high)
        if low >= high:
            raise ValueError(f"IntervalHead needs low < high, got ({low}, {high})")
        self.low, self.high = low, high
        self.n_outputs = 1

    def config(self):
        return {"low": self.low, "high": self.high}

    @classmethod
    def sizes(cls, config):
        check_finite_number("low", config.get("low"))
        check_finite_number("high", config.get("high"))
        return 1, 0

    def forward(self, z):
        return self.low + (self.high - self.low) * torch.sigmoid(z[:, 0])


@_register
class BoundedHead(Head):
    """``theta = bound * tanh(z)`` with ``dim`` entries, each in ``(-bound, bound)``.

    The GBMS paper's ``Psi_ini`` (eq. 47) modifies the previous time step's solution in log scale
    by ``tanh(W x)``: with ``bound = 1`` this head gives that shift (Newton-SOR's
    ``log_guess_shift``).
    """

    kind = "bounded"

    def __init__(self, dim: int, bound: float = 1.0):
        super().__init__()
        self.n_outputs = check_count("dim", dim, minimum=1)
        self.bound = check_finite_number("bound", bound)
        if self.bound <= 0:
            raise ValueError(f"bound must be > 0, got {bound}")

    def config(self):
        return {"dim": self.n_outputs, "bound": self.bound}

    @classmethod
    def sizes(cls, config):
        check_finite_number("bound", config.get("bound", 1.0))
        return check_count("dim", config.get("dim"), minimum=1), 0

    def forward(self, z):
        return self.bound * torch.tanh(z)


@_register
class PositiveHead(Head):
    """``theta = softplus(z) + minimum``, a positive scalar (a shift, a step size)."""

    kind = "positive"

    def __init__(self, minimum: float = 0.0):
        super().__init__()
        self.minimum = check_finite_number("minimum", minimum)
        self.n_outputs = 1

    def config(self):
        return {"minimum": self.minimum}

    @classmethod
    def sizes(cls, config):
        check_finite_number("minimum", config.get("minimum", 0.0))
        return 1, 0

    def forward(self, z):
        return nn.functional.softplus(z[:, 0]) + self.minimum


@_register
class BasisHead(Head):
    """``theta = basis @ z``: the network outputs coefficients in a fixed basis.

    The GBMS paper's ``Psi_nn`` (Appendix C.1) outputs the coefficients ``c_i`` of
    ``u^(0) = sum_i c_i v_i`` in the sine basis.

    Args:
        basis: ``(N, K)``, one basis vector per column.
    """

    kind = "basis"

    def __init__(self, basis: torch.Tensor | None = None, *, shape: list[int] | None = None):
        super().__init__()
        if basis is None:
            if shape is None:
                raise ValueError("BasisHead needs a basis tensor (or its shape when loading)")
            basis = torch.zeros(*shape, dtype=torch.float64)
        check_tensor("basis", basis, ndim=2)
        self.register_buffer("basis", basis.detach().to(torch.float64).clone())
        self.n_outputs = int(basis.shape[1])

    def config(self):
        return {"shape": list(self.basis.shape)}

    @classmethod
    def sizes(cls, config):
        shape = check_counts("shape", config.get("shape"), minimum=1)
        if len(shape) != 2:
            raise ValueError(f"a basis shape has two entries (N, K), got {shape}")
        return shape[1], shape[0] * shape[1]

    def forward(self, z):
        return z @ self.basis.T


@_register
class GridSineHead(Head):
    """A guess on a structured grid of any size: the network outputs the first ``modes`` sine
    coefficients per axis of a function on the unit square (cube), and the head evaluates that
    function at the interior points of the problem's grid.

    ``theta`` (the head's output, ``(B, modes^dim)``, the first axis's wavenumber fastest) holds
    the coefficients ``c_p`` of ``u(x) = sum_p c_p prod_i sin(pi p_i x_i)``; :meth:`place`
    evaluates ``u`` at ``x_i = j / (n + 1)``, ``j = 1..n``, on a problem with ``n^dim`` unknowns
    in natural order (the first axis fastest: :class:`~metasolve.GridDiffusionFamily`'s). The
    network's outputs ``z`` are scaled by the Laplacian's inverse on each mode,
    ``c_p = z_p / (pi^2 |p|^2)``, so outputs of order one give the solution of a load of order
    one, and the small high modes need no small weights. The same model thus gives a guess at
    every grid size: a continuous form of the GBMS paper's sine-basis guess (Appendix C.1,
    :class:`BasisHead`), whose basis is tied to one ``n``.

    Args:
        modes: sine modes per axis.
        dim: the grid's dimension (2: the unit square, 3: the unit cube).
    """

    kind = "grid-sine"
    needs_problem = True

    def __init__(self, modes: int, dim: int = 2):
        super().__init__()
        self.modes = check_count("modes", modes, minimum=1)
        self.dim = check_count("dim", dim, minimum=1)
        self.n_outputs = self.modes ** self.dim
        wavenumbers = torch.arange(1, self.modes + 1, dtype=torch.float64)
        squares = torch.zeros(())
        for axis in range(self.dim):  # |p|^2 with the first axis fastest
            shape = [1] * self.dim
            shape[self.dim - 1 - axis] = self.modes
            squares = squares + (wavenumbers ** 2).reshape(shape)
        self.register_buffer("inverse_eigenvalues",
                             (1.0 / (math.pi ** 2 * squares)).reshape(-1).to(torch.float64))

    def config(self):
        return {"modes": self.modes, "dim": self.dim}

    @classmethod
    def sizes(cls, config):
        modes = check_count("modes", config.get("modes"), minimum=1)
        dim = check_count("dim", config.get("dim", 2), minimum=1)
        return modes ** dim, modes ** dim

    def forward(self, z):
        return z * self.inverse_eigenvalues.to(z)

    def grid_size(self, unknowns: int) -> int:
        """``n`` of a grid with ``unknowns = n^dim`` points (``ValueError`` otherwise)."""
        n = round(unknowns ** (1.0 / self.dim))
        if n < 1 or n ** self.dim != unknowns:
            raise ValueError(f"a GridSineHead of dim {self.dim} needs a problem with n^{self.dim} "
                             f"unknowns (an n x ... x n grid), got {unknowns}")
        return n

    def place(self, theta, problem):
        n = self.grid_size(int(problem.size))
        points = torch.arange(1, n + 1, dtype=theta.dtype, device=theta.device) / (n + 1)
        wavenumbers = torch.arange(1, self.modes + 1, dtype=theta.dtype, device=theta.device)
        sines = torch.sin(math.pi * points[:, None] * wavenumbers[None, :])  # (n, modes)
        values = theta.reshape(theta.shape[0], *([self.modes] * self.dim))
        for _ in range(self.dim):
            # Contract the leading mode axis; the grid axis comes out last, so after dim
            # contractions the axes are back in their order (the first axis fastest).
            values = torch.tensordot(values, sines, dims=([1], [1]))
        return values.reshape(theta.shape[0], n ** self.dim)


def head_from_config(kind: str, config: dict) -> Head:
    return HEADS.build(kind, config)
