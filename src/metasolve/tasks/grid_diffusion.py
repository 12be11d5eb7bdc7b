"""Variable-coefficient diffusion ``-div(k grad u) = f`` on the unit square (cube), zero
Dirichlet data, finite differences on a structured grid: a PDE family at the size a user has.

The grid has ``n`` interior points per axis, ``h = 1 / (n + 1)``, unknowns in natural order
(the first axis fastest). The stencil is the 5-point (2D) or 7-point (3D) one with the
coefficient at the face midpoints: row ``r`` of ``A`` holds
``sum_faces k(face) / h^2`` on the diagonal and ``-k(face) / h^2`` towards each interior
neighbour (a boundary face adds to the diagonal only). ``A`` is symmetric positive definite.
Every instance has its own values on one shared pattern, a :class:`~metasolve.SparseBatch`;
nothing is dense.

Coefficient distributions (``coefficient=``), ``log k`` drawn per task:

* ``"sincos"``: ``log k = a1 sin(pi x) + a2 cos(pi y)`` (``+ a3 cos(pi z)`` in 3D) with every
  ``a_i ~ U(-amplitude, amplitude)``.
* ``"fourier"``: a smooth random field of a few modes,
  ``log k = amplitude sum_{p, q} c_pq cos(pi p x + phi_pq) cos(pi q y + psi_pq) / (p q)``
  (the product over the three axes in 3D) with ``p, q in 1..modes``, ``c_pq ~ N(0, 1)`` and
  random phases, scaled so that its mean variance over the square is ``amplitude^2 / 3``, that of
  ``sincos`` in 2D.

Load (``load=``): ``"ones"`` (``f = 1``) or ``"random"`` (``f = 1 + b1 sin(pi x) +
b2 sin(pi y)``, ``b_i ~ U(-1/2, 1/2)``).

Features (:meth:`GridDiffusionFamily.features_of`) are computed on a fixed reference grid of
``16`` cell centres per axis, whatever ``n`` is, so a model trained on small grids reads tasks of
any size. Two sets (``features=``):

* ``"statistics"`` (default): statistics of ``log k`` on the reference grid (mean, standard
  deviation, minimum, maximum, and the mean absolute difference quotient along each axis), then
  ``log(n + 1)``, the one feature that says the grid size. Two tasks with the same coefficients
  at different ``n`` differ only in the last feature. Enough for a relaxation factor.
* ``"field"``: ``log k`` itself at the reference grid's ``16^dim`` cell centres (the first axis
  fastest), then the two load parameters for ``load="random"``. Nothing says ``n``: tasks with
  the same coefficients have the same features on every grid. What a resolution-independent
  initial guess reads (:class:`~metasolve.GridSineHead`); a model on these features applies at
  any ``n`` by design, so the safeguard's envelope test does not flag another grid size.

``exact=True`` attaches every task's exact discrete solution (a sparse LU per task, SciPy's
``splu``) to its problem, for the error monitor and a supervised loss
(:class:`~metasolve.FixedIterationLoss` with ``m = 0``, GBMS paper sec. 2.2.1).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from ..problems import LinearSystem
from ..sparse import SparseBatch, SparsePattern
from ..validation import check_choice, check_count, check_finite_number, check_tensor
from .base import TaskBatch, TaskFamily, register_family

COEFFICIENTS = ("sincos", "fourier")
LOADS = ("ones", "random")
FEATURE_SETS = ("statistics", "field")
#: Cell centres per axis of the reference grid the features are computed on.
REFERENCE_POINTS = 16


def grid_pattern(n: int, dim: int) -> SparsePattern:
    """The ``(2 dim + 1)``-point stencil's pattern on ``n^dim`` unknowns in natural order."""
    t = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    eye = scipy.sparse.identity(n)
    total = None
    for axis in range(dim):
        term = None
        for other in range(dim):  # kron runs from the slowest axis to the fastest
            factor = t if other == axis else eye
            term = factor if term is None else scipy.sparse.kron(factor, term)
        total = term if total is None else total + term
    csr = scipy.sparse.csr_matrix(total)
    csr.eliminate_zeros()  # kron may store a block's zeros explicitly; no entry cancels
    csr.sort_indices()
    return SparsePattern(torch.from_numpy(csr.indptr.astype(np.int64)),
                         torch.from_numpy(csr.indices.astype(np.int64)))


def _grid_coordinates(index: torch.Tensor, n: int, dim: int) -> list[torch.Tensor]:
    """The coordinates of unknowns ``index`` (axis 0 fastest), each ``(len(index),)``."""
    h = 1.0 / (n + 1)
    return [((index // n ** axis) % n + 1).double() * h for axis in range(dim)]


def log_coefficient(kind: str, params: torch.Tensor, coords: list[torch.Tensor],
                    modes: int = 3) -> torch.Tensor:
    """``log k`` of each task (rows of ``params``) at the points ``coords``: ``(B, P)``."""
    dim = len(coords)
    if kind == "sincos":
        terms = [torch.sin(math.pi * coords[0]), torch.cos(math.pi * coords[1])]
        if dim == 3:
            terms.append(torch.cos(math.pi * coords[2]))
        return sum(params[:, i:i + 1] * term[None, :] for i, term in enumerate(terms))
    # fourier: params hold, per mode tuple, the amplitude and one phase per axis.
    total = 0.0
    for column, wavenumbers in enumerate(_mode_tuples(modes, dim)):
        base = column * (dim + 1)
        term = params[:, base:base + 1]
        for axis, p in enumerate(wavenumbers):
            phase = params[:, base + 1 + axis:base + 2 + axis]
            term = term * torch.cos(math.pi * p * coords[axis][None, :] + phase) / p
        total = total + term
    return total


def _mode_tuples(modes: int, dim: int) -> list[tuple[int, ...]]:
    tuples = [()]
    for _ in range(dim):
        tuples = [t + (p,) for t in tuples for p in range(1, modes + 1)]
    return tuples


@register_family
class GridDiffusionFamily(TaskFamily):
    """``-div(k grad u) = f`` on the unit square (``dim=2``) or cube (``dim=3``) with a
    coefficient field drawn per task (module docstring), as per-instance sparse matrices.

    Args:
        n: interior points per axis (``n^dim`` unknowns per task).
        dim: 2 (5-point stencil) or 3 (7-point stencil).
        coefficient: ``"sincos"`` or ``"fourier"`` (module docstring).
        amplitude: the scale of ``log k``.
        modes: wavenumbers per axis of the ``"fourier"`` field.
        load: ``"ones"`` or ``"random"``.
        features: ``"statistics"`` or ``"field"`` (module docstring).
        exact: attach each task's exact solution (module docstring).

    Example:
        >>> fam = GridDiffusionFamily(n=8)
        >>> tasks = fam.sample(4, seed=0)
        >>> tasks.problem.matrix.values.shape, tasks.features.shape
        (torch.Size([4, 288]), torch.Size([4, 7]))
    """

    name = "grid-diffusion"

    def __init__(self, n: int = 32, dim: int = 2, coefficient: str = "sincos",
                 amplitude: float = 1.0, modes: int = 3, load: str = "ones",
                 features: str = "statistics", exact: bool = False):
        self.n = check_count("n", n, minimum=2)
        self.dim = check_count("dim", dim, minimum=2)
        if self.dim > 3:
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        self.coefficient = check_choice("coefficient", coefficient, COEFFICIENTS)
        self.amplitude = check_finite_number("amplitude", amplitude)
        if self.amplitude < 0:
            raise ValueError(f"amplitude must be >= 0, got {amplitude}")
        self.modes = check_count("modes", modes, minimum=1)
        self.load = check_choice("load", load, LOADS)
        self.features = check_choice("features", features, FEATURE_SETS)
        if not isinstance(exact, bool):
            raise TypeError(f"exact must be a bool, got {type(exact).__name__}")
        self.exact = exact
        self.pattern = grid_pattern(self.n, self.dim)

    def config(self):
        return {"n": self.n, "dim": self.dim, "coefficient": self.coefficient,
                "amplitude": self.amplitude, "modes": self.modes, "load": self.load,
                "features": self.features, "exact": self.exact}

    @classmethod
    def declared_size(cls, config):
        n = check_count("n", config.get("n", 32), minimum=2)
        dim = check_count("dim", config.get("dim", 2), minimum=2)
        return (2 * dim + 1) * n ** dim  # the entries of one instance's matrix

    @property
    def unknowns(self) -> int:
        return self.n ** self.dim

    @property
    def feature_dim(self) -> int:
        if self.features == "field":
            return REFERENCE_POINTS ** self.dim + (2 if self.load == "random" else 0)
        return 4 + self.dim + 1

    @property
    def parameter_count(self) -> int:
        """Numbers that describe one task's coefficient field."""
        if self.coefficient == "sincos":
            return self.dim
        return self.modes ** self.dim * (self.dim + 1)

    # --- sampling ---------------------------------------------------------------------------

    def sample_parameters(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``(count, parameter_count)`` coefficient parameters."""
        if self.coefficient == "sincos":
            u = torch.rand(count, self.dim, generator=generator, dtype=torch.float64)
            return (2 * u - 1) * self.amplitude
        tuples = _mode_tuples(self.modes, self.dim)
        # E[cos^2] = 1/2 per axis: the field's mean variance is sum 1/(2^dim prod p^2).
        variance = sum(1.0 / (2 ** self.dim * math.prod(p * p for p in t)) for t in tuples)
        scale = self.amplitude / math.sqrt(3 * variance)
        params = torch.empty(count, len(tuples) * (self.dim + 1), dtype=torch.float64)
        for column in range(len(tuples)):
            base = column * (self.dim + 1)
            params[:, base] = scale * torch.randn(count, generator=generator,
                                                  dtype=torch.float64)
            params[:, base + 1:base + 1 + self.dim] = 2 * math.pi * torch.rand(
                count, self.dim, generator=generator, dtype=torch.float64)
        return params

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        params = self.sample_parameters(n, generator)
        loads = None
        if self.load == "random":
            loads = torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5
        return self.tasks_for(params, loads)

    def tasks_for(self, params: torch.Tensor, loads: torch.Tensor | None = None) -> TaskBatch:
        """The tasks of given coefficient parameters (``(B, parameter_count)``) and, for
        ``load="random"``, load parameters ``(B, 2)``, on this family's grid: the same
        coefficients at another ``n`` give the same features but the last."""
        matrices = self.matrices(params)
        count = params.shape[0]
        if self.load == "ones":
            rhs = torch.ones(count, self.unknowns, dtype=torch.float64)
        else:
            if loads is None:
                raise ValueError("load='random' needs the load parameters (B, 2)")
            loads = check_tensor("loads", loads, shape=(count, 2))
            x, y = _grid_coordinates(torch.arange(self.unknowns), self.n, self.dim)[:2]
            rhs = 1 + loads[:, :1] * torch.sin(math.pi * x) + loads[:, 1:] * torch.sin(
                math.pi * y)
        solution = self.exact_solutions(matrices, rhs) if self.exact else None
        return TaskBatch(LinearSystem(matrices, rhs, solution), self.features_of(params, loads))

    def exact_solutions(self, matrices: SparseBatch, rhs: torch.Tensor) -> torch.Tensor:
        """``(B, N)``: each task's discrete solution by a sparse LU (SciPy's ``splu``)."""
        out = np.empty(tuple(rhs.shape))
        for b in range(rhs.shape[0]):
            lu = scipy.sparse.linalg.splu(self.scipy_matrix(matrices.values[b]).tocsc())
            out[b] = lu.solve(rhs[b].detach().cpu().numpy())
        return torch.from_numpy(out)

    def matrices(self, params: torch.Tensor) -> SparseBatch:
        """The tasks' matrices on the shared pattern (module docstring)."""
        n, dim, pattern = self.n, self.dim, self.pattern
        h = 1.0 / (n + 1)
        rows, cols = pattern.rows, pattern.col_indices
        coords_r = _grid_coordinates(rows, n, dim)
        coords_c = _grid_coordinates(cols, n, dim)

        def k(points):
            return torch.exp(log_coefficient(self.coefficient, params, points, self.modes))

        off = -k([(a + b) / 2 for a, b in zip(coords_r, coords_c, strict=True)])
        centre = _grid_coordinates(torch.arange(self.unknowns), n, dim)
        diagonal = 0.0
        for axis in range(dim):
            for sign in (-0.5, 0.5):
                face = [c + sign * h if i == axis else c for i, c in enumerate(centre)]
                diagonal = diagonal + k(face)
        values = torch.where(rows == cols, diagonal[:, rows], off) / h ** 2
        return SparseBatch(pattern, values)

    def features_of(self, params: torch.Tensor,
                    loads: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, feature_dim)``: the feature set ``features`` names (module docstring),
        computed on the reference grid; only the statistics' last feature, ``log(n + 1)``,
        depends on ``n``. ``loads``: the load parameters ``(B, 2)`` of ``load="random"`` (the
        field features end with them)."""
        m = REFERENCE_POINTS
        axis_points = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        # The mesh reversed: the first axis runs fastest, as in the unknowns' order (the
        # field features are then a small picture of the grid's own layout).
        mesh = torch.meshgrid(*([axis_points] * self.dim), indexing="ij")
        coords = [c.reshape(-1) for c in reversed(mesh)]
        field = log_coefficient(self.coefficient, params, coords, self.modes)
        count = params.shape[0]
        if self.features == "field":
            if self.load == "ones":
                return field
            if loads is None:
                raise ValueError("features='field' with load='random' needs the load "
                                 "parameters (B, 2)")
            return torch.cat([field, loads.to(field)], dim=1)
        grid = field.reshape(count, *([m] * self.dim))
        slopes = [grid.diff(dim=self.dim - axis).abs().mean(dim=tuple(range(1, self.dim + 1))) * m
                  for axis in range(self.dim)]
        size = torch.full((count,), math.log(self.n + 1), dtype=torch.float64)
        return torch.stack([field.mean(dim=1), field.std(dim=1), field.amin(dim=1),
                            field.amax(dim=1), *slopes, size], dim=1)

    def scipy_matrix(self, values: torch.Tensor) -> scipy.sparse.csr_matrix:
        """One instance's matrix (its ``(nnz,)`` values) as a SciPy CSR matrix."""
        return scipy.sparse.csr_matrix(
            (values.detach().cpu().numpy(), self.pattern.col_indices.numpy(),
             self.pattern.crow_indices.numpy()), shape=(self.unknowns,) * 2)
