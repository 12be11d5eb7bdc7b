"""Euclidean projections onto the cones of SCS's standard form (neural SCS paper, sec. 3.1-3.2).

``K = {0}^z x R_+^l x SOC(q_1) x ... x SOC(q_k)`` (:class:`~metasolve.problems.ConeSpec`), its
dual ``K* = R^z x R_+^l x SOC(q_1) x ...`` (the second-order cone is self-dual). Every function
is batched over a leading dimension and differentiable almost everywhere (autograd through
``where``/``clamp``), which is what unrolled training through SCS needs (the paper uses the
projection derivatives of Ali et al. 2017 and Busseti et al. 2019, which these coincide with).
Cones of equal size that follow each other are projected together, so the 100 three-dimensional
cones of the Kalman problem cost one vectorised call.
"""

from __future__ import annotations

import torch

from .kernels import euclidean_norm
from .problems import ConeSpec


def project_soc(block: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Project vectors ``(t, z)`` along ``dim`` of ``block`` (``(..., q)`` by default) onto
    ``SOC(q) = {||z|| <= t}``: unchanged inside, 0 inside the polar cone (``||z|| <= -t``),
    else ``((t + ||z||) / 2) (1, z / ||z||)``.

    The three cases are one formula: with ``a = max((t + ||z||) / 2, 0)``, the projection is
    ``(max(t, a), min(1, a / ||z||) z)`` (inside, ``a <= t`` and ``a >= ||z||``; in the polar
    cone ``a = 0``), which costs a few passes over the block and no masked selects."""
    size = block.shape[dim]
    t, z = block.narrow(dim, 0, 1), block.narrow(dim, 1, size - 1)
    norm = euclidean_norm(z, dim, keepdim=True)  # floored above 0: no 0 / 0 below
    a = ((t + norm) / 2).clamp_min(0)
    factor = (a / norm).clamp_max(1)
    return torch.cat([torch.maximum(t, a), z * factor], dim=dim)


def _soc_runs(cones: ConeSpec) -> list[tuple[int, int, int]]:
    """``(start, size, count)`` for each run of consecutive second-order cones of equal size,
    with ``start`` the row where the run begins."""
    runs: list[tuple[int, int, int]] = []
    start = cones.zero + cones.nonneg
    for q in cones.soc:
        if runs and runs[-1][1] == q and runs[-1][0] + runs[-1][1] * runs[-1][2] == start:
            runs[-1] = (runs[-1][0], q, runs[-1][2] + 1)
        else:
            runs.append((start, q, 1))
        start += q
    return runs


def _project(vectors: torch.Tensor, cones: ConeSpec, dual: bool, dim: int) -> torch.Tensor:
    if dim not in (0, -1):
        raise ValueError(f"dim must be -1 (vectors as rows) or 0 (as columns), got {dim}")
    if vectors.shape[dim] != cones.dim:
        raise ValueError(f"vectors must have {cones.dim} entries (the cone's dimension) along "
                         f"dim {dim}, got shape {tuple(vectors.shape)}")
    rest = vectors.shape[1:] if dim == 0 else vectors.shape[:-1]
    parts = []
    zero = vectors.narrow(dim, 0, cones.zero)
    parts.append(zero if dual else torch.zeros_like(zero))
    parts.append(vectors.narrow(dim, cones.zero, cones.nonneg).clamp_min(0))
    for start, size, count in _soc_runs(cones):
        block = vectors.narrow(dim, start, size * count)
        # One cone per row of (count, size) (rows) or per slice of (count, size, ...)
        # (columns, which keeps the batch contiguous).
        shape = (count, size) + rest if dim == 0 else rest + (count, size)
        cone_dim = 1 if dim == 0 else -1
        parts.append(project_soc(block.reshape(shape), cone_dim).reshape(block.shape))
    return torch.cat(parts, dim=dim)


def project_cone(vectors: torch.Tensor, cones: ConeSpec, dim: int = -1) -> torch.Tensor:
    """Project onto ``K`` (the zero cone's rows become 0) along ``dim`` (-1: each row is a
    vector; 0: each column, the layout with the batch fastest)."""
    return _project(vectors, cones, dual=False, dim=dim)


def project_dual_cone(vectors: torch.Tensor, cones: ConeSpec, dim: int = -1) -> torch.Tensor:
    """Project onto ``K*`` (the zero cone's rows are free) along ``dim`` (as
    :func:`project_cone`)."""
    return _project(vectors, cones, dual=True, dim=dim)
