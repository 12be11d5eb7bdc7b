"""Batches of sparse matrices that never densify: the operators of a PDE family whose
coefficients vary from instance to instance.

A :class:`SparsePattern` is the structure of a compressed sparse row (CSR) matrix: row pointers
``crow_indices`` and column indices ``col_indices`` (int64, on the device the work runs on). A
:class:`SparseBatch` is ``B`` matrices on one pattern, in one of two layouts:

* **shared pattern** (``pattern.blocks == 1``): every instance has the pattern's ``N x N``
  structure and its own values, ``values`` of shape ``(B, nnz)`` (entry ``k`` of instance ``b``
  sits at row ``row(k)``, column ``col_indices[k]``). The indices are stored once for the
  batch: a batch costs ``B nnz`` values plus ``nnz + N + 1`` indices. This is the common case of
  one mesh with per-instance coefficients.
* **different patterns** (``pattern.blocks == B``): the pattern is the block-diagonal
  ``(B N) x (B N)`` matrix of all instances (block ``b`` holds instance ``b``, with column
  indices offset by ``b N``), and ``values`` is its ``(nnz,)`` entries.
  :meth:`SparseBatch.stack` builds it from a list of matrices.

Every operation works on the entries, never on a dense matrix: a product gathers ``x`` at the
column indices, multiplies by the values and adds the products into their rows
(``index_add``), in chunks of the entries so that its temporaries stay small; the diagonal is a
gather; a triangular solve ``(D + s T) y = c`` (``T`` the strictly lower or strictly upper part)
runs over a *level schedule* of the pattern, computed once per pattern: rows whose
dependencies are all solved form one level and are solved together, vectorised over the rows
of the level and the batch. The level of row ``i`` is the longest chain of strictly lower
(upper) entries that ends in it, so the schedule reproduces the sequential sweep exactly; a
5-point stencil on an ``n x n`` grid in natural order has ``2 n - 1`` levels.

Everything is differentiable in ``values`` (and in the vectors) by autograd, and runs on
whatever device the pattern and values are on.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from .kernels import compiling
from .validation import check_count, check_tensor

#: Entries times vectors handled at once by a product outside autograd (the size of its two
#: temporaries): small on a CPU, where large fresh buffers cost page faults, larger on an
#: accelerator, where each chunk is a kernel launch. Under autograd a product takes one chunk.
CHUNK_ELEMENTS = {"cpu": 2 ** 18}
CHUNK_ELEMENTS_DEVICE = 2 ** 21

PARTS = ("full", "lower", "upper")


def _index_tensor(name: str, value, device=None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must hold integers (int64 or int32), got dtype {value.dtype}")
    if value.ndim != 1:
        raise ValueError(f"{name} must have 1 dimension, got shape {tuple(value.shape)}")
    return value.to(dtype=torch.int64, device=device)


class _Schedule:
    """A triangular solve's plan: rows in level order, the strict-part entries of each level's
    rows (value positions, columns, row within the level, row) and the level bounds."""

    def __init__(self, rows, positions, cols, local, entry_rows, bounds, diagonals=None):
        self.rows, self.positions, self.cols, self.local = rows, positions, cols, local
        self.entry_rows = entry_rows  # the (global) row of each entry
        self.bounds = bounds  # [(row start, row end, entry start, entry end)] per level
        #: The value position of each row's diagonal entry, rows in level order (``None``
        #: where the pattern lacks one): a level slices it instead of looking them up.
        self.diagonals = diagonals

    @property
    def levels(self) -> int:
        return len(self.bounds)


class SparsePattern:
    """The structure of a sparse matrix in CSR form, shared by a batch (module docstring).

    Args:
        crow_indices: ``(blocks * N + 1,)`` row pointers: the entries of row ``i`` are
            ``crow_indices[i]:crow_indices[i + 1]``; ``crow_indices[0] == 0``.
        col_indices: ``(nnz,)`` column of each entry, strictly increasing within each row (no
            duplicates).
        blocks: ``1`` for a pattern shared by the batch (``N x N``), or the number of
            instances for the block-diagonal pattern of a batch with different patterns; then
            every entry of the rows of block ``b`` lies in the columns of block ``b``.

    Int32 indices are converted to int64. The indices stay on their device; everything derived
    from them (row of each entry, diagonal positions, level schedules) is computed once, when
    first needed, and kept.

    Example:
        >>> import torch, metasolve as ms
        >>> pattern = ms.SparsePattern(torch.tensor([0, 2, 4]), torch.tensor([0, 1, 0, 1]))
        >>> pattern.size, pattern.nnz, pattern.levels(upper=False)
        (2, 4, 2)
    """

    def __init__(self, crow_indices: torch.Tensor, col_indices: torch.Tensor, *,
                 blocks: int = 1, _checked: bool = False):
        crow = _index_tensor("crow_indices", crow_indices)
        col = _index_tensor("col_indices", col_indices)
        if col.device != crow.device:
            raise TypeError(f"crow_indices and col_indices must be on one device, got "
                            f"{crow.device} and {col.device}")
        blocks = check_count("blocks", blocks, minimum=1)
        rows = crow.numel() - 1
        if rows < 1 or rows % blocks:
            raise ValueError(f"crow_indices must have blocks * N + 1 entries (blocks = {blocks},"
                             f" N >= 1), got {crow.numel()}")
        self.crow_indices, self.col_indices, self.blocks = crow, col, blocks
        self.size = rows // blocks
        self._derived: dict = {}
        if not _checked:
            self._validate()

    def _validate(self) -> None:
        crow, col = self.crow_indices, self.col_indices
        if int(crow[0]) != 0 or int(crow[-1]) != col.numel():
            raise ValueError(f"crow_indices must start at 0 and end at nnz = {col.numel()}, "
                             f"got {int(crow[0])} and {int(crow[-1])}")
        lengths = crow.diff()
        if bool((lengths < 0).any()):
            raise ValueError("crow_indices must be non-decreasing")
        if col.numel() == 0:
            return
        rows = self.rows
        low = (rows // self.size) * self.size
        if bool(((col < low) | (col >= low + self.size)).any()):
            where = "its block's columns" if self.blocks > 1 else f"[0, {self.size})"
            raise ValueError(f"col_indices must lie in {where}")
        same_row = rows[1:] == rows[:-1]
        if bool((same_row & (col[1:] <= col[:-1])).any()):
            raise ValueError("col_indices must be strictly increasing within each row (sorted,"
                             " no duplicate entries)")

    # --- sizes ------------------------------------------------------------------------------

    @property
    def nnz(self) -> int:
        return int(self.col_indices.numel())

    @property
    def rows_total(self) -> int:
        """``blocks * N``: the rows of the whole pattern."""
        return self.blocks * self.size

    @property
    def device(self) -> torch.device:
        return self.crow_indices.device

    def storage_bytes(self) -> int:
        """Bytes of the two index arrays (what the pattern adds to its values' storage)."""
        return sum(t.numel() * t.element_size() for t in (self.crow_indices, self.col_indices))

    def to(self, device) -> SparsePattern:
        """The pattern on ``device`` (itself if it is there already)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return SparsePattern(self.crow_indices.to(device), self.col_indices.to(device),
                             blocks=self.blocks, _checked=True)

    def __repr__(self) -> str:
        blocks = "" if self.blocks == 1 else f", blocks={self.blocks}"
        return f"SparsePattern(size={self.size}, nnz={self.nnz}{blocks}, device={self.device})"

    # --- derived structure (computed once) -----------------------------------------------------

    def _cached(self, key, build):
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    @property
    def rows(self) -> torch.Tensor:
        """``(nnz,)`` the row of each entry."""
        return self._cached("rows", lambda: torch.repeat_interleave(
            torch.arange(self.rows_total, device=self.device), self.crow_indices.diff()))

    def diagonal_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positions, present)``, both ``(blocks * N,)``: where each row's diagonal entry sits
        among the values, and whether the pattern has one (else its position is 0)."""
        def build():
            on = (self.col_indices == self.rows).nonzero().squeeze(1)
            positions = torch.zeros(self.rows_total, dtype=torch.int64, device=self.device)
            present = torch.zeros(self.rows_total, dtype=torch.bool, device=self.device)
            positions[self.rows[on]] = on
            present[self.rows[on]] = True
            return positions, present
        return self._cached("diagonal", build)

    def entries(self, part: str) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """``(positions, cols, rows)`` of the entries of ``part``: ``"full"`` (all; positions
        ``None``), ``"lower"`` or ``"upper"`` (the strictly lower or upper triangle)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        if part == "full":
            return None, self.col_indices, self.rows

        def build():
            rows, cols = self.rows, self.col_indices
            keep = (cols < rows) if part == "lower" else (cols > rows)
            positions = keep.nonzero().squeeze(1)
            return positions, cols[positions], rows[positions]
        return self._cached(("entries", part), build)

    def levels(self, upper: bool = False) -> int:
        """The number of levels of the forward (``upper=False``) or backward sweep."""
        return self.schedule(upper).levels

    def schedule(self, upper: bool = False, transpose: bool = False) -> _Schedule:
        """The level schedule of the solve with the strictly lower (``upper=False``) or strictly
        upper part (module docstring), or with that part's transpose (``transpose=True``),
        computed once on the host and kept on the device."""
        return self._cached(("schedule", upper, transpose),
                            lambda: self._build_schedule(upper, transpose))

    def _build_schedule(self, upper: bool, transpose: bool = False) -> _Schedule:
        positions, cols, rows = self._entries_on_host("upper" if upper else "lower")
        if transpose:  # entry (i, j) of the part is entry (j, i) of its transpose
            order = np.lexsort((rows, cols))  # the transpose's row order
            positions, cols, rows = positions[order], rows[order], cols[order]
        total = self.rows_total
        level = _longest_chains(rows, cols, total)
        count = int(level.max()) + 1 if total else 0
        order = np.argsort(level, kind="stable")  # rows by level, in row order within one
        row_bounds = np.concatenate([[0], np.cumsum(np.bincount(level, minlength=count))])
        rank = np.empty(total, dtype=np.int64)
        rank[order] = np.arange(total)
        entry_level = level[rows]
        by_level = np.argsort(entry_level, kind="stable")  # entries are in row order already
        entry_bounds = np.concatenate([[0], np.cumsum(np.bincount(entry_level,
                                                                  minlength=count))])
        local = rank[rows[by_level]] - row_bounds[entry_level[by_level]]
        bounds = [(int(row_bounds[k]), int(row_bounds[k + 1]), int(entry_bounds[k]),
                   int(entry_bounds[k + 1])) for k in range(count)]

        def dev(array):
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)

        diagonal, present = self.diagonal_positions()
        rows_in_order = dev(order)
        diagonals = diagonal.index_select(0, rows_in_order) if bool(present.all()) else None
        return _Schedule(rows_in_order, dev(positions[by_level]), dev(cols[by_level]),
                         dev(local), dev(rows[by_level]), bounds, diagonals)

    def _entries_on_host(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(positions, cols, rows)`` of the strictly lower or upper entries as NumPy arrays,
        for building a plan once (not kept: :meth:`entries` keeps what products need)."""
        crow = self.crow_indices.cpu().numpy()
        cols = self.col_indices.cpu().numpy()
        rows = np.repeat(np.arange(self.rows_total), np.diff(crow))
        positions = np.nonzero(cols < rows if part == "lower" else cols > rows)[0]
        return positions, cols[positions], rows[positions]

    def lower_triangle(self) -> tuple[SparsePattern, torch.Tensor]:
        """``(pattern, positions)``: the pattern of the lower triangle with the diagonal (the
        pattern of an incomplete Cholesky factor) and the positions of its entries among this
        pattern's values; computed once."""
        def build():
            keep = (self.col_indices <= self.rows).nonzero().squeeze(1)
            counts = torch.bincount(self.rows[keep], minlength=self.rows_total)
            crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            return SparsePattern(crow, self.col_indices[keep], blocks=self.blocks,
                                 _checked=True), keep
        return self._cached("lower-triangle", build)

    def incomplete_cholesky_plan(self) -> _CholeskyPlan:
        """The level-by-level plan of :meth:`SparseBatch.incomplete_cholesky` on this
        (structurally symmetric) pattern, computed on the host. It is built on each call and
        not kept: only the factorization reads it, and its indices would otherwise stay as
        long as the pattern (at 256 x 256 and a batch of 32, a tenth of the values' storage)."""
        return _CholeskyPlan(self)

    def select_blocks(self, blocks: torch.Tensor) -> tuple[SparsePattern, torch.Tensor]:
        """The block-diagonal pattern of the blocks ``blocks`` (int64 indices, in that order)
        and the positions of its entries among this pattern's values."""
        size = self.size
        crow = self.crow_indices.cpu().numpy()
        col = self.col_indices.cpu().numpy()
        chosen = blocks.cpu().numpy().astype(np.int64)
        starts, ends = crow[chosen * size], crow[(chosen + 1) * size]
        counts = ends - starts
        offsets = np.concatenate([[0], np.cumsum(counts)])
        picked = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        shift = np.repeat((np.arange(len(chosen)) - chosen) * size, counts)
        lengths = np.diff(crow).reshape(self.blocks, size)[chosen].reshape(-1)
        new_crow = np.concatenate([[0], np.cumsum(lengths)])
        device = self.device
        pattern = SparsePattern(torch.from_numpy(new_crow).to(device),
                                torch.from_numpy(col[picked] + shift).to(device),
                                blocks=len(chosen), _checked=True)
        return pattern, torch.from_numpy(picked).to(device)


def _longest_chains(rows: np.ndarray, cols: np.ndarray, total: int) -> np.ndarray:
    """Level of every row of a triangular dependency graph: row ``rows[k]`` depends on row
    ``cols[k]``; a row without dependencies has level 0, any other 1 + the largest level of its
    dependencies. Kahn's algorithm, one vectorised pass per level (``O(nnz + levels)``)."""
    level = np.zeros(total, dtype=np.int64)
    waiting = np.bincount(rows, minlength=total)
    order = np.argsort(cols, kind="stable")
    dependents = rows[order]
    pointer = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=total))])
    frontier = np.nonzero(waiting == 0)[0]
    depth = 0
    while frontier.size:
        level[frontier] = depth
        starts = pointer[frontier]
        counts = pointer[frontier + 1] - starts
        offsets = np.cumsum(counts)
        if not offsets.size or offsets[-1] == 0:
            break
        reached = dependents[np.repeat(starts - offsets + counts, counts)
                             + np.arange(offsets[-1])]
        np.subtract.at(waiting, reached, 1)
        frontier = np.unique(reached[waiting[reached] == 0])
        depth += 1
    return level


class _CholeskyPlan:
    """IC(0) on a structurally symmetric pattern, as a sequence of vectorised steps.

    The factor ``L`` has the pattern of the lower triangle (with the diagonal). Row ``i`` of
    ``L`` needs the rows ``k < i`` of its pattern, so the rows go in the levels of the forward
    sweep; within a row, entry ``L_ik`` needs the row's earlier entries ``L_ij`` (``j < k``):

        ``L_ik = (a_ik - sum_j L_ij L_kj) / L_kk``,  ``L_ii = sqrt(a_ii - sum_{k<i} L_ik^2)``,

    the sums over the ``j`` where both entries are in the pattern (Saad, "Iterative Methods
    for Sparse Linear Systems", sec. 10.3.2, row by row). A step computes the ``s``-th entry
    of every row of one level (``s = 0, 1, ...``), then the level's diagonals. Positions are
    into the factor's values (``L``) or the matrix's (``A``).
    """

    def __init__(self, pattern: SparsePattern):
        lower, keep = pattern.lower_triangle()
        _, cols, rows = pattern._entries_on_host("lower")
        _, upper_cols, upper_rows = pattern._entries_on_host("upper")
        mirrored = np.lexsort((upper_rows, upper_cols))  # (col, row) of the upper entries
        if not (np.array_equal(rows, upper_cols[mirrored])
                and np.array_equal(cols, upper_rows[mirrored])):
            raise ValueError("incomplete Cholesky needs a structurally symmetric pattern "
                             "(entry (i, j) present exactly where (j, i) is)")
        total = pattern.rows_total
        lower_crow = lower.crow_indices.cpu().numpy()
        lower_cols = lower.col_indices.cpu().numpy()
        lower_rows = np.repeat(np.arange(total), np.diff(lower_crow))
        diagonal = lower_crow[1:] - 1  # the diagonal closes each row of the lower triangle
        if not np.array_equal(lower_cols[diagonal], np.arange(total)):
            raise ValueError("incomplete Cholesky needs every diagonal entry in the pattern")
        strict = np.nonzero(lower_cols < lower_rows)[0]  # L's strictly lower entries
        s_rows, s_cols = lower_rows[strict], lower_cols[strict]
        rank = strict - lower_crow[s_rows]  # the entry's place within its row
        # The products L_ij L_kj of entry (i, k): pairs of strictly lower entries sharing the
        # column j, the later row first; only those whose (i, k) is in the pattern count.
        by_col = np.lexsort((s_rows, s_cols))
        group = np.concatenate([[0], np.cumsum(np.bincount(s_cols, minlength=total))])
        within = np.arange(len(by_col)) - group[s_cols[by_col]]
        offsets = np.cumsum(within)
        first = np.repeat(np.arange(len(by_col)), within)
        second = np.repeat(group[s_cols[by_col]], within) + (
            np.arange(offsets[-1] if len(offsets) else 0) - np.repeat(offsets - within, within))
        row_i, row_k = s_rows[by_col[first]], s_rows[by_col[second]]
        keys = s_rows * total + s_cols  # increasing: the entries are in CSR order
        target = np.searchsorted(keys, row_i * total + row_k)
        found = target < len(keys)
        found[found] = keys[target[found]] == (row_i * total + row_k)[found]
        pair_target = target[found]  # index into the strict entries
        pair_ij, pair_kj = strict[by_col[first[found]]], strict[by_col[second[found]]]

        level = _longest_chains(rows, cols, total)
        entry_level = level[s_rows]
        pair_order = np.argsort(pair_target, kind="stable")
        pair_target, pair_ij, pair_kj = (a[pair_order] for a in (pair_target, pair_ij, pair_kj))
        pair_bounds = np.searchsorted(pair_target, np.arange(len(strict) + 1))

        self.lower = lower  # the factor's pattern
        levels = int(level.max()) + 1 if total else 0
        by_level = np.argsort(entry_level, kind="stable")
        entry_bounds = np.searchsorted(entry_level[by_level], np.arange(levels + 1))
        row_order = np.argsort(level, kind="stable")
        row_bounds = np.searchsorted(level[row_order], np.arange(levels + 1))
        matrix_of = keep.cpu().numpy()  # L position -> A position
        # Each kind of index is one array for the whole plan, and a step holds the bounds of
        # its slices: thousands of small tensors would cost more than their contents.
        arrays = {name: [] for name in ("position", "a_position", "pivot", "ij", "kj", "into",
                                        "rows", "diagonal", "a_diagonal", "squares", "local")}
        filled = dict.fromkeys(arrays, 0)

        def take(**parts):
            bounds = []
            for name, part in parts.items():
                arrays[name].append(part)
                bounds.append((filled[name], filled[name] + len(part)))
                filled[name] += len(part)
            return bounds

        self.steps = []  # per level: ([entry steps], diagonal step), as slice bounds
        for lv in range(levels):
            entries = by_level[entry_bounds[lv]:entry_bounds[lv + 1]]
            entry_steps = []
            for r in range(int(rank[entries].max()) + 1 if len(entries) else 0):
                chosen = entries[rank[entries] == r]
                spans = [np.arange(pair_bounds[e], pair_bounds[e + 1]) for e in chosen]
                pairs = np.concatenate(spans)
                local = np.repeat(np.arange(len(chosen)), [len(span) for span in spans])
                position = strict[chosen]
                entry_steps.append(take(position=position, a_position=matrix_of[position],
                                        pivot=diagonal[s_cols[chosen]], ij=pair_ij[pairs],
                                        kj=pair_kj[pairs], into=local))
            rows_here = row_order[row_bounds[lv]:row_bounds[lv + 1]]
            sorter = np.argsort(rows_here)
            local_rows = sorter[np.searchsorted(rows_here[sorter], s_rows[entries])]
            self.steps.append((entry_steps, take(
                rows=rows_here, diagonal=diagonal[rows_here],
                a_diagonal=matrix_of[diagonal[rows_here]], squares=strict[entries],
                local=local_rows)))
        self.index = {name: torch.from_numpy(np.ascontiguousarray(
            np.concatenate(parts) if parts else np.zeros(0), dtype=np.int64)).to(pattern.device)
            for name, parts in arrays.items()}

    def entry_steps(self, level: int):
        """The level's entry steps: ``(position, a_position, pivot, ij, kj, into)`` each."""
        names = ("position", "a_position", "pivot", "ij", "kj", "into")
        for bounds in self.steps[level][0]:
            yield tuple(self.index[name][lo:hi]
                        for name, (lo, hi) in zip(names, bounds, strict=True))

    def diagonal_step(self, level: int):
        """The level's ``(rows, diagonal, a_diagonal, squares, local)``."""
        names = ("rows", "diagonal", "a_diagonal", "squares", "local")
        return tuple(self.index[name][lo:hi]
                     for name, (lo, hi) in zip(names, self.steps[level][1], strict=True))


class SparseBatch:
    """``B`` sparse ``N x N`` matrices on one :class:`SparsePattern` (module docstring).

    Args:
        pattern: the structure; ``pattern.blocks`` is 1 (shared) or ``B`` (block diagonal).
        values: ``(B, nnz)`` with a shared pattern, ``(nnz,)`` with a block-diagonal one; a
            finite floating tensor on the pattern's device. It is kept as given (not copied),
            so gradients flow to it.

    :class:`~metasolve.problems.LinearSystem` takes one as its ``matrix``. Build one from
    SciPy or torch sparse matrices with :meth:`stack`, or from dense ``(B, N, N)`` with
    :meth:`from_dense`.

    Example:
        >>> import torch, metasolve as ms
        >>> pattern = ms.SparsePattern(torch.tensor([0, 2, 4]), torch.tensor([0, 1, 0, 1]))
        >>> values = torch.tensor([[2.0, -1.0, -1.0, 2.0], [4.0, 1.0, 1.0, 3.0]])
        >>> matrices = ms.SparseBatch(pattern, values)
        >>> matrices.matvec(torch.ones(2, 2)).tolist(), matrices.diagonal().tolist()
        ([[1.0, 1.0], [5.0, 4.0]], [[2.0, 2.0], [4.0, 3.0]])
    """

    def __init__(self, pattern: SparsePattern, values: torch.Tensor):
        if not isinstance(pattern, SparsePattern):
            raise TypeError(f"pattern must be a SparsePattern, got {type(pattern).__name__}")
        shape = (None, pattern.nnz) if pattern.blocks == 1 else (pattern.nnz,)
        check_tensor("values", values, shape=shape)
        if values.device != pattern.device:
            raise TypeError(f"values must be on the pattern's device {pattern.device}, got "
                            f"{values.device}")
        if pattern.blocks == 1 and values.shape[0] == 0:
            raise ValueError("values must hold at least one instance, got shape "
                             f"{tuple(values.shape)}")
        self.pattern, self.values = pattern, values

    @classmethod
    def _derived(cls, pattern: SparsePattern, values: torch.Tensor) -> SparseBatch:
        """A batch made from a checked one (a sub-batch, a copy): not checked again."""
        batch = cls.__new__(cls)
        batch.pattern, batch.values = pattern, values
        return batch

    # --- sizes ------------------------------------------------------------------------------

    @property
    def shared_pattern(self) -> bool:
        """Whether every instance has the pattern's structure (``pattern.blocks == 1``)."""
        return self.pattern.blocks == 1

    @property
    def batch_size(self) -> int:
        return int(self.values.shape[0]) if self.shared_pattern else self.pattern.blocks

    @property
    def size(self) -> int:
        """``N``, the rows (and columns) of each instance."""
        return self.pattern.size

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.batch_size, self.size, self.size)

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def requires_grad(self) -> bool:
        return self.values.requires_grad

    def storage_bytes(self) -> int:
        """Bytes of the CSR storage of the batch: the values and the pattern's indices."""
        return self.values.numel() * self.values.element_size() + self.pattern.storage_bytes()

    def __repr__(self) -> str:
        return (f"SparseBatch(batch_size={self.batch_size}, size={self.size}, "
                f"pattern={self.pattern!r}, dtype={self.dtype})")

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def stack(cls, matrices, *, dtype: torch.dtype | None = None,
              device: torch.device | str | None = None) -> SparseBatch:
        """A batch from a list of ``N x N`` matrices: SciPy sparse matrices (anything with
        ``tocsr()``) or torch tensors (sparse or dense). Entries stored as explicit zeros are
        kept. If every matrix has the same pattern the batch shares it, otherwise it gets the
        block-diagonal pattern of all of them.

        Args:
            dtype: of the values (default: the first matrix's; float64 for SciPy's).
            device: where the batch lives (default: the first torch matrix's, else the CPU).
        """
        if isinstance(matrices, (torch.Tensor, str)) or not hasattr(matrices, "__len__"):
            raise TypeError(f"matrices must be a list of matrices, got {type(matrices).__name__}")
        if not len(matrices):
            raise ValueError("matrices must hold at least one matrix")
        parts = [_csr_parts(f"matrices[{i}]", m) for i, m in enumerate(matrices)]
        size = parts[0][3]
        for i, (_, _, _, n) in enumerate(parts):
            if n != size:
                raise ValueError(f"matrices must all be {size} x {size}; matrices[{i}] is "
                                 f"{n} x {n}")
        first = parts[0][2]
        dtype = first.dtype if dtype is None else dtype
        if device is None:
            device = next((m.device for m in matrices if isinstance(m, torch.Tensor)), "cpu")
        crow0, col0 = parts[0][0], parts[0][1]
        if all(torch.equal(c, crow0) and torch.equal(k, col0) for c, k, _, _ in parts[1:]):
            pattern = SparsePattern(crow0.to(device), col0.to(device))
            values = torch.stack([v for _, _, v, _ in parts]).to(device=device, dtype=dtype)
            return cls(pattern, values)
        nnz = torch.tensor([0] + [c[-1].item() for c, _, _, _ in parts]).cumsum(0)
        crow = torch.cat([parts[0][0][:1]] + [c[1:] + nnz[i] for i, (c, _, _, _)
                                              in enumerate(parts)])
        col = torch.cat([k + i * size for i, (_, k, _, _) in enumerate(parts)])
        values = torch.cat([v for _, _, v, _ in parts])
        pattern = SparsePattern(crow.to(device), col.to(device), blocks=len(parts))
        return cls(pattern, values.to(device=device, dtype=dtype))

    @classmethod
    def from_dense(cls, matrices: torch.Tensor) -> SparseBatch:
        """A batch on the union of the nonzero patterns of dense ``(B, N, N)`` matrices (every
        instance gets every position that is nonzero in any of them). Differentiable: the
        values are gathered from ``matrices``."""
        check_tensor("matrices", matrices, ndim=3)
        batch, n, m = matrices.shape
        if n != m:
            raise ValueError(f"matrices must be square, got shape {tuple(matrices.shape)}")
        rows, cols = (matrices.detach() != 0).any(dim=0).nonzero().unbind(1)
        crow = torch.zeros(n + 1, dtype=torch.int64, device=matrices.device)
        crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
        return cls(SparsePattern(crow, cols), matrices[:, rows, cols])

    @classmethod
    def from_shared(cls, matrix: torch.Tensor, batch_size: int) -> SparseBatch:
        """A torch sparse ``(N, N)`` matrix shared by ``batch_size`` instances, as a batch whose
        values are an expanded view (no copy). The pattern is computed once per matrix."""
        def build():
            crow, col, values, _ = _csr_parts("matrix", matrix)
            return SparsePattern(crow, col), values

        pattern, values = per_matrix(matrix, "pattern", build)
        return cls(pattern, values.unsqueeze(0).expand(batch_size, -1))

    # --- the batch ----------------------------------------------------------------------------

    def index(self, idx) -> SparseBatch:
        """The sub-batch at ``idx`` (a slice, index tensor or boolean mask)."""
        if self.shared_pattern:
            values = self.values[idx]
            if values.ndim != 2 or not values.shape[0]:
                raise ValueError("index a SparseBatch with a slice, an index tensor or a mask "
                                 "that keeps at least one instance")
            return SparseBatch._derived(self.pattern, values)
        chosen = torch.arange(self.batch_size)[idx.cpu() if isinstance(idx, torch.Tensor)
                                               else idx].reshape(-1)
        if not chosen.numel():
            raise ValueError("the sub-batch is empty")
        pattern, picked = self.pattern.select_blocks(chosen)
        values = self.values[picked]
        # One block is a shared pattern with one instance: values (1, nnz).
        return SparseBatch._derived(pattern, values.unsqueeze(0) if pattern.blocks == 1
                                    else values)

    def __getitem__(self, idx) -> SparseBatch:
        return self.index(idx)

    def detach(self) -> SparseBatch:
        return SparseBatch._derived(self.pattern, self.values.detach())

    def to(self, device=None, dtype: torch.dtype | None = None) -> SparseBatch:
        """The batch on ``device`` and/or with values of ``dtype`` (``to(torch.float64)`` works
        as for a tensor)."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        pattern = self.pattern if device is None else self.pattern.to(device)
        # Checked when built; a copy on another device or in another dtype is not checked again.
        return SparseBatch._derived(pattern, self.values.to(device=pattern.device, dtype=dtype))

    def to_dense(self) -> torch.Tensor:
        """The ``(B, N, N)`` dense matrices (for checks on small systems: ``B N^2`` entries)."""
        batch, n = self.batch_size, self.size
        rows, cols = self.pattern.rows, self.pattern.col_indices
        dense = self.values.new_zeros(batch, n * n)
        if self.shared_pattern:
            return dense.index_add(1, rows * n + cols, self.values).reshape(batch, n, n)
        return dense.reshape(-1).index_add(0, rows * n + cols % n, self.values).reshape(
            batch, n, n)

    def strictly_lower(self) -> SparseBatch:
        """The strictly lower triangular parts ``L`` (``A = L + D + U``), on a pattern of their
        own (their values are copied: ``L`` holds about half the entries)."""
        return self._part("lower")

    def strictly_upper(self) -> SparseBatch:
        """The strictly upper triangular parts ``U``, as :meth:`strictly_lower`."""
        return self._part("upper")

    def _part(self, part: str) -> SparseBatch:
        positions, cols, rows = self.pattern.entries(part)
        lengths = torch.bincount(rows, minlength=self.pattern.rows_total)
        crow = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        pattern = SparsePattern(crow, cols, blocks=self.pattern.blocks, _checked=True)
        return SparseBatch(pattern, self.values[..., positions])

    # --- products and solves --------------------------------------------------------------------

    def _flat(self, x: torch.Tensor, name: str = "x") -> tuple[torch.Tensor, tuple]:
        """``x`` ``(B, N)`` or ``(B, K, N)`` as ``(R, K, M)`` on the pattern's rows (``R = B``,
        ``M = N`` for a shared pattern; ``R = 1``, ``M = B N`` for a block-diagonal one)."""
        batch, n = self.batch_size, self.size
        if x.ndim not in (2, 3) or x.shape[0] != batch or x.shape[-1] != n:
            raise ValueError(f"{name} must have shape ({batch}, {n}) or ({batch}, K, {n}), got "
                             f"{tuple(x.shape)}")
        if x.dtype != self.dtype or x.device != self.device:
            raise TypeError(f"{name} must be {self.dtype} on {self.device} like the matrices, "
                            f"got {x.dtype} on {x.device}")
        shape = tuple(x.shape)
        x3 = x.reshape(batch, -1, n)
        if not self.shared_pattern:
            x3 = x3.transpose(0, 1).reshape(1, x3.shape[1], batch * n)
        return x3, shape

    def _unflat(self, y3: torch.Tensor, shape: tuple) -> torch.Tensor:
        if not self.shared_pattern:
            y3 = y3.reshape(y3.shape[1], self.batch_size, self.size).transpose(0, 1)
        return y3.reshape(shape)

    def _rows_of_values(self) -> torch.Tensor:
        return self.values if self.shared_pattern else self.values.unsqueeze(0)

    def matvec(self, x: torch.Tensor, part: str = "full") -> torch.Tensor:
        """``A_b x_b`` for ``x`` of shape ``(B, N)``, or ``(B, K, N)`` (``K`` vectors per
        instance); with ``part="lower"`` or ``"upper"`` the product with the strictly lower or
        strictly upper part only."""
        x3, shape = self._flat(x)
        positions, cols, rows = self.pattern.entries(part)
        values = self._rows_of_values()
        count_r, count_k, width = x3.shape
        flat = x3.reshape(count_r * count_k, width)  # one row per vector: gathers along rows
        out = torch.zeros(flat.shape, dtype=flat.dtype, device=flat.device)
        count = cols.numel()
        graph = torch.is_grad_enabled() and (values.requires_grad or flat.requires_grad)
        limit = CHUNK_ELEMENTS.get(flat.device.type, CHUNK_ELEMENTS_DEVICE)
        step = count if graph else max(1, limit // flat.shape[0])
        for start in range(0, count, max(step, 1)):
            end = min(count, start + step)
            v = values[:, start:end] if positions is None else values.index_select(
                1, positions[start:end])
            gathered = torch.gather(flat, 1, cols[start:end].expand(flat.shape[0], -1))
            grouped = gathered.view(count_r, count_k, -1)
            if graph:
                gathered = (grouped * v.unsqueeze(1)).reshape(gathered.shape)
            else:
                grouped.mul_(v.unsqueeze(1))
            out.index_add_(1, rows[start:end], gathered)
        return self._unflat(out.view(x3.shape), shape)

    def diagonal(self) -> torch.Tensor:
        """``(B, N)``: the diagonal of each instance (0 where the pattern has no entry)."""
        positions, present = self.pattern.diagonal_positions()
        values = self._rows_of_values()
        diag = torch.where(present, values.index_select(1, positions), 0.0)
        return diag.reshape(self.batch_size, self.size)

    def solve_triangular(self, rhs: torch.Tensor, *, upper: bool = False,
                         scale: float | torch.Tensor = 1.0,
                         diagonal: torch.Tensor | None = None,
                         transpose: bool = False) -> torch.Tensor:
        """``y`` with ``(D + s T) y = rhs``: ``T`` the strictly lower part (``upper=False``,
        forward substitution) or the strictly upper part (backward), ``D`` the diagonal, ``s``
        the number or per-instance ``(B,)`` tensor ``scale`` (``s = 1``: the triangle of ``A``
        itself; ``s = omega``: an SOR sweep). ``rhs`` is ``(B, N)`` or ``(B, K, N)``; the
        diagonal must have no zero (``diagonal``, ``(B, N)``: use it instead of
        :meth:`diagonal`, e.g. one computed once for many solves). Runs over the pattern's
        level schedule (module docstring). ``transpose=True`` solves with the transpose of
        that part instead, ``(D + s T^T) y = rhs``: the backward sweep with ``L^T`` of a
        factor ``L`` stored as its lower triangle (:meth:`incomplete_cholesky`).
        """
        c3, shape = self._flat(rhs, "rhs")
        if diagonal is not None and tuple(diagonal.shape) not in ((self.size,),
                                                                  (self.batch_size, self.size)):
            raise ValueError(f"diagonal must have shape ({self.batch_size}, {self.size}) or "
                             f"({self.size},), got {tuple(diagonal.shape)}")
        count_r, count_k, width = c3.shape
        factor, per_row = 1.0, False  # the scale as alpha of index_add, or with the values
        if isinstance(scale, torch.Tensor):
            if tuple(scale.shape) not in ((self.batch_size,), (self.batch_size, 1)):
                raise ValueError(f"scale must be a number or hold one value per instance, "
                                 f"shape ({self.batch_size},), got {tuple(scale.shape)}")
            scale = scale.reshape(-1)
            if self.shared_pattern:
                scale = scale.reshape(1, -1, 1)
            else:  # one scale per row of the block-diagonal pattern
                scale, per_row = scale.repeat_interleave(self.size), True
        else:
            factor, scale = float(scale), None
        # The sweep works on one row per unknown (rows of the pattern by vectors), in place: a
        # level reads its rows' right-hand sides and the solved rows it depends on, then
        # writes its own rows.
        rows = _fresh_copy(c3.reshape(count_r * count_k, width).T)
        d_rows = None if diagonal is None else self._flat(
            diagonal.expand(self.batch_size, self.size), "diagonal")[0].reshape(
                count_r, width).T.contiguous()
        self._sweep(rows, self.pattern.schedule(upper, transpose), d_rows, factor, scale,
                    per_row, count_r, count_k)
        return self._unflat(rows.T.contiguous().view(c3.shape), shape)

    def _sweep(self, rows: torch.Tensor, plan: _Schedule, d_rows: torch.Tensor | None,
               factor: float, scale: torch.Tensor | None, per_row: bool, count_r: int,
               count_k: int) -> None:
        """One triangular sweep over ``rows`` (``(M, R K)``, one row per unknown), in place.
        ``d_rows``: the diagonal in the same layout, or ``None`` to read each level's diagonal
        from the values at the schedule's ``diagonals`` (:meth:`diagonal`'s zeros where the
        pattern lacks a diagonal entry)."""
        values = self._rows_of_values()
        graph = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (values, rows, d_rows, scale))
        if d_rows is None and plan.diagonals is None:  # a diagonal entry is missing: 0
            d_rows = self._flat(self.diagonal(), "diagonal")[0].reshape(
                count_r, -1).T.contiguous()
        for r0, r1, e0, e1 in plan.bounds:
            level_rows = plan.rows[r0:r1]
            acc = rows.index_select(0, level_rows)
            if e1 > e0:
                v = values.index_select(1, plan.positions[e0:e1]).T.unsqueeze(2)
                if scale is not None:
                    v = v * (scale.index_select(0, plan.entry_rows[e0:e1]).reshape(-1, 1, 1)
                             if per_row else scale)
                gathered = rows.index_select(0, plan.cols[e0:e1]).view(-1, count_r, count_k)
                product = gathered * v if graph else gathered.mul_(v)
                acc = acc.index_add_(0, plan.local[e0:e1], product.view(e1 - e0, -1),
                                     alpha=-factor)
            if d_rows is None:  # the level's diagonal, gathered from the values
                d = values.index_select(1, plan.diagonals[r0:r1]).T
            else:
                d = d_rows.index_select(0, level_rows)
            acc = acc.view(-1, count_r, count_k).div_(d.unsqueeze(2))
            rows.index_copy_(0, level_rows, acc.view(r1 - r0, -1))

    def solve_factored(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(L L^T)^-1 rhs`` for this batch holding factors ``L`` as their lower triangles
        (:meth:`incomplete_cholesky`): the forward and the transposed backward sweep in one
        buffer. ``rhs`` is ``(B, N)``; the result is ``(B, N)`` with the batch running
        fastest in memory (the sweeps' layout, returned without a copy)."""
        c3, shape = self._flat(rhs, "rhs")
        if c3.shape[1] != 1:
            raise ValueError(f"rhs must have shape ({self.batch_size}, {self.size}), got "
                             f"{tuple(rhs.shape)}")
        count_r, _, width = c3.shape
        rows = _fresh_copy(c3.reshape(count_r, width).T)
        self._sweep(rows, self.pattern.schedule(False), None, 1.0, None, False, count_r, 1)
        self._sweep(rows, self.pattern.schedule(False, True), None, 1.0, None, False,
                    count_r, 1)
        return self._unflat(rows.T.view(c3.shape), shape)

    def incomplete_cholesky(self) -> tuple[SparseBatch, torch.Tensor]:
        """``(L, failed)``: the zero-fill incomplete Cholesky factor ``L`` of every instance,
        ``A ~ L L^T`` with ``L`` on the pattern of the lower triangle (a batch on
        :meth:`SparsePattern.lower_triangle`), and ``(B,)`` which instances broke down (a pivot
        ``<= 0`` or not finite; their factor is meaningless). The pattern must be structurally
        symmetric with every diagonal entry present; only the lower triangle's values are read.
        Precondition with ``L.solve_triangular(L.solve_triangular(r), transpose=True)``.

        Level by level over the rows (:class:`_CholeskyPlan`), vectorised over the rows of a
        level and the batch: a 5-point stencil on an ``n x n`` grid takes ``2 n - 1`` levels of
        three steps. The factor is computed without a graph: it is a constant of the values.
        """
        plan = self.pattern.incomplete_cholesky_plan()
        with torch.no_grad():
            a = self._rows_of_values().detach()
            count = a.shape[0]
            factor = a.new_zeros(count, plan.lower.nnz)
            broken = torch.zeros(count, self.pattern.rows_total if not self.shared_pattern
                                 else 1, dtype=torch.bool, device=a.device)
            for level in range(len(plan.steps)):
                for position, a_position, pivot, ij, kj, into in plan.entry_steps(level):
                    value = a.index_select(1, a_position)
                    if ij.numel():
                        value.index_add_(1, into, factor.index_select(1, ij)
                                         * factor.index_select(1, kj), alpha=-1)
                    factor.index_copy_(1, position, value / factor.index_select(1, pivot))
                rows, diagonal, a_diagonal, squares, local = plan.diagonal_step(level)
                pivots = a.index_select(1, a_diagonal)
                if squares.numel():
                    pivots.index_add_(1, local, factor.index_select(1, squares).square(),
                                      alpha=-1)
                bad = ~(pivots > 0) | ~torch.isfinite(pivots)
                if bool(bad.any()):
                    if self.shared_pattern:
                        broken[:, 0] |= bad.any(dim=1)
                    else:
                        broken[0, rows[bad[0]]] = True
                    pivots = torch.where(bad, torch.ones_like(pivots), pivots)
                factor.index_copy_(1, diagonal, pivots.sqrt())
            if self.shared_pattern:
                failed, values = broken[:, 0], factor
            else:
                failed = broken[0].view(self.batch_size, self.size).any(dim=1)
                values = factor[0]
        return SparseBatch._derived(plan.lower, values), failed


def _fresh_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy that never shares memory with ``tensor`` (``contiguous()`` returns
    ``tensor`` itself where it already is), for work done in place on it."""
    out = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    return out.copy_(tensor)


#: What is derived from a matrix shared by a batch (its pattern, a SciPy copy and factor),
#: computed once per matrix and version: ``(id(matrix), kind) -> (weak reference, version,
#: value)``, dropped with the matrix.
_PER_MATRIX: dict = {}


def _version(matrix: torch.Tensor) -> int | None:
    try:
        return matrix._version
    except RuntimeError:  # an inference tensor has no version counter (and stays as it is)
        return None


def per_matrix(matrix: torch.Tensor, kind: str, build):
    """``build()``, computed once per ``matrix`` (its identity and in-place version) and
    ``kind``, and dropped when the matrix is."""
    key = (id(matrix), kind)
    cached = _PER_MATRIX.get(key)
    if cached is None or cached[0]() is not matrix or cached[1] != _version(matrix):
        if cached is None or cached[0]() is not matrix:
            weakref.finalize(matrix, _PER_MATRIX.pop, key, None)
        cached = (weakref.ref(matrix), _version(matrix), build())
        _PER_MATRIX[key] = cached
    return cached[2]


try:  # SciPy's compressed-row product of several vectors, into a given output
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # a private name that may move: the products then allocate their output
    _csr_matvecs = None

#: A shared matrix with at most this fraction of nonzero entries is applied through SciPy's
#: sparse kernels on the CPU (:func:`shared_sparse`); a denser one stays a dense product.
SPARSE_DENSITY = 0.1


class _ScipyProduct(torch.autograd.Function):
    """``M x`` for a batch of columns ``x`` ``(n, B)`` and a SciPy sparse ``M`` ``(m, n)``;
    the adjoint ``N = M^T`` gives the backward ``N g``."""

    @staticmethod
    def forward(ctx, x, matrix, adjoint):
        ctx.adjoint = adjoint
        return torch.from_numpy(matrix @ x.detach().numpy())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return torch.from_numpy(ctx.adjoint @ grad.numpy()), None, None


class _ScipySymmetricSolve(torch.autograd.Function):
    """``R^{-1} r`` for a batch of columns ``r`` ``(n, B)`` with a factor of a symmetric ``R``;
    the backward is the same solve (``R^{-T} = R^{-1}``)."""

    @staticmethod
    def forward(ctx, rhs, factor):
        ctx.factor = factor
        return _factor_solve(factor, rhs.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return _factor_solve(ctx.factor, grad), None


def _factor_solve(factor, columns: torch.Tensor) -> torch.Tensor:
    # SuperLU reads each right-hand side contiguous (Fortran order): a batch held with the
    # batch fastest (as the products read it) is copied over and back.
    out = factor.solve(np.asfortranarray(columns.numpy()))
    return torch.from_numpy(np.ascontiguousarray(out))


class SharedSparseMatrix:
    """A sparse ``(m, n)`` matrix ``A`` shared by a batch, applied on the CPU with SciPy's
    compressed sparse kernels: ``A x`` and ``A^T y`` for a batch of columns ``x`` ``(n, B)``
    (held best with the batch fastest, ``x.T`` of a row-major ``(B, n)``: no copy), and solves
    with ``I + A^T A`` from one sparse factorisation (SuperLU with a minimum-degree ordering of
    ``R + R^T`` and no pivoting, which is stable for this symmetric positive definite ``R``),
    made on first use. Each is differentiable in the vectors (its backward is the adjoint
    product, or the same solve); the matrix itself is data, not differentiated.

    Obtain one with :func:`shared_sparse`, which builds it once per matrix.
    """

    def __init__(self, matrix: torch.Tensor):
        from scipy import sparse as sp

        if matrix.layout == torch.strided:
            self.matrix = sp.csr_matrix(matrix.detach().numpy())
        else:
            csr = matrix.detach().to_sparse_csr()
            self.matrix = sp.csr_matrix((csr.values().numpy(), csr.col_indices().numpy(),
                                         csr.crow_indices().numpy()), shape=tuple(matrix.shape))
            self.matrix.sum_duplicates()
        self.adjoint = self.matrix.T.tocsr()
        self.shape = tuple(matrix.shape)
        self._gram = None
        # The same products as gathers of whole rows of the batch, over the rows of A padded
        # to the longest one: the form compiled kernels fuse (kernels.py), where a SciPy call
        # would break the fused loop.
        self.padded = _padded_rows(self.matrix)
        self.padded_adjoint = _padded_rows(self.adjoint)

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    def apply(self, columns: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        """``A x`` for ``x`` ``(n, B)`` (``A^T y`` for ``y`` ``(m, B)`` with ``adjoint``)."""
        if compiling():
            index, values = self.padded_adjoint if adjoint else self.padded
            return (columns[index] * values.unsqueeze(-1)).sum(dim=1)
        matrices = (self.adjoint, self.matrix) if adjoint else (self.matrix, self.adjoint)
        return _ScipyProduct.apply(columns, *matrices)

    def apply_into(self, columns: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` ``(n, B)`` written into ``out`` ``(m, B)`` (both contiguous, of
        the matrix's dtype; outside autograd), which saves the fresh buffer of every product,
        whose first touch costs page faults at a large batch; elsewhere, or without SciPy's
        kernel, a new tensor (what :meth:`apply` returns)."""
        matrix = self.matrix
        if columns.ndim != 2 or columns.shape[0] != self.shape[1]:
            raise ValueError(f"columns must have shape ({self.shape[1]}, B), got "
                             f"{tuple(columns.shape)}")
        if tuple(out.shape) != (self.shape[0], columns.shape[1]):
            raise ValueError(f"out must have shape {(self.shape[0], columns.shape[1])} for A x "
                             f"with x of shape {tuple(columns.shape)}, got {tuple(out.shape)}")
        if (_csr_matvecs is None or not columns.is_contiguous() or not out.is_contiguous()
                or columns.dtype != out.dtype or out.numpy().dtype != matrix.dtype
                or torch.is_grad_enabled() and columns.requires_grad):
            return self.apply(columns)
        out.zero_()  # the kernel adds A x to what out holds
        _csr_matvecs(matrix.shape[0], matrix.shape[1], columns.shape[1], matrix.indptr,
                     matrix.indices, matrix.data, columns.numpy().ravel(), out.numpy().ravel())
        return out

    def solve_gram(self, columns: torch.Tensor) -> torch.Tensor:
        """``(I + A^T A)^{-1} r`` for ``r`` ``(n, B)``."""
        if self._gram is None:
            from scipy import sparse as sp
            from scipy.sparse.linalg import splu

            gram = (sp.identity(self.shape[1], dtype=self.matrix.dtype, format="csc")
                    + (self.adjoint @ self.matrix).tocsc())
            self._gram = splu(gram, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                              options={"SymmetricMode": True})
        return _ScipySymmetricSolve.apply(columns, self._gram)


def _padded_rows(csr) -> tuple[torch.Tensor, torch.Tensor]:
    """``(columns, values)``, each ``(rows, width)``: row ``i``'s entries padded with zeros
    (at column 0) to the longest row's ``width``."""
    counts = np.diff(csr.indptr)
    width = max(int(counts.max(initial=0)), 1)
    slot = np.arange(csr.nnz) - np.repeat(csr.indptr[:-1], counts)
    rows = np.repeat(np.arange(csr.shape[0]), counts)
    columns = np.zeros((csr.shape[0], width), dtype=np.int64)
    values = np.zeros((csr.shape[0], width), dtype=csr.dtype)
    columns[rows, slot] = csr.indices
    values[rows, slot] = csr.data
    return torch.from_numpy(columns), torch.from_numpy(values)


def shared_sparse(matrix: torch.Tensor) -> SharedSparseMatrix | None:
    """The :class:`SharedSparseMatrix` of an ``(m, n)`` matrix shared by a batch (a torch
    sparse COO or CSR matrix, or a dense one with at most :data:`SPARSE_DENSITY` of its
    entries nonzero), or ``None`` where PyTorch's own products are the right ones: a matrix off
    the CPU, one that requires a gradient, or one of another dtype than float32/float64. Built
    once per matrix (and in-place version)."""
    if (matrix.ndim != 2 or matrix.layout not in (torch.strided, torch.sparse_coo,
                                                  torch.sparse_csr)
            or matrix.device.type != "cpu" or matrix.requires_grad
            or matrix.dtype not in (torch.float32, torch.float64)):
        return None

    def build():
        if matrix.layout != torch.strided:
            return SharedSparseMatrix(matrix)
        nnz = int(torch.count_nonzero(matrix))
        return SharedSparseMatrix(matrix) if nnz <= SPARSE_DENSITY * matrix.numel() else None

    return per_matrix(matrix, "scipy", build)


def _csr_parts(name: str, matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(crow, col, values, N)`` of a square matrix given as SciPy sparse or a torch tensor,
    on the CPU for SciPy, sorted and without duplicate entries."""
    if isinstance(matrix, torch.Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"{name} must be a square matrix, got shape {tuple(matrix.shape)}")
        if matrix.layout == torch.strided:
            csr = matrix.to_sparse_csr()
        elif matrix.layout == torch.sparse_coo:
            csr = matrix.coalesce().to_sparse_csr()
        elif matrix.layout == torch.sparse_csr:
            csr = matrix
        else:
            raise TypeError(f"{name} must be a dense, COO or CSR tensor, got {matrix.layout}")
        return (csr.crow_indices().to(torch.int64), csr.col_indices().to(torch.int64),
                csr.values(), int(matrix.shape[0]))
    if not hasattr(matrix, "tocsr"):
        raise TypeError(f"{name} must be a SciPy sparse matrix or a torch tensor, got "
                        f"{type(matrix).__name__}")
    csr = matrix.tocsr(copy=True)
    if csr.shape[0] != csr.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {csr.shape}")
    csr.sum_duplicates()
    csr.sort_indices()
    return (torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(csr.data)), int(csr.shape[0]))

