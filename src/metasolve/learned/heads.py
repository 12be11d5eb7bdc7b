"""Constrained output heads: map unconstrained network outputs ``z`` to valid solver parameters.

Each head reads ``n_outputs`` columns of the last layer and returns one parameter ``theta``
per instance. Heads are data: ``config()`` rebuilds them from an artifact's JSON; tensors they hold
(a basis) are buffers saved in the safetensors file.
"""

from __future__ import annotations

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

    def config(self) -> dict:
        return {}

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


def head_from_config(kind: str, config: dict) -> Head:
    return HEADS.build(kind, config)
