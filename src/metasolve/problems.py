"""Batched problem containers that solvers consume.

A :class:`LinearSystem` is a batch of ``A_b x_b = rhs_b``. The matrix is shared by the batch
(shape ``(N, N)``, dense or sparse), given per instance (``(B, N, N)`` dense), or a
:class:`~metasolve.sparse.SparseBatch` of per-instance sparse matrices. A
:class:`NonlinearSystem` is a batch of ``g_b(y_b) = 0`` with Jacobians. Input is validated here,
once, where it enters (docs/architecture.md, convention 5).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import torch

from .sparse import SharedSparseMatrix, SparseBatch, shared_sparse
from .validation import check_batch, check_tensor


class Problem(abc.ABC):
    """What the driver loop needs from any batch of problems (docs/architecture.md, sec. 3):
    ``batch_size``, ``size``, ``dtype``, ``index(idx)`` (a sub-batch) and
    ``check_batch(name, x)`` (validate a per-instance ``(B, N)`` tensor such as ``x0``).

    A container names in ``_vector`` the per-instance ``(B, N)`` tensor that fixes the batch,
    the size and the dtype (the right-hand side, or the starting points); it may override any
    of these.
    """

    _vector: str = ""

    @property
    def _leading(self) -> torch.Tensor:
        return getattr(self, self._vector)

    @property
    def batch_size(self) -> int:
        return int(self._leading.shape[0])

    @property
    def size(self) -> int:
        return int(self._leading.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self._leading.dtype

    @abc.abstractmethod
    def index(self, idx) -> Problem:
        """The sub-batch at ``idx`` (a slice, index tensor or boolean mask)."""

    def check_batch(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Validate a per-instance vector such as an initial guess."""
        return check_vectors(name, value, like=self._leading)

    @property
    def device(self) -> torch.device:
        """The device the batch's data lie on."""
        return self._leading.device

    def to(self, device) -> Problem:
        """The same batch with its data on ``device`` (``self`` if they are there already).

        Moves every tensor attribute, and every attribute that is itself a problem (an
        eigenproblem's operator); the data were validated when the batch was built and are not
        checked again. A subclass that keeps tensors elsewhere (in a list, say) overrides it.
        """
        device = torch.device(device)
        moved = {}
        for key, value in vars(self).items():
            if isinstance(value, (torch.Tensor, SparseBatch)) and value.device != device:
                moved[key] = value.to(device)
            elif isinstance(value, Problem):
                there = value.to(device)
                if there is not value:
                    moved[key] = there
        if not moved:
            return self
        copy = object.__new__(type(self))
        for key, value in {**vars(self), **moved}.items():
            if key != DERIVED:  # what was computed from the data is computed again there
                object.__setattr__(copy, key, value)  # frozen dataclasses too
        return copy


#: The attribute where a problem keeps what it computed from its data (dropped by ``to``).
DERIVED = "_derived"

#: A shared torch sparse matrix with at least this many rows is applied through SciPy
#: (:attr:`LinearSystem.scipy_operator`). On 2D Poisson, one thread, 1 and 8 vectors
#: (``python benchmarks/cg_per_iteration.py --crossover``): up to 256 rows the two products
#: cost the same 12 to 16 us; at 1,024 rows SciPy's takes 25 us against PyTorch's 32 us for 8
#: vectors, at 16,384 rows 239 us against 1,456 us.
SCIPY_MIN_ROWS = 1024


@dataclass(frozen=True)
class LinearSystem(Problem):
    """A batch of linear systems ``A x = b``.

    Args:
        matrix: ``(N, N)`` dense or sparse (shared by every instance), ``(B, N, N)`` dense, or
            a :class:`~metasolve.sparse.SparseBatch` of ``B`` sparse matrices (one pattern with
            per-instance values, or different patterns): products, the diagonal and the
            triangular solves then work on its entries, never on a dense matrix.
        rhs: ``(B, N)`` right-hand sides.
        solution: optional ``(B, N)`` exact solutions, used by the error monitor and losses.
    """

    matrix: torch.Tensor | SparseBatch
    rhs: torch.Tensor
    solution: torch.Tensor | None = None

    def __post_init__(self):
        check_tensor("rhs", self.rhs, ndim=2)
        n = self.rhs.shape[1]
        if isinstance(self.matrix, SparseBatch):
            self._check_sparse_batch()
            return
        check_tensor("matrix", self.matrix, ndim=(2, 3))
        if self.matrix.ndim == 2:
            if tuple(self.matrix.shape) != (n, n):
                raise ValueError(f"matrix must have shape ({n}, {n}) to match rhs of shape "
                                 f"{tuple(self.rhs.shape)}, got {tuple(self.matrix.shape)}")
        else:
            if self.sparse:
                raise ValueError("a batched (B, N, N) matrix must be dense; share one sparse "
                                 "(N, N) matrix across the batch instead")
            if tuple(self.matrix.shape) != (self.rhs.shape[0], n, n):
                raise ValueError(f"matrix must have shape ({self.rhs.shape[0]}, {n}, {n}) to "
                                 f"match rhs of shape {tuple(self.rhs.shape)}, "
                                 f"got {tuple(self.matrix.shape)}")
        if self.matrix.dtype != self.rhs.dtype:
            raise TypeError(f"matrix and rhs must share a dtype, got {self.matrix.dtype} and "
                            f"{self.rhs.dtype}")
        if self.solution is not None:
            check_tensor("solution", self.solution, shape=tuple(self.rhs.shape))

    _vector = "rhs"

    def _check_sparse_batch(self) -> None:
        batch, n = self.rhs.shape
        if self.matrix.shape != (batch, n, n):
            raise ValueError(f"matrix must hold {batch} matrices of size {n} x {n} to match rhs "
                             f"of shape {tuple(self.rhs.shape)}, got {self.matrix.shape}")
        if self.matrix.dtype != self.rhs.dtype or self.matrix.device != self.rhs.device:
            raise TypeError(f"matrix and rhs must share a dtype and device, got "
                            f"{self.matrix.dtype} on {self.matrix.device} and {self.rhs.dtype} "
                            f"on {self.rhs.device}")
        if self.solution is not None:
            check_tensor("solution", self.solution, shape=tuple(self.rhs.shape))

    @property
    def sparse(self) -> bool:
        """Whether the matrix is sparse: a torch sparse tensor or a ``SparseBatch``."""
        return isinstance(self.matrix, SparseBatch) or self.matrix.layout != torch.strided

    @property
    def shared_matrix(self) -> bool:
        return not isinstance(self.matrix, SparseBatch) and self.matrix.ndim == 2

    @property
    def scipy_operator(self) -> SharedSparseMatrix | None:
        """The shared sparse matrix as SciPy applies it, where that is faster than PyTorch's
        CSR product: a torch sparse matrix on the CPU, not differentiated, with at least
        :data:`SCIPY_MIN_ROWS` rows. :meth:`matvec` uses it for a batch held with the batch
        fastest (``x.T`` contiguous), which SciPy multiplies without a copy and hands back held
        that way; :class:`~metasolve.solvers.ConjugateGradient` holds its vectors so on such a
        system (``python benchmarks/cg_per_iteration.py``)."""
        if (isinstance(self.matrix, SparseBatch) or self.matrix.layout == torch.strided
                or self.matrix.ndim != 2 or self.matrix.shape[0] < SCIPY_MIN_ROWS):
            return None
        return shared_sparse(self.matrix)

    def matvec(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``A x`` for a batch ``x`` of shape ``(B, N)``. ``out``, a ``(B, N)`` buffer held
        like ``x``, may receive the product (through SciPy, with the batch held fastest,
        outside autograd: :meth:`SharedSparseMatrix.apply_into`); use the returned tensor,
        which is ``out`` only where it was written."""
        if isinstance(self.matrix, SparseBatch):
            return self.matrix.matvec(x)
        if self.sparse:
            scipy_operator = self.scipy_operator
            if scipy_operator is not None and x.T.is_contiguous():
                # The batch held fastest, as SciPy reads it (a method that holds its vectors
                # by rows keeps PyTorch's product: a copy each way would cost more).
                if out is not None:
                    return scipy_operator.apply_into(x.T, out.T).T
                return scipy_operator.apply(x.T).T
            if self.matrix.requires_grad or self.matrix.device.type != "cpu":
                return (self.matrix @ x.T).T
            # Rows in, rows out: a contiguous (B, N) product, which the vector updates that
            # follow read faster than the transposed view of A @ x^T
            # (benchmarks/cg_per_iteration.py).
            return torch.mm(x, self.matrix.t())
        if self.shared_matrix:
            return x @ self.matrix.T
        return torch.bmm(self.matrix, x.unsqueeze(-1)).squeeze(-1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``b - A x``."""
        return self.rhs - self.matvec(x)

    def diagonal(self) -> torch.Tensor:
        """The diagonal of ``A``: ``(N,)`` if shared, else ``(B, N)``."""
        if isinstance(self.matrix, SparseBatch):
            return self.matrix.diagonal()
        if self.sparse:
            coo = self.matrix.to_sparse_coo().coalesce()
            idx, val = coo.indices(), coo.values()
            on_diag = idx[0] == idx[1]
            diag = torch.zeros(self.size, dtype=self.dtype, device=val.device)
            return diag.index_put_((idx[0, on_diag],), val[on_diag], accumulate=True)
        return torch.diagonal(self.matrix, dim1=-2, dim2=-1)

    def widened(self) -> LinearSystem:
        """The same systems in float64, detached (no exact solutions): the driver computes the
        true residual that confirms a float32 stop with it."""
        return dataclasses.replace(self, matrix=self.matrix.detach().to(torch.float64),
                                   rhs=self.rhs.detach().to(torch.float64), solution=None)

    def index(self, idx) -> LinearSystem:
        """The sub-batch at ``idx`` (a slice, index tensor or boolean mask)."""
        matrix = self.matrix if self.shared_matrix else self.matrix[idx]
        sol = None if self.solution is None else self.solution[idx]
        return LinearSystem(matrix, self.rhs[idx], sol)



@dataclass(frozen=True)
class DiagonalSystem(LinearSystem):
    """A batch of diagonal systems ``diag(lambda_b) x = rhs_b``: a synthetic operator known by its
    spectrum, on which a training step costs one elementwise product per matvec (the AutoSpec
    summary's small synthetic operators).

    Args:
        matrix: ``(B, N)``, the eigenvalues ``lambda_b`` (the diagonal) of each instance.
        rhs: ``(B, N)`` right-hand sides.
        solution: optional ``(B, N)`` exact solutions.
    """

    def __post_init__(self):
        check_tensor("rhs", self.rhs, ndim=2)
        check_tensor("matrix", self.matrix, shape=tuple(self.rhs.shape))
        if self.matrix.layout != torch.strided:
            raise ValueError("a DiagonalSystem's matrix (its eigenvalues) must be dense")
        if self.matrix.dtype != self.rhs.dtype:
            raise TypeError(f"matrix and rhs must share a dtype, got {self.matrix.dtype} and "
                            f"{self.rhs.dtype}")
        if self.solution is not None:
            check_tensor("solution", self.solution, shape=tuple(self.rhs.shape))

    @property
    def eigenvalues(self) -> torch.Tensor:
        return self.matrix

    @property
    def shared_matrix(self) -> bool:
        return False

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        return self.matrix * x

    def diagonal(self) -> torch.Tensor:
        return self.matrix

    def index(self, idx) -> DiagonalSystem:
        sol = None if self.solution is None else self.solution[idx]
        return DiagonalSystem(self.matrix[idx], self.rhs[idx], sol)


@dataclass(frozen=True)
class EigenProblem(Problem):
    """A batch of symmetric eigenvalue problems: the ``wanted`` smallest eigenpairs of each
    operator of ``operator`` (a :class:`LinearSystem` or :class:`DiagonalSystem`, whose
    right-hand sides are not used), from a starting block.

    Args:
        operator: the operators ``A_b``.
        start: ``(B, N, p)`` starting block, ``p >= wanted`` vectors per instance.
        upper: ``(B,)`` an upper bound on ``lambda_max`` of each operator (from a probe).
        wanted: ``k``, the number of smallest eigenpairs sought.
    """

    operator: LinearSystem
    start: torch.Tensor
    upper: torch.Tensor
    wanted: int

    def __post_init__(self):
        if not isinstance(self.operator, LinearSystem):
            raise TypeError(f"operator must be a LinearSystem, got {type(self.operator).__name__}")
        check_tensor("start", self.start, ndim=3)
        batch, size = self.operator.batch_size, self.operator.size
        if self.start.shape[:2] != (batch, size):
            raise ValueError(f"start must have shape ({batch}, {size}, p), got "
                             f"{tuple(self.start.shape)}")
        check_tensor("upper", self.upper, shape=(batch,))
        for name, value in (("start", self.start), ("upper", self.upper)):
            if value.dtype != self.operator.dtype or value.device != self.operator.rhs.device:
                raise TypeError(f"{name} must be {self.operator.dtype} on "
                                f"{self.operator.rhs.device} like the operator, got "
                                f"{value.dtype} on {value.device}")
        if isinstance(self.wanted, bool) or not isinstance(self.wanted, int):
            raise TypeError(f"wanted must be an int, got {type(self.wanted).__name__}")
        if not 1 <= self.wanted <= self.start.shape[2]:
            raise ValueError(f"wanted must be in [1, p = {self.start.shape[2]}], got "
                             f"{self.wanted}")

    @property
    def batch_size(self) -> int:
        return self.operator.batch_size

    @property
    def size(self) -> int:
        return self.operator.size

    @property
    def device(self) -> torch.device:
        return self.operator.device

    @property
    def block(self) -> int:
        return int(self.start.shape[2])

    @property
    def dtype(self) -> torch.dtype:
        return self.operator.dtype

    def block_matvec(self, block: torch.Tensor) -> torch.Tensor:
        """``A_b V_b`` for a batch of blocks ``(B, N, q)``: ``q`` products per instance."""
        batch, size, width = block.shape
        rows = block.transpose(1, 2).reshape(batch * width, size)
        if self.operator.shared_matrix:
            out = self.operator.matvec(rows)
        elif isinstance(self.operator.matrix, SparseBatch):
            return self.operator.matrix.matvec(block.transpose(1, 2)).transpose(1, 2)
        elif isinstance(self.operator, DiagonalSystem):
            out = self.operator.matrix.repeat_interleave(width, dim=0) * rows
        else:
            out = torch.bmm(self.operator.matrix, block).transpose(1, 2).reshape(-1, size)
        return out.reshape(batch, width, size).transpose(1, 2)

    def index(self, idx) -> EigenProblem:
        return EigenProblem(self.operator.index(idx), self.start[idx], self.upper[idx],
                            self.wanted)

    def check_batch(self, name: str, value: torch.Tensor) -> torch.Tensor:
        check_tensor(name, value, shape=tuple(self.start.shape))
        return value


def check_vectors(name: str, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` must be a finite ``(B, N)`` batch with the shape, dtype and device of ``like``."""
    check_tensor(name, value, ndim=2)
    if value.dtype != like.dtype or value.device != like.device:
        raise TypeError(f"{name} must be {like.dtype} on {like.device} like the system, "
                        f"got {value.dtype} on {value.device}")
    check_batch(name, value, like.shape[0])
    if value.shape[1] != like.shape[1]:
        raise ValueError(f"{name} must have shape {tuple(like.shape)}, got {tuple(value.shape)}")
    return value


class _StartedBatch(Problem, abc.ABC):
    """What a batch known by its per-instance starting points ``start`` ``(B, N)`` shares."""

    start: torch.Tensor
    _vector = "start"

    def reference_norm(self) -> torch.Tensor:
        """What ``rtol`` multiplies: 1 per instance (an absolute test) unless overridden."""
        return torch.ones(self.batch_size, dtype=self.dtype, device=self.start.device)



class NonlinearSystem(_StartedBatch):
    """A batch of nonlinear systems ``g(y) = 0``, one per instance, each of size ``N``.

    Subclasses hold their per-instance data (batch-leading tensors), set :attr:`start` (the
    default initial guess, ``(B, N)``) and implement :meth:`function` (``g``, batched) and
    :meth:`index`; :meth:`jacobian` (``dg/dy``, ``(B, N, N)``) is optional: only the methods that
    read it (Newton-SOR) call it, and without an override it is computed from :meth:`function`
    by forward-mode automatic differentiation (``N`` Jacobian-vector products; write it out for
    speed where it is known). Both must be differentiable in ``y`` and in the data, so a
    meta-solver can be trained through them. A safeguarded solve runs without autograd
    (``torch.no_grad``): a ``jacobian`` written with reverse-mode ``torch.autograd`` calls fails
    there; forward mode (the default) works.

    A nonlinear system has no right-hand side to measure ``g`` against, so the stopping test is
    absolute unless the subclass overrides :meth:`reference_norm`: ``rtol`` then multiplies 1.
    """

    start: torch.Tensor
    solution: torch.Tensor | None = None


    @abc.abstractmethod
    def function(self, y: torch.Tensor) -> torch.Tensor:
        """``g(y)`` for a batch ``y`` of shape ``(B, N)``."""

    def jacobian(self, y: torch.Tensor) -> torch.Tensor:
        """``dg/dy`` at ``y``, ``(B, N, N)`` (row ``i``, column ``j``: ``dg_i / dy_j``). By
        default, column ``j`` of every instance from one Jacobian-vector product of
        :meth:`function` along the ``j``-th unit vector (forward mode, ``N`` products); it stays
        differentiable in the data ``function`` reads."""
        batch, size = y.shape
        columns = []
        for j in range(size):
            direction = torch.zeros_like(y)
            direction[:, j] = 1.0
            columns.append(torch.func.jvp(self.function, (y,), (direction,))[1])
        return torch.stack(columns, dim=2)

    @abc.abstractmethod
    def index(self, idx) -> NonlinearSystem:
        """The sub-batch at ``idx`` (the driver steps sub-batches of running instances)."""




class InitialValueProblem(_StartedBatch):
    """A batch of autonomous initial-value problems ``x' = f(x)``, ``x(t_0) = start``, integrated
    with one step size ``h`` per instance (R2N2 paper, eq. 3 and sec. 4.3).

    Subclasses hold their per-instance data (batch-leading tensors), set :attr:`start` ``(B, N)``
    and :attr:`step_size` ``(B,)``, and implement :meth:`function` (the right-hand side ``f``,
    batched) and :meth:`index`. An integrator's iterate ``k`` approximates ``x(t_0 + k h)``;
    :attr:`reference` ``(B, T + 1, N)``, if set, holds an accurate trajectory at those times
    (``reference[:, 0] == start``), and :meth:`error` measures iterate ``k`` against it.

    :attr:`error_scale` ``(B,)`` is what a relative tolerance multiplies (ones by default). The
    R2N2 paper weighs the squared error of a step of size ``h`` by ``h^-p`` (sec. 4.3); setting
    ``error_scale = h^(p/2)`` makes the relative error squared exactly that weighted error.
    """

    start: torch.Tensor
    step_size: torch.Tensor
    reference: torch.Tensor | None = None
    error_scale: torch.Tensor | None = None


    @property
    def steps(self) -> int:
        """``T``: the number of steps the reference trajectory covers (0 without one)."""
        return 0 if self.reference is None else int(self.reference.shape[1]) - 1

    @abc.abstractmethod
    def function(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)`` for a batch ``x`` of shape ``(B, N)``."""

    @abc.abstractmethod
    def index(self, idx) -> InitialValueProblem:
        """The sub-batch at ``idx``."""

    def error(self, x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """``||x_b - x_ref(t_0 + k_b h_b)||`` for iterates ``x`` after ``step`` ``(B,)`` steps."""
        if self.reference is None:
            raise ValueError("this initial-value problem has no reference trajectory to measure "
                             "the error against")
        k = step.to(torch.int64)
        if bool((k > self.steps).any()):
            raise ValueError(f"the reference trajectory covers {self.steps} steps; an iterate "
                             f"after {int(k.max())} steps cannot be measured (run at most "
                             f"{self.steps} iterations)")
        target = self.reference[torch.arange(self.batch_size, device=k.device), k]
        return torch.linalg.vector_norm(x - target, dim=1)

    def reference_norm(self) -> torch.Tensor:
        return super().reference_norm() if self.error_scale is None else self.error_scale


    def check_data(self) -> None:
        """Validate the fields a subclass set (call at the end of its ``__post_init__``)."""
        check_tensor("start", self.start, ndim=2)
        check_tensor("step_size", self.step_size, shape=(self.batch_size,))
        if not bool((self.step_size > 0).all()):
            raise ValueError("step_size must be positive")
        if self.reference is not None:
            check_tensor("reference", self.reference, shape=(self.batch_size, None, self.size))
            if not torch.equal(self.reference[:, 0], self.start):
                raise ValueError("reference[:, 0] must equal start (the trajectory begins there)")
        if self.error_scale is not None:
            check_tensor("error_scale", self.error_scale, shape=(self.batch_size,))
            if not bool((self.error_scale > 0).all()):
                raise ValueError("error_scale must be positive")


@dataclass(frozen=True)
class ConeSpec:
    """The cone ``K`` of a cone program in SCS's order: ``{0}^zero x R_+^nonneg x SOC(q_1) x
    ... x SOC(q_k)``, with ``soc = (q_1, ..., q_k)`` and ``SOC(q) = {(t, z) in R x R^(q-1):
    ||z|| <= t}``. Its dual ``K*`` is ``R^zero x R_+^nonneg x SOC(q_1) x ...``."""

    zero: int = 0
    nonneg: int = 0
    soc: tuple[int, ...] = ()

    def __post_init__(self):
        for name in ("zero", "nonneg"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"cones.{name} must be an int >= 0, got {value!r}")
        soc = tuple(self.soc)
        if any(isinstance(q, bool) or not isinstance(q, int) or q < 1 for q in soc):
            raise ValueError(f"cones.soc must hold cone sizes >= 1, got {soc!r}")
        object.__setattr__(self, "soc", soc)

    @property
    def dim(self) -> int:
        """``m``, the number of rows of ``A`` the cone covers."""
        return self.zero + self.nonneg + sum(self.soc)

    def config(self) -> dict:
        return {"zero": self.zero, "nonneg": self.nonneg, "soc": list(self.soc)}


def apply_matrix(operator: torch.Tensor | SharedSparseMatrix, x: torch.Tensor, *,
                 adjoint: bool = False) -> torch.Tensor:
    """``A x`` (or ``A^T x`` with ``adjoint``) for a batch of *columns* ``x`` ``(n, B)``, with
    ``A`` an ``(m, n)`` matrix shared by the batch (dense or :class:`SharedSparseMatrix`) or a
    dense ``(B, m, n)`` batch (:attr:`ConeProgram.operator`). Rows ``(B, n)`` go in as
    ``x.T`` (a view)."""
    if isinstance(operator, SharedSparseMatrix):
        return operator.apply(x, adjoint)
    if operator.ndim == 2:
        return operator.T @ x if adjoint else operator @ x
    matrices = operator.mT if adjoint else operator
    return torch.bmm(matrices, x.T.unsqueeze(-1)).squeeze(-1).T


@dataclass(frozen=True)
class ConeProgram(Problem):
    """A batch of cone programs in SCS's standard form (neural SCS paper, eq. 1)::

        minimize c^T x  s.t.  A x + s = b,  s in K        maximize -b^T y  s.t.  -A^T y + r = c,
                                                                   r = 0, y in K*

    Args:
        matrix: ``A``, ``(m, n)`` shared by the batch or ``(B, m, n)`` per instance (dense).
        rhs: ``b``, ``(B, m)``.
        cost: ``c``, ``(B, n)``.
        cones: the :class:`ConeSpec` shared by the batch (``cones.dim == m``).
        context: optional ``(B, F)`` features of each instance (what a learned accelerator
            may read; the neural SCS paper's ``phi``).
    """

    matrix: torch.Tensor
    rhs: torch.Tensor
    cost: torch.Tensor
    cones: ConeSpec
    context: torch.Tensor | None = None
    _vector = "rhs"  # the batch and dtype; ``size`` is the SCS iterate's length

    def __post_init__(self):
        check_tensor("rhs", self.rhs, ndim=2)
        check_tensor("cost", self.cost, ndim=2)
        batch, m = self.rhs.shape
        n = self.cost.shape[1]
        if self.cost.shape[0] != batch:
            raise ValueError(f"cost must have batch size {batch} like rhs, got shape "
                             f"{tuple(self.cost.shape)}")
        check_tensor("matrix", self.matrix, ndim=(2, 3))
        expected = (m, n) if self.matrix.ndim == 2 else (batch, m, n)
        if tuple(self.matrix.shape) != expected:
            raise ValueError(f"matrix must have shape {expected} to match rhs "
                             f"{tuple(self.rhs.shape)} and cost {tuple(self.cost.shape)}, got "
                             f"{tuple(self.matrix.shape)}")
        if self.matrix.layout != torch.strided:
            raise ValueError("matrix must be dense (a strided tensor)")
        if not isinstance(self.cones, ConeSpec):
            raise TypeError(f"cones must be a ConeSpec, got {type(self.cones).__name__}")
        if self.cones.dim != m:
            raise ValueError(f"the cones cover {self.cones.dim} rows but A has {m}")
        if not (self.matrix.dtype == self.rhs.dtype == self.cost.dtype):
            raise TypeError("matrix, rhs and cost must share a dtype, got "
                            f"{self.matrix.dtype}, {self.rhs.dtype}, {self.cost.dtype}")
        if self.context is not None:
            check_tensor("context", self.context, ndim=2)
            check_batch("context", self.context, batch)

    @property
    def variables(self) -> int:
        """``n``."""
        return int(self.cost.shape[1])

    @property
    def constraints(self) -> int:
        """``m``."""
        return int(self.rhs.shape[1])

    @property
    def size(self) -> int:
        """Length of the SCS iterate ``(u, v)``: ``2 (n + m + 1)``."""
        return 2 * (self.variables + self.constraints + 1)

    @property
    def shared_matrix(self) -> bool:
        return self.matrix.ndim == 2

    @property
    def operator(self) -> torch.Tensor | SharedSparseMatrix:
        """``A`` as its products apply it: :attr:`sparse` where it is not ``None``, else the
        dense matrix (:func:`apply_matrix`)."""
        sparse = self.sparse
        return self.matrix if sparse is None else sparse

    @property
    def sparse(self) -> SharedSparseMatrix | None:
        """The shared matrix in SciPy's sparse form when the products and the solves of SCS's
        linear step are cheaper that way (a sparse ``A`` shared by the batch on the CPU, as in
        Kalman filtering: :func:`~metasolve.sparse.shared_sparse`), else ``None``."""
        return shared_sparse(self.matrix) if self.shared_matrix else None

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` ``(B, n)``."""
        return apply_matrix(self.operator, x.T).T

    def rmatvec(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y`` for ``y`` ``(B, m)``."""
        return apply_matrix(self.operator, y.T, adjoint=True).T

    def data_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(||b||, ||c||)`` per instance (1 where a vector is zero): SCS's normalisation
        divides ``b`` and ``c`` by them, which rescales ``x, s`` by ``1/||b||`` and ``y`` by
        ``1/||c||`` and leaves the cones unchanged."""
        def build():
            beta = torch.linalg.vector_norm(self.rhs, dim=1)
            gamma = torch.linalg.vector_norm(self.cost, dim=1)
            return (torch.where(beta > 0, beta, torch.ones_like(beta)),
                    torch.where(gamma > 0, gamma, torch.ones_like(gamma)))

        return self._of_data("data_scales", build)

    def data_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(||b||_inf, ||c||_inf)`` per instance, the data's part of SCS's relative
        stopping tolerances."""
        return self._of_data("data_norms", lambda: (
            self.rhs.abs().amax(dim=1), self.cost.abs().amax(dim=1)))

    def _of_data(self, name: str, build):
        # Kept on the program (read at every stopping test), unless b or c carry a gradient:
        # a cached graph would be shared by every backward pass through this program.
        derived = self.__dict__.get(DERIVED)
        if derived is None:
            derived = {}
            object.__setattr__(self, DERIVED, derived)
        cached = derived.get(name)
        if cached is None:
            cached = build()
            if not (self.rhs.requires_grad or self.cost.requires_grad):
                derived[name] = cached
        return cached

    def index(self, idx) -> ConeProgram:
        matrix = self.matrix if self.shared_matrix else self.matrix[idx]
        context = None if self.context is None else self.context[idx]
        return ConeProgram(matrix, self.rhs[idx], self.cost[idx], self.cones, context)

    def check_batch(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """An SCS iterate ``(u, v)`` ``(B, 2 (n + m + 1))``."""
        check_tensor(name, value, shape=(self.batch_size, self.size))
        if value.dtype != self.dtype:
            raise TypeError(f"{name} must be {self.dtype} like the program, got {value.dtype}")
        return value
