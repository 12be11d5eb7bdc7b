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

from .problems import ConeSpec


def project_soc(block: torch.Tensor) -> torch.Tensor:
    """Project ``(..., q)`` vectors ``(t, z)`` onto ``SOC(q) = {||z|| <= t}``:
    unchanged inside, 0 inside the polar cone (``||z|| <= -t``), else
    ``((t + ||z||) / 2) (1, z / ||z||)``."""
    t, z = block[..., :1], block[..., 1:]
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    scale = (t + norm) / 2
    boundary = torch.cat([scale, scale * z / safe], dim=-1)
    inside = norm <= t
    polar = norm <= -t
    return torch.where(inside, block, torch.where(polar, torch.zeros_like(block), boundary))


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


def _project(vectors: torch.Tensor, cones: ConeSpec, dual: bool) -> torch.Tensor:
    if vectors.shape[-1] != cones.dim:
        raise ValueError(f"vectors must have {cones.dim} entries (the cone's dimension) in the "
                         f"last axis, got shape {tuple(vectors.shape)}")
    parts = []
    zero = vectors[..., :cones.zero]
    parts.append(zero if dual else torch.zeros_like(zero))
    parts.append(vectors[..., cones.zero:cones.zero + cones.nonneg].clamp_min(0))
    for start, size, count in _soc_runs(cones):
        block = vectors[..., start:start + size * count]
        shape = block.shape[:-1] + (count, size)
        parts.append(project_soc(block.reshape(shape)).reshape(block.shape))
    return torch.cat(parts, dim=-1)


def project_cone(vectors: torch.Tensor, cones: ConeSpec) -> torch.Tensor:
    """Project onto ``K`` (the zero cone's rows become 0)."""
    return _project(vectors, cones, dual=False)


def project_dual_cone(vectors: torch.Tensor, cones: ConeSpec) -> torch.Tensor:
    """Project onto ``K*`` (the zero cone's rows are free)."""
    return _project(vectors, cones, dual=True)
