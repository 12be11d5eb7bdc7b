"""A user's finite-element family: a linear PDE whose coefficient (and load) vary per task,
assembled with scikit-fem (the extra ``metasolve[fem]``) into one sparse matrix per task on the
mesh's shared pattern (:class:`~metasolve.SparseBatch`; nothing is dense).

The user subclasses :class:`FiniteElementFamily`, as any family (``name``, ``config()``,
``@register_family`` so that a saved model can name it), and gives:

* :meth:`~FiniteElementFamily.basis`: the scikit-fem basis (mesh and element) of the family's
  configuration;
* ``bilinear_form``: a ``skfem.BilinearForm`` that reads the task's coefficient as ``w["k"]``
  (for diffusion, ``w["k"] * dot(grad(u), grad(v))``);
* :meth:`~FiniteElementFamily.sample_parameters`: ``(count, P)`` numbers that describe each
  task;
* :meth:`~FiniteElementFamily.coefficient`: every task's coefficient at given points, from its
  parameters;

and, where the defaults do not fit, ``linear_form`` (default ``f v``, reading the load as
``w["f"]``), :meth:`~FiniteElementFamily.load` (default ``f = 1``),
:meth:`~FiniteElementFamily.dirichlet_dofs` (default: every boundary degree of freedom, with zero
Dirichlet data) and :meth:`~FiniteElementFamily.features_of` (default: the parameters).

Every task is assembled with ``skfem.asm`` at the basis's quadrature points and condensed to the
free degrees of freedom (``skfem.condense``); the unknowns of a task's :class:`LinearSystem` are
those, in the basis's order (:meth:`~FiniteElementFamily.expand` puts a solution back on every
degree of freedom, for plotting with scikit-fem). Assembly runs once per task in NumPy; the
solves then run batched.
"""

from __future__ import annotations

import abc
from functools import cached_property

import numpy as np
import scipy.sparse
import torch

from ..extras import require
from ..problems import LinearSystem
from ..sparse import SparseBatch, SparsePattern
from .base import TaskBatch, TaskFamily

_PURPOSE = "a finite-element family (FiniteElementFamily)"


def _unit_load_form():
    skfem = require("skfem", _PURPOSE)

    @skfem.LinearForm
    def load(v, w):
        return w["f"] * v

    return load


class FiniteElementFamily(TaskFamily, abc.ABC):
    """Base class of a family of linear PDEs assembled with scikit-fem, one sparse matrix per
    task (module docstring). Subclasses implement :meth:`basis`, :meth:`sample_parameters` and
    :meth:`coefficient`, and set ``bilinear_form``.

    Example (``-div(k grad u) = 1`` on the unit square, P1 triangles, ``k = exp(a x)``):
        >>> import numpy as np, torch, skfem, metasolve as ms
        >>> from skfem.helpers import dot, grad
        >>> @skfem.BilinearForm
        ... def diffusion(u, v, w):
        ...     return w["k"] * dot(grad(u), grad(v))
        >>> class Square(ms.FiniteElementFamily):
        ...     name = "square-example"
        ...     bilinear_form = diffusion
        ...     def config(self):
        ...         return {}
        ...     def basis(self):
        ...         return skfem.Basis(skfem.MeshTri().refined(3), skfem.ElementTriP1())
        ...     def sample_parameters(self, count, generator):
        ...         return torch.rand(count, 1, generator=generator, dtype=torch.float64)
        ...     def coefficient(self, params, x):
        ...         return np.exp(params.numpy()[:, :, None] * x[0])
        >>> tasks = Square().sample(4, seed=0)
        >>> tasks.problem.matrix.values.shape  # 49 free unknowns, 217 entries each
        torch.Size([4, 217])
        >>> bool(ms.run(ms.ConjugateGradient(), tasks.problem, rtol=1e-8).converged.all())
        True
    """

    #: ``skfem.BilinearForm`` reading the coefficient as ``w["k"]``.
    bilinear_form = None
    #: ``skfem.LinearForm`` reading the load as ``w["f"]``; ``None``: ``f v``.
    linear_form = None

    # --- what a subclass gives ---------------------------------------------------------------

    # Abstract: a subclass without one of these cannot be instantiated (a TypeError naming it).

    @abc.abstractmethod
    def basis(self):
        """The scikit-fem basis (mesh and element) of this family's configuration."""

    @abc.abstractmethod
    def sample_parameters(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``(count, P)`` float64 numbers that describe each task."""

    @abc.abstractmethod
    def coefficient(self, params: torch.Tensor, x: np.ndarray) -> np.ndarray:
        """Every task's coefficient at the points ``x`` (``(dim, ...)``, the quadrature points
        of every element): ``(B, ...)``."""

    def load(self, params: torch.Tensor, x: np.ndarray) -> np.ndarray:
        """Every task's load at the points ``x``, ``(B, ...)``. Default: ``f = 1``."""
        return np.ones((params.shape[0], *x.shape[1:]))

    def dirichlet_dofs(self, basis) -> np.ndarray:
        """The degrees of freedom held at zero. Default: every one on the boundary."""
        return basis.get_dofs().flatten()

    def features_of(self, params: torch.Tensor) -> torch.Tensor:
        """``(B, feature_dim)`` features of the tasks with parameters ``params``. Default: the
        parameters themselves."""
        return params

    # --- what the family does with it --------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        params = self.sample_parameters(1, torch.Generator().manual_seed(0))
        return int(self.features_of(params).shape[1])

    @cached_property
    def _assembly(self) -> dict:
        """The basis, its quadrature points, the free degrees of freedom and their pattern
        (from one assembly with a unit coefficient), computed once per family object."""
        skfem = require("skfem", _PURPOSE)
        if self.bilinear_form is None:
            raise TypeError(f"{type(self).__name__} must set bilinear_form (a "
                            "skfem.BilinearForm reading the coefficient as w['k'])")
        basis = self.basis()
        points = np.asarray(basis.global_coordinates())
        fixed = np.unique(np.asarray(self.dirichlet_dofs(basis), dtype=np.int64))
        free = np.setdiff1d(np.arange(basis.N), fixed)
        if free.size == 0:
            raise ValueError("dirichlet_dofs holds every degree of freedom: nothing to solve")
        unit = skfem.asm(self.bilinear_form, basis, k=np.ones(points.shape[1:]))
        matrix = unit.tocsr()[free][:, free].tocsr()
        matrix.sort_indices()
        pattern = SparsePattern(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                torch.from_numpy(matrix.indices.astype(np.int64)))
        # Entry (i, j) -> its position in the pattern, plus one (0: not in the pattern).
        lookup = scipy.sparse.csr_matrix(
            (np.arange(1, matrix.nnz + 1, dtype=np.float64), matrix.indices, matrix.indptr),
            shape=matrix.shape)
        return {"basis": basis, "points": points, "free": free, "pattern": pattern,
                "lookup": lookup, "nnz": matrix.nnz}

    @property
    def unknowns(self) -> int:
        """Free degrees of freedom per task (the size of its linear system)."""
        return int(self._assembly["free"].size)

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        return self.tasks_for(self.sample_parameters(n, generator))

    def _field(self, name: str, value, batch: int, points: np.ndarray) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        expected = (batch, *points.shape[1:])
        if value.shape != expected:
            raise ValueError(f"{name}() must return one value per task and point, shape "
                             f"{expected}, got {value.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{name}() returned a non-finite value")
        return value

    def tasks_for(self, params: torch.Tensor) -> TaskBatch:
        """The tasks with parameters ``params`` (``(B, P)``): assembled, condensed to the free
        degrees of freedom, on the shared pattern."""
        skfem = require("skfem", _PURPOSE)
        if not isinstance(params, torch.Tensor) or params.ndim != 2:
            got = tuple(params.shape) if isinstance(params, torch.Tensor) else \
                type(params).__name__
            raise ValueError(f"params must be a (B, P) tensor, got {got}")
        assembly = self._assembly
        basis, points, free = assembly["basis"], assembly["points"], assembly["free"]
        batch = params.shape[0]
        k = self._field("coefficient", self.coefficient(params, points), batch, points)
        f = self._field("load", self.load(params, points), batch, points)
        linear = self.linear_form if self.linear_form is not None else _unit_load_form()
        values = np.zeros((batch, assembly["nnz"]))
        rhs = np.empty((batch, free.size))
        for b in range(batch):
            # Scattered into the unit coefficient's pattern: a coefficient that vanishes on
            # some elements drops entries, which stay zeros of the pattern.
            matrix = skfem.asm(self.bilinear_form, basis, k=k[b]).tocsr()[free][:, free].tocoo()
            position = np.asarray(assembly["lookup"][matrix.row, matrix.col]).ravel()
            if not (position > 0).all():
                raise ValueError(f"task {b}'s matrix has entries outside the pattern of a unit "
                                 "coefficient: bilinear_form must reach every entry with k = 1")
            np.add.at(values[b], position.astype(np.int64) - 1, matrix.data)
            rhs[b] = skfem.asm(linear, basis, f=f[b])[free]
        system = LinearSystem(SparseBatch(assembly["pattern"], torch.from_numpy(values)),
                              torch.from_numpy(rhs))
        return TaskBatch(system, self.features_of(params))

    def expand(self, x: torch.Tensor) -> np.ndarray:
        """Solutions on the free degrees of freedom (``(B, unknowns)``) on every degree of
        freedom of the basis, zero on the Dirichlet ones: ``(B, basis.N)``."""
        assembly = self._assembly
        x = x.detach().cpu().numpy()
        if x.ndim != 2 or x.shape[1] != assembly["free"].size:
            raise ValueError(f"x must have shape (B, {assembly['free'].size}), got {x.shape}")
        full = np.zeros((x.shape[0], assembly["basis"].N))
        full[:, assembly["free"]] = x
        return full
