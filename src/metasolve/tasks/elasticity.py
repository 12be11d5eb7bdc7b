"""A clamped elastic beam under its own weight: linear elasticity (GBMS paper, sec. 4.2,
eqs. (15)-(17), Appendix C.3).

``-div sigma(u) = f`` on the beam ``B = (0, 1) x (0, W) x (0, W)``, with
``sigma(u) = lambda tr(eps(u)) I + 2 mu eps(u)``, ``eps(u) = (grad u + grad u^T) / 2``, clamped
(``u = 0``) at ``x = 0``, traction-free elsewhere, loaded by gravity ``f = (0, 0, -rho g)`` with
``g = 9.81``. A task is ``tau = (W, lambda, mu, rho)`` with ``W ~ LogUniform(0.003, 0.3)`` and
``lambda, mu, rho ~ LogUniform(0.1, 10)``.

Discretization: trilinear hexahedra (scikit-fem's ``ElementVector(ElementHex1())``) on
``cells = (8, 2, 2)`` cuboids along (length, width, height), ``9 * 3 * 3 = 81`` nodes and
``243`` displacement unknowns. The paper's "8 x 8 x 2 cuboids" cannot give its ``N = 243``
unknowns with the clamped ones eliminated (216) or kept (any 8 x 8 x 2 box has 243 *nodes*, 729
unknowns); 243 is three unknowns on each node of a 9 x 3 x 3 grid, clamped ones included, which
is what FEniCS's ``assemble_system`` produces: the Dirichlet rows and columns are replaced by
those of the identity. We do the same by default (``clamped="identity"``), so ``N = 243`` and the
iteration cap and failure count of Table 2 mean the same thing here. The 27 identity rows are
decoupled from the rest and their right-hand side is zero, so ICCG's iterates, residuals and
iteration counts equal, up to rounding, those of the system with the clamped unknowns eliminated
(``clamped="eliminate"``, ``N = 216``); the tests check this.

Unknowns are numbered node by node (``x``, ``y``, ``z`` displacement of a node together), nodes
lexicographically with ``x`` slowest. This keeps the matrix banded (half-bandwidth 41 on the
default mesh), which IC(0) and its cost depend on.

Assembly: the stiffness of the beam of width ``W`` is that of the unit-width beam with every
transverse derivative scaled by ``1/W`` and the volume by ``W^2``. Splitting the bilinear form by
the number ``t`` of transverse derivatives it takes gives
``A(W, lambda, mu) = sum_t W^(2 - t) (lambda K^lambda_t + mu K^mu_t)``, exact for these affine
cells, so six matrices assembled once with scikit-fem give every task by a linear combination
(scikit-fem assembles one task in about 0.1 s; the splits need thousands). The tests compare it
with scikit-fem's ``linear_elasticity`` form assembled on the scaled mesh.

Two readings of the family (the paper's text, "a beam of length 1 and a square cross-section of
width W", does not settle which; docs/RESULTS.md compares them on the rows of Table 2 that do not
depend on learning):

* ``section=None``: the cross-section follows ``W``, as above. Thin beams are stiff across and
  soft along, with condition numbers near ``1e9`` at ``W = 0.003``.
* ``section=S``: the mesh keeps one cross-section ``S`` for every task, as in the FEniCS
  linear-elasticity tutorial (length 1, width 0.2), which the paper's setting reads like, and
  ``W`` enters through the load only, as the tutorial's gravity scaled by ``(W / L)^2``:
  ``f = (0, 0, -rho g W^2)``. The matrix then depends on ``lambda, mu`` only; with a relative
  stopping test ``W`` and ``rho`` do not change the iterations at all.

Features for a meta-solver (Appendix C.3): ``W, lambda, mu, rho, ||A||_1, ||A||_inf, ||A||_F``,
each as ``log10`` (they span decades) and mapped affinely so that the parameter box, and the
matrix norms over its corners, land on ``[-1, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..extras import require
from ..problems import LinearSystem
from ..validation import check_choice, check_count, check_counts, check_positive
from .base import TaskBatch, TaskFamily, register_family

_PURPOSE = "the elastic beam family (ElasticBeamFamily, the ICCG experiment)"

GRAVITY = 9.81
PARAMETERS = ("W", "lam", "mu", "rho")
CLAMPED = ("identity", "eliminate")


def _split_forms():
    """The linear-elasticity bilinear form split by the number of transverse derivatives.

    ``2 mu eps(u):eps(v) = mu sum_ij (d_j u_i d_j v_i + d_j u_i d_i v_j)`` and
    ``lambda div u div v = lambda sum_ab d_a u_a d_b v_b``; each product takes a derivative in
    direction ``p`` of ``u`` and ``q`` of ``v``, and counts ``t = [p != x] + [q != x]``.
    """
    BilinearForm = require("skfem", _PURPOSE).BilinearForm

    def transverse(p, q):
        return int(p > 0) + int(q > 0)

    def lam_form(t):
        @BilinearForm
        def form(u, v, w):
            return sum(u.grad[a, a] * v.grad[b, b] for a in range(3) for b in range(3)
                       if transverse(a, b) == t)
        return form

    def mu_form(t):
        @BilinearForm
        def form(u, v, w):
            total = 0.0
            for i in range(3):
                for j in range(3):
                    if transverse(j, j) == t:
                        total = total + u.grad[i, j] * v.grad[i, j]
                    if transverse(j, i) == t:
                        total = total + u.grad[i, j] * v.grad[j, i]
            return total
        return form

    return [(lam_form(t), mu_form(t)) for t in range(3)]


def beam_mesh(cells: Sequence[int], width: float = 1.0):
    """The ``cells[0] x cells[1] x cells[2]`` hexahedral mesh of ``(0, 1) x (0, W)^2``."""
    MeshHex = require("skfem", _PURPOSE).MeshHex

    nx, ny, nz = cells
    return MeshHex.init_tensor(np.linspace(0.0, 1.0, nx + 1), np.linspace(0.0, width, ny + 1),
                               np.linspace(0.0, width, nz + 1))


def beam_numbering(basis) -> np.ndarray:
    """Old dof index of each new unknown: nodes lexicographic with ``x`` slowest, the three
    components of a node together."""
    p = basis.mesh.p
    order = np.lexsort((p[2], p[1], p[0]))
    return basis.nodal_dofs[:, order].T.reshape(-1)


@register_family
class ElasticBeamFamily(TaskFamily):
    """Clamped beams under gravity with random width and material (GBMS paper, sec. 4.2).

    Args:
        cells: hexahedra along (length, width, height); ``(8, 2, 2)`` gives ``N = 243``.
        clamped: ``"identity"`` keeps the clamped unknowns as identity rows (FEniCS's
            ``assemble_system``, ``N = 3 * nodes``); ``"eliminate"`` removes them.
        width_range, lam_range, mu_range, rho_range: ``(low, high)`` of the log-uniform
            distributions of ``W``, ``lambda``, ``mu``, ``rho``.
        section: ``None`` (default): the cross-section is ``W x W``; a width ``S``: every beam
            has cross-section ``S x S`` and ``W`` scales the load (the module docstring's
            second reading).

    Example:
        >>> fam = ElasticBeamFamily()
        >>> tasks = fam.sample(4, seed=0)
        >>> tasks.problem.matrix.shape, tasks.features.shape
        (torch.Size([4, 243, 243]), torch.Size([4, 7]))
    """

    name = "elastic_beam"

    def __init__(self, cells: Sequence[int] = (8, 2, 2), clamped: str = "identity",
                 width_range: Sequence[float] = (0.003, 0.3),
                 lam_range: Sequence[float] = (0.1, 10.0),
                 mu_range: Sequence[float] = (0.1, 10.0),
                 rho_range: Sequence[float] = (0.1, 10.0), section: float | None = None):
        if isinstance(cells, (str, bytes)) or len(cells) != 3:
            raise ValueError(f"cells must be three counts (length, width, height), got {cells!r}")
        self.cells = tuple(check_count("cells", c, minimum=1) for c in cells)
        self.clamped = check_choice("clamped", clamped, CLAMPED)
        self.ranges = {}
        for name, value in zip(PARAMETERS, (width_range, lam_range, mu_range, rho_range),
                               strict=True):
            arg = f"{name if name != 'W' else 'width'}_range"
            if isinstance(value, (str, bytes)) or len(value) != 2:
                raise ValueError(f"{arg} must be (low, high), got {value!r}")
            low, high = (check_positive(arg, v) for v in value)
            if low > high:
                raise ValueError(f"{arg} must have low <= high, got {tuple(value)}")
            self.ranges[name] = (low, high)
        self.section = None if section is None else check_positive("section", section)
        self._assemble_pieces()
        self._feature_bounds = self._norm_bounds()

    @classmethod
    def declared_size(cls, config):
        cells = check_counts("cells", config.get("cells", [8, 2, 2]), minimum=1)
        if len(cells) != 3:
            raise ValueError(f"cells must be three counts (length, width, height), got {cells}")
        dofs = 3 * (cells[0] + 1) * (cells[1] + 1) * (cells[2] + 1)
        return 6 * dofs * dofs  # the six dense stiffness pieces __init__ assembles

    def config(self):
        r = self.ranges
        return {"cells": list(self.cells), "clamped": self.clamped,
                "width_range": list(r["W"]), "lam_range": list(r["lam"]),
                "mu_range": list(r["mu"]), "rho_range": list(r["rho"]), "section": self.section}

    @property
    def feature_dim(self) -> int:
        return 7

    @property
    def size(self) -> int:
        """Unknowns per task, ``N``."""
        return int(self._free.numel()) if self.clamped == "eliminate" else self._n_all

    def _assemble_pieces(self) -> None:
        skfem = require("skfem", _PURPOSE)
        Basis, ElementHex1, ElementVector = skfem.Basis, skfem.ElementHex1, skfem.ElementVector
        LinearForm, asm = skfem.LinearForm, skfem.asm

        basis = Basis(beam_mesh(self.cells), ElementVector(ElementHex1()))
        perm = beam_numbering(basis)
        pieces = []
        for lam_form, mu_form in _split_forms():
            for form in (lam_form, mu_form):
                pieces.append(asm(form, basis).toarray()[np.ix_(perm, perm)])
        # pieces[2 t + (0: lambda, 1: mu)] has t transverse derivatives; its factor is W^(2-t).
        self._pieces = torch.from_numpy(np.stack(pieces))

        @LinearForm
        def downward(v, w):
            return -v[2]

        self._load = torch.from_numpy(asm(downward, basis)[perm])  # times rho g W^2
        clamped_old = basis.get_dofs(lambda x: np.isclose(x[0], 0.0)).all()
        clamped = np.isin(perm, clamped_old)
        self._n_all = int(perm.size)
        self._clamped = torch.from_numpy(clamped)
        self._free = torch.from_numpy(np.flatnonzero(~clamped))

    def _norm_bounds(self) -> torch.Tensor:
        """``(2, 3)`` min/max of ``log10`` of the three matrix norms over the box's corners."""
        corners = torch.tensor([[r[i] for r, i in zip(self.ranges.values(), bits, strict=True)]
                                for bits in np.ndindex(2, 2, 2, 2)], dtype=torch.float64)
        logs = torch.log10(self._norms(self.matrices(corners)))
        return torch.stack([logs.min(0).values, logs.max(0).values])

    @staticmethod
    def _norms(matrix: torch.Tensor) -> torch.Tensor:
        one = torch.linalg.matrix_norm(matrix, ord=1)
        inf = torch.linalg.matrix_norm(matrix, ord=math.inf)
        fro = torch.linalg.matrix_norm(matrix, ord="fro")
        return torch.stack([one, inf, fro], dim=1)

    def check_parameters(self, params: torch.Tensor) -> torch.Tensor:
        """Validate a ``(B, 4)`` tensor of ``(W, lambda, mu, rho)`` rows."""
        if not isinstance(params, torch.Tensor):
            raise TypeError(f"params must be a torch.Tensor, got {type(params).__name__}")
        if params.ndim != 2 or params.shape[1] != 4:
            raise ValueError(f"params must have shape (B, 4) with columns {PARAMETERS}, got "
                             f"{tuple(params.shape)}")
        for j, name in enumerate(PARAMETERS):
            column = params[:, j].detach()
            bad = ~(torch.isfinite(column) & (column > 0))
            if bool(bad.any()):
                raise ValueError(f"params[:, {j}] ({name}) must be finite and > 0, got "
                                 f"{column[bad][0].item()} in row {int(bad.nonzero()[0])}")
        return params.to(torch.float64)

    def matrices(self, params: torch.Tensor) -> torch.Tensor:
        """``(B, N, N)`` stiffness matrices for ``(W, lambda, mu, rho)`` rows."""
        params = self.check_parameters(params)
        width, lam, mu = params[:, 0], params[:, 1], params[:, 2]
        if self.section is not None:
            width = torch.full_like(width, self.section)
        coeff = torch.stack([width ** (2 - t) * material for t in range(3)
                             for material in (lam, mu)], dim=1)
        matrix = torch.einsum("bp,pij->bij", coeff, self._pieces)
        keep = ~self._clamped
        if self.clamped == "eliminate":
            return matrix[:, self._free][:, :, self._free]
        mask = (keep[:, None] & keep[None, :]).to(matrix.dtype)
        return matrix * mask + torch.diag(self._clamped.to(matrix.dtype))

    def rhs(self, params: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` load vectors ``f`` (gravity ``-rho g`` in ``z``, times ``W^2`` with a fixed
        ``section``), zero on clamped rows."""
        params = self.check_parameters(params)
        # The load of the unit-width assembly times the cross-section's area, W^2 or S^2; a
        # fixed section scales gravity by W^2 as well.
        area = params[:, 0] ** 2 if self.section is None else self.section ** 2
        gravity = GRAVITY if self.section is None else GRAVITY * params[:, 0] ** 2
        scale = params[:, 3] * gravity * area
        load = scale[:, None] * torch.where(self._clamped, 0.0, self._load)
        return load[:, self._free] if self.clamped == "eliminate" else load

    def features(self, params: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """``(B, 7)``: ``log10`` of ``W, lambda, mu, rho, ||A||_1, ||A||_inf, ||A||_F``, each
        mapped affinely from its range over the parameter box to ``[-1, 1]``."""
        logs = torch.log10(torch.cat([params, self._norms(matrix)], dim=1))
        box = torch.log10(torch.tensor([self.ranges[name] for name in PARAMETERS],
                                       dtype=torch.float64)).T
        low, high = torch.cat([box, self._feature_bounds], dim=1)
        # A degenerate range (low == high) gives a constant feature; keep it at 0, not NaN.
        half = torch.where(high > low, (high - low) / 2, torch.ones_like(high))
        return (logs - (high + low) / 2) / half

    def tasks(self, params: torch.Tensor) -> TaskBatch:
        """The tasks for given ``(W, lambda, mu, rho)`` rows (``(B, 4)``)."""
        params = self.check_parameters(params)
        matrix = self.matrices(params)
        return TaskBatch(LinearSystem(matrix, self.rhs(params)), self.features(params, matrix))

    def sample_parameters(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, 4)`` log-uniform draws of ``(W, lambda, mu, rho)``."""
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
        logs = torch.log(torch.tensor([self.ranges[name] for name in PARAMETERS],
                                      dtype=torch.float64))
        return torch.exp(logs[:, 0] + u * (logs[:, 1] - logs[:, 0]))

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        return self.tasks(self.sample_parameters(n, generator))
