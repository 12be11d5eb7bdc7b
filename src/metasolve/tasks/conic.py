"""Second-order cone task families of the neural SCS paper: Lasso, dynamic Lasso and robust
Kalman filtering (sec. 3.3, 4.4.1, 6, Tables 1-2, Appendix A), canonicalized into SCS's
standard form by cvxpy.

Each family writes its problem once as a cvxpy problem whose per-instance data are cvxpy
``Parameter``\\ s, canonicalizes it once with ``get_problem_data(cp.SCS, use_quad_obj=False)``
(the path the paper used to obtain Table 1, "obtained through CVXPY's canonicalization"), and
then maps each instance's parameter values to ``(A, b, c, d)`` with the parametrized program's
``apply_parameters`` (cvxpy's DPP machinery): a sparse-matrix product per instance instead of a
full re-canonicalization, and -- what matters more -- one cone structure and one variable
ordering for the whole family *by construction*. Every instance is still checked against it.

The resulting programs are :class:`CanonicalConeProgram`\\ s: a
:class:`~metasolve.problems.ConeProgram` (``min c^T x s.t. A x + s = b, s in K``, ``K = {0}^zero
x R_+^nonneg x SOC(q_1) x ...`` in SCS's row order) that also carries

* ``offset`` ``(B,)``: cvxpy's constant objective offset ``d``, so the original problem's
  optimal value is ``c^T x + d`` (zero for the three families here, kept for generality), and
* ``variable_map``: where each original cvxpy variable lives in ``x``. cvxpy stacks the
  original variables into ``x`` and never renames them when no variable attributes (``nonneg``,
  ``symmetric``...) are used, which holds here; the column offset of each one is read from the
  parametrized program's ``var_id_to_col``, and its values are ``x[col : col + size]`` reshaped
  to the variable's shape in Fortran (column-major) order, cvxpy's vectorization.
  :meth:`CanonicalConeProgram.variable` does this.

Features (the paper's ``phi``, sec. 4.2): the entries of ``[vec(A); b; c]`` that vary across
the family, in that order, with ``vec(A)`` the row-major flattening of the ``(m, n)`` matrix.
Which entries vary is determined once per family, deterministically, by canonicalizing
``_PROBE_DRAWS`` instances drawn from a fixed internal seed and comparing them (the data are
continuous random draws, so an entry that depends on them differs between draws with
probability one). ``features`` is the same tensor as the program's ``context``.

Random data are drawn from the caller's ``torch.Generator`` (converted to NumPy), so a
family's samples are a function of the seed alone.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..extras import require
from ..problems import ConeProgram, ConeSpec
from ..validation import check_count, check_finite_number, check_nonnegative, check_positive
from .base import TaskBatch, TaskFamily, register_family

#: Problem sizes in SCS standard form reported by the paper (Table 1 and Table 2): variables
#: ``n``, constraints ``m``, nonzeros of ``A`` and the cones. The families below reproduce
#: every one of them with cvxpy 1.9 (checked in ``tests/test_conic_families.py``).
PAPER_SIZES: dict[str, dict[str, Any]] = {
    # Table 1
    "lasso_p50_q100": {"n": 102, "m": 204, "nnz": 5204, "zero": 0, "nonneg": 100,
                       "soc": [101, 3]},
    "kalman_50_steps": {"n": 655, "m": 852, "nnz": 1652, "zero": 350, "nonneg": 100,
                        "soc": [102] + [3] * 100},
    # Table 2 (p = 10)
    "lasso_p10_q20": {"n": 22, "m": 44, "nnz": 244, "zero": 0, "nonneg": 20, "soc": [21, 3]},
    "lasso_p10_q40": {"n": 22, "m": 64, "nnz": 444, "zero": 0, "nonneg": 20, "soc": [41, 3]},
    "lasso_p10_q60": {"n": 22, "m": 84, "nnz": 644, "zero": 0, "nonneg": 20, "soc": [61, 3]},
    "dynamic_lasso_2_steps": {"n": 53, "m": 105, "nnz": 525, "zero": 10, "nonneg": 40,
                              "soc": [41, 3, 11]},
    "dynamic_lasso_3_steps": {"n": 83, "m": 165, "nnz": 805, "zero": 20, "nonneg": 60,
                              "soc": [61, 3, 21]},
}

#: How many instances (from a fixed internal seed) are compared to find the varying entries.
_PROBE_DRAWS = 3
_PROBE_SEED = 20220614


# --------------------------------------------------------------------------------------------
# The program container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanonicalConeProgram(ConeProgram):
    """A :class:`~metasolve.problems.ConeProgram` produced by cvxpy's canonicalization, with
    what is needed to map an SCS solution back to the original problem.

    Args:
        offset: ``(B,)`` constant objective offset ``d``: original objective ``= c^T x + d``.
        variable_map: ``((name, column, shape), ...)``: original variable ``name`` occupies
            ``x[column : column + prod(shape)]``, column-major (cvxpy's ``vec``).

    Example:
        >>> tasks = LassoFamily(p=10, q=20).sample(2, seed=0)
        >>> prog = tasks.problem
        >>> prog.cones
        ConeSpec(zero=0, nonneg=20, soc=(21, 3))
        >>> [(name, shape) for name, _, shape in prog.variable_map]
        [('z', (10,))]
        >>> x = torch.zeros(2, prog.variables, dtype=torch.float64)  # an SCS solution
        >>> prog.variable(x, "z").shape, prog.objective(x).shape
        (torch.Size([2, 10]), torch.Size([2]))
    """

    offset: torch.Tensor | None = None
    variable_map: tuple[tuple[str, int, tuple[int, ...]], ...] = ()

    def __post_init__(self):
        super().__post_init__()
        if self.offset is not None:
            if not isinstance(self.offset, torch.Tensor):
                raise TypeError(f"offset must be a torch.Tensor, got "
                                f"{type(self.offset).__name__}")
            if tuple(self.offset.shape) != (self.batch_size,):
                raise ValueError(f"offset must have shape ({self.batch_size},), got "
                                 f"{tuple(self.offset.shape)}")
        entries = tuple((str(name), int(col), tuple(int(s) for s in shape))
                        for name, col, shape in self.variable_map)
        for name, col, shape in entries:
            if col < 0 or col + math.prod(shape) > self.variables:
                raise ValueError(f"variable_map entry {name!r} covers columns {col} to "
                                 f"{col + math.prod(shape)}, outside the {self.variables} "
                                 "variables of the program")
        object.__setattr__(self, "variable_map", entries)

    def index(self, idx) -> CanonicalConeProgram:
        base = super().index(idx)
        # Copy whatever fields ConeProgram has (it may grow), then add ours.
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(ConeProgram)}
        offset = None if self.offset is None else self.offset[idx]
        return CanonicalConeProgram(**fields, offset=offset, variable_map=self.variable_map)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """The original problem's objective at SCS's ``x`` ``(B, n)``: ``c^T x + d``, ``(B,)``."""
        value = (self.cost * x).sum(dim=-1)
        return value if self.offset is None else value + self.offset

    def variable(self, x: torch.Tensor, name: str) -> torch.Tensor:
        """Original variable ``name`` from SCS's ``x``: ``(B, n)`` -> ``(B, *shape)``
        (or ``(n,)`` -> ``shape``)."""
        for entry, col, shape in self.variable_map:
            if entry == name:
                flat = x[..., col:col + math.prod(shape)]
                lead = flat.shape[:-1]
                # Column-major: reshape to reversed dims, then reverse the trailing axes.
                out = flat.reshape(*lead, *shape[::-1])
                order = list(range(len(lead))) + [len(lead) + i
                                                  for i in reversed(range(len(shape)))]
                return out.permute(*order)
        known = [entry for entry, _, _ in self.variable_map]
        raise KeyError(f"no variable named {name!r}; the program holds {known}")


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------


@dataclass
class _Canonical:
    """A family's parametrized cone program and what is fixed across its instances."""

    param_prob: Any                      # cvxpy ParamConeProg (SCS-formatted)
    param_ids: dict[str, int]            # parameter name -> cvxpy id in param_prob
    cones: ConeSpec
    shape: tuple[int, int]               # (m, n)
    variable_map: tuple[tuple[str, int, tuple[int, ...]], ...]
    matrix: Any                          # scipy csc: the shared A (or the first probe's A)
    shared: bool                         # A identical for every instance
    a_index: np.ndarray                  # flat (row-major) indices of varying A entries
    b_index: np.ndarray
    c_index: np.ndarray
    reference: tuple | None = None       # (flat A, b, c) of the first probe instance
    fixed: tuple | None = None           # boolean masks of the entries that do not vary


def _draw_normal(generator: torch.Generator, *shape: int) -> np.ndarray:
    return torch.randn(*shape, generator=generator, dtype=torch.float64).numpy()


def _draw_subset(generator: torch.Generator, size: int, count: int) -> np.ndarray:
    """A uniformly random subset of ``count`` of ``range(size)`` as a boolean mask."""
    mask = np.zeros(size, dtype=bool)
    mask[torch.randperm(size, generator=generator)[:count].numpy()] = True
    return mask


def _draw_sparse_solution(generator: torch.Generator, p: int, density: float) -> np.ndarray:
    """``z*`` of sec. 3.3: ``N(0, 1)`` entries with a random ``1 - density`` fraction zeroed
    (at least one entry kept, so small ``p`` still has a signal)."""
    z = _draw_normal(generator, p)
    keep = _draw_subset(generator, p, max(1, round(density * p)))
    z[~keep] = 0.0
    return z


def _check_seed(name: str, value) -> int | None:
    return check_count(name, value, allow_none=True)


def _check_density(value) -> float:
    value = check_finite_number("density", value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"density must lie in (0, 1], got {value}")
    return value


class ConicFamily(TaskFamily, abc.ABC):
    """Base class of the cvxpy-canonicalized cone-program families.

    A subclass implements :meth:`_build` (the parametrized cvxpy problem, built fresh on each
    call) and :meth:`_draw_one` (one instance's parameter values, drawn from the generator).
    Everything else -- canonicalization, the structure and varying-entry checks, features,
    the variable map -- is here.
    """

    # -- subclass interface ------------------------------------------------------------------

    @abc.abstractmethod
    def _build(self):
        """``(problem, {name: Parameter})``: the family's cvxpy problem. Variables must carry
        unique names (they name the entries of ``variable_map``)."""

    @abc.abstractmethod
    def _draw_one(self, generator: torch.Generator) -> dict[str, np.ndarray]:
        """Parameter values of one instance, keyed by parameter name."""

    def _source_matrix(self, params: dict):
        """The Lasso families' ``F``: the fixed matrix, or (registered in ``params``) a cvxpy
        Parameter when every instance draws its own."""
        cp = require("cvxpy", "the conic task families (Lasso, Kalman)")

        if self.fixed_matrix is not None:
            return self.fixed_matrix
        params["F"] = cp.Parameter((self.q, self.p), name="F")
        return params["F"]

    # -- public helpers ----------------------------------------------------------------------

    def draw_parameters(self, n: int, generator: torch.Generator) -> list[dict[str, np.ndarray]]:
        """The parameter values of ``n`` instances, consuming ``generator`` exactly as
        :meth:`sample_with` does (so ``sample(n, seed)`` and
        ``draw_parameters(n, Generator().manual_seed(seed))`` describe the same instances)."""
        check_count("n", n, minimum=1)
        return [self._draw_one(generator) for _ in range(n)]

    def cvxpy_problem(self, values: dict[str, np.ndarray] | None = None):
        """A fresh cvxpy problem of this family with the parameters set to ``values`` (for
        reference solves, e.g. ``problem.solve(solver=cp.CLARABEL)``)."""
        problem, params = self._build()
        if values is not None:
            self._check_values(values, params)
            for name, param in params.items():
                param.value = values[name]
        return problem

    @property
    def cones(self) -> ConeSpec:
        return self._canonical().cones

    @property
    def shared_matrix(self) -> bool:
        """Whether every instance has the same ``A`` (then programs hold one ``(m, n)``)."""
        return self._canonical().shared

    @property
    def variable_map(self) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
        return self._canonical().variable_map

    @property
    def varying_entries(self) -> dict[str, np.ndarray]:
        """Indices of the entries that vary across the family: ``A`` (row-major flat),
        ``b``, ``c``. The features are these entries, in this order."""
        canon = self._canonical()
        return {"A": canon.a_index.copy(), "b": canon.b_index.copy(),
                "c": canon.c_index.copy()}

    @property
    def feature_dim(self) -> int:
        canon = self._canonical()
        return int(canon.a_index.size + canon.b_index.size + canon.c_index.size)

    def sample_with(self, n: int, generator: torch.Generator) -> TaskBatch:
        return self.canonicalize(self.draw_parameters(n, generator))

    def canonicalize(self, values: list[dict[str, np.ndarray]]) -> TaskBatch:
        """Map instances' parameter values to a batch of cone programs in SCS form.

        Raises:
            RuntimeError: if an instance does not canonicalize to the family's structure
                (sizes, or the shared matrix, or an entry outside the varying set changed).
        """
        canon = self._canonical()
        if not values:
            raise ValueError("values must hold at least one instance")
        m, n = canon.shape
        rhs = np.empty((len(values), m))
        cost = np.empty((len(values), n))
        offset = np.empty(len(values))
        matrices = None if canon.shared else np.empty((len(values), m, n))
        features = np.empty((len(values), self.feature_dim))
        for i, vals in enumerate(values):
            a, b, c, d = self._apply(canon, vals, i)
            rhs[i], cost[i], offset[i] = b, c, d
            if canon.shared:
                a_features = np.empty(0)
            else:
                matrices[i] = a.toarray()
                a_features = matrices[i].ravel()[canon.a_index]
            features[i] = np.concatenate([a_features, b[canon.b_index], c[canon.c_index]])
        if canon.shared:
            matrix = torch.from_numpy(canon.matrix.toarray())
        else:
            matrix = torch.from_numpy(matrices)
        context = torch.from_numpy(features)
        program = CanonicalConeProgram(matrix, torch.from_numpy(rhs), torch.from_numpy(cost),
                                       canon.cones, context, offset=torch.from_numpy(offset),
                                       variable_map=canon.variable_map)
        return TaskBatch(program, context)

    # -- internals ---------------------------------------------------------------------------

    def __getstate__(self):
        # The cvxpy objects are a cache: rebuilt on demand, never pickled (parallel.py may
        # ship families to worker processes).
        state = self.__dict__.copy()
        state.pop("_canon_cache", None)
        return state

    def _check_values(self, values: dict[str, np.ndarray], params: dict[str, Any]) -> None:
        missing = sorted(set(params) - set(values))
        extra = sorted(set(values) - set(params))
        if missing or extra:
            raise ValueError(f"parameter values must have exactly the keys {sorted(params)}; "
                             f"missing {missing}, unexpected {extra}")

    def _apply(self, canon: _Canonical, values: dict[str, np.ndarray], i: int):
        """``(A, b, c, d)`` of one instance in SCS's sign convention, checked against the
        family's structure."""
        self._check_values(values, canon.param_ids)
        id_to_value = {canon.param_ids[name]: np.asarray(v, dtype=np.float64)
                       for name, v in values.items()}
        c, d, a, b = canon.param_prob.apply_parameters(id_to_param_value=id_to_value)
        # cvxpy's cone program reads "A x + b in K"; SCS's is "A x + s = b, s in K", which is
        # cvxpy's with A negated (what cvxpy's SCS interface does in ConicSolver.apply).
        a = (-a).tocsc()
        b = np.asarray(b, dtype=np.float64).ravel()
        c = np.asarray(c, dtype=np.float64).ravel()
        if a.shape != canon.shape or b.shape != (canon.shape[0],) or \
                c.shape != (canon.shape[1],):
            raise RuntimeError(f"instance {i} of {type(self).__name__} canonicalized to A "
                               f"{a.shape}, b {b.shape}, c {c.shape}; the family's structure "
                               f"is A {canon.shape}")
        if canon.shared and (a != canon.matrix).nnz:
            raise RuntimeError(f"instance {i} of {type(self).__name__} canonicalized to a "
                               "different A than the family's shared matrix")
        if canon.fixed is not None:
            # The features hold only the entries that varied among the probe instances; an
            # instance that changes another entry would be invisible to a learned model.
            a_ref, b_ref, c_ref = canon.reference
            a_fixed, b_fixed, c_fixed = canon.fixed
            same_a = canon.shared or np.array_equal(a.toarray().ravel()[a_fixed], a_ref[a_fixed])
            if not (same_a and np.array_equal(b[b_fixed], b_ref[b_fixed])
                    and np.array_equal(c[c_fixed], c_ref[c_fixed])):
                raise RuntimeError(f"instance {i} of {type(self).__name__} changed entries of "
                                   "A, b or c that were constant across the family's probe "
                                   "instances, so its features would not describe it")
        return a, b, c, float(d)

    def _canonical(self) -> _Canonical:
        cached = self.__dict__.get("_canon_cache")
        if cached is None:
            cached = self._canonicalize_structure()
            self.__dict__["_canon_cache"] = cached
        return cached

    def _canonicalize_structure(self) -> _Canonical:
        cp = require("cvxpy", "the conic task families (Lasso, Kalman)")

        problem, params = self._build()
        probes = self.draw_parameters(_PROBE_DRAWS, torch.Generator().manual_seed(_PROBE_SEED))
        for name, param in params.items():
            param.value = probes[0][name]
        if not problem.is_dcp(dpp=True):
            raise RuntimeError(f"{type(self).__name__}: the cvxpy problem must be DPP so one "
                               "canonicalization serves every instance")
        data, _, _ = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": False})
        if data.get("P") is not None:
            raise RuntimeError("cvxpy produced a quadratic objective; expected a linear cone "
                               "program (use_quad_obj=False)")
        dims = data["dims"]
        unsupported = {"exp": dims.exp, "psd": list(dims.psd), "p3d": list(dims.p3d),
                       "pnd": list(getattr(dims, "pnd", []))}
        if any(unsupported.values()):
            raise RuntimeError(f"{type(self).__name__} canonicalized to cones ConeSpec does not "
                               f"hold: {unsupported}; only zero, nonneg and SOC cones are "
                               "supported")
        cones = ConeSpec(zero=int(dims.zero), nonneg=int(dims.nonneg),
                         soc=tuple(int(q) for q in dims.soc))
        param_prob = data["param_prob"]
        shape = tuple(int(s) for s in data["A"].shape)
        if cones.dim != shape[0]:
            raise RuntimeError(f"the cones cover {cones.dim} rows but cvxpy's A has {shape[0]}")

        variable_map = []
        for var in problem.variables():
            if var.id not in param_prob.var_id_to_col:
                raise RuntimeError(f"variable {var.name()!r} was rewritten by cvxpy's "
                                   "canonicalization; its values cannot be read from x")
            variable_map.append((var.name(), int(param_prob.var_id_to_col[var.id]),
                                 tuple(int(s) for s in var.shape)))
        names = [name for name, _, _ in variable_map]
        if len(set(names)) != len(names):
            raise RuntimeError(f"variable names must be unique, got {names}")
        variable_map.sort(key=lambda entry: entry[1])

        canon = _Canonical(param_prob=param_prob, param_ids={k: p.id for k, p in params.items()},
                           cones=cones, shape=shape, variable_map=tuple(variable_map),
                           matrix=None, shared=False, a_index=np.empty(0, dtype=np.int64),
                           b_index=np.empty(0, dtype=np.int64),
                           c_index=np.empty(0, dtype=np.int64))
        applied = [self._apply(canon, vals, i) for i, vals in enumerate(probes)]
        # The DPP path must agree with cvxpy's own canonicalization of the first probe.
        first_a, first_b, first_c, _ = applied[0]
        if (abs(first_a - data["A"]).max() > 0 or not np.array_equal(first_b, data["b"])
                or not np.array_equal(first_c, data["c"])):
            raise RuntimeError("cvxpy's apply_parameters disagrees with get_problem_data")

        dense = np.stack([a.toarray().ravel() for a, _, _, _ in applied])
        bs = np.stack([b for _, b, _, _ in applied])
        cs = np.stack([c for _, _, c, _ in applied])
        canon.a_index = np.flatnonzero((dense != dense[0]).any(axis=0))
        canon.b_index = np.flatnonzero((bs != bs[0]).any(axis=0))
        canon.c_index = np.flatnonzero((cs != cs[0]).any(axis=0))
        canon.shared = canon.a_index.size == 0
        canon.matrix = first_a
        canon.reference = (dense[0], bs[0], cs[0])
        canon.fixed = tuple(~(x != x[0]).any(axis=0) for x in (dense, bs, cs))
        return canon


# --------------------------------------------------------------------------------------------
# The families
# --------------------------------------------------------------------------------------------


@register_family
class LassoFamily(ConicFamily):
    """Lasso (neural SCS paper, sec. 3.3; the distribution of O'Donoghue et al. 2016)::

        minimize (1/2) ||F z - g||_2^2 + mu ||z||_1

    Each instance draws ``F`` ``(q, p)`` with ``N(0, 1)`` entries, ``z*`` with ``N(0, 1)``
    entries of which a random ``1 - density`` fraction is set to zero (``max(1, round(density
    p))`` nonzeros), ``g = F z* + w`` with ``w ~ N(0, noise^2 I)`` (``noise`` is the standard
    deviation; sec. 6.2.2's ``sigma``, 0.1 by default), and ``mu = 0.1 ||F^T g||_inf``.

    The squared norm is written ``square(norm2(F z - g))``: cvxpy then produces an SOC of size
    ``q + 1`` and one of size 3, exactly the paper's Table 1 / Table 2 structure (``p=50, q=100``:
    ``n=102, m=204``, 5204 nonzeros, 100 nonneg, SOC ``[101, 3]``; ``p=10, q=20``: ``n=22,
    m=44``, 244 nonzeros, 20 nonneg, SOC ``[21, 3]``). (``sum_squares`` would give one SOC of
    size ``q + 2`` with cvxpy 1.9.)

    Args:
        p: number of unknowns (length of ``z``).
        q: number of measurements per observation set (rows of ``F``).
        density: fraction of nonzeros of ``z*``, in (0, 1] (App. C.1's ``rho``).
        noise: standard deviation of ``w``.
        fixed_matrix_seed: ``None``: a new ``F`` per instance (sec. 3.3, 6.1). An int: one
            ``F`` for the whole family, drawn from this seed (sec. 6.2.1); then ``A`` is shared
            and the program holds one ``(m, n)`` matrix.
        observations: ``None`` or ``k >= 1``: the number of independent observation sets
            ``g_j = F z* + w_j`` of the same ``z*`` through the same ``F``, stacked (``H = [F;
            ...; F]``, ``mu = 0.1 ||H^T g||_inf``). This is our reading of sec. 6.3.1 ("increase
            the number of observations with the variables remaining static"), the static
            counterpart of the dynamic Lasso's ``H``; it has the same canonical sizes as
            ``q * k`` (Table 2's ``q = 40, 60`` columns). To draw a fresh, taller ``F`` instead,
            set ``q``.

    Features: the varying entries of ``[vec(A); b; c]``: ``F``'s entries (per-instance ``F``
    only), ``g`` (in ``b``) and ``mu`` (in ``c``, repeated ``p`` times).

    Example:
        >>> family = LassoFamily(p=10, q=20, fixed_matrix_seed=0)
        >>> tasks = family.sample(4, seed=1)
        >>> tuple(tasks.problem.matrix.shape), family.feature_dim
        ((44, 22), 30)
    """

    name = "lasso"

    def __init__(self, p: int = 50, q: int = 100, density: float = 0.1, noise: float = 0.1,
                 fixed_matrix_seed: int | None = None, observations: int | None = None):
        self.p = check_count("p", p, minimum=1)
        self.q = check_count("q", q, minimum=1)
        self.density = _check_density(density)
        self.noise = check_nonnegative("noise", noise)
        self.fixed_matrix_seed = _check_seed("fixed_matrix_seed", fixed_matrix_seed)
        self.observations = check_count("observations", observations, minimum=1,
                                        allow_none=True)
        self.fixed_matrix = (None if self.fixed_matrix_seed is None else _draw_normal(
            torch.Generator().manual_seed(self.fixed_matrix_seed), self.q, self.p))

    def config(self) -> dict[str, Any]:
        return {"p": self.p, "q": self.q, "density": self.density, "noise": self.noise,
                "fixed_matrix_seed": self.fixed_matrix_seed, "observations": self.observations}

    @classmethod
    def declared_size(cls, config):
        p = check_count("p", config.get("p", 50), minimum=1)
        q = check_count("q", config.get("q", 100), minimum=1)
        sets = check_count("observations", config.get("observations"), minimum=1,
                           allow_none=True) or 1
        return q * p * sets + q * sets + p  # F (dense, per observation set), g and z

    @property
    def _sets(self) -> int:
        return 1 if self.observations is None else self.observations

    def _build(self):
        cp = require("cvxpy", "the conic task families (Lasso, Kalman)")

        z = cp.Variable(self.p, name="z")
        g = cp.Parameter(self.q * self._sets, name="g")
        mu = cp.Parameter(nonneg=True, name="mu")
        params = {"g": g, "mu": mu}
        f = self._source_matrix(params)
        fz = f @ z
        stacked = fz if self._sets == 1 else cp.hstack([fz] * self._sets)
        objective = 0.5 * cp.square(cp.norm(stacked - g, 2)) + mu * cp.norm1(z)
        return cp.Problem(cp.Minimize(objective)), params

    def _draw_one(self, generator: torch.Generator) -> dict[str, np.ndarray]:
        f = _draw_normal(generator, self.q, self.p) if self.fixed_matrix is None \
            else self.fixed_matrix
        z_star = _draw_sparse_solution(generator, self.p, self.density)
        h = np.vstack([f] * self._sets)
        g = h @ z_star + self.noise * _draw_normal(generator, h.shape[0])
        values = {"g": g, "mu": np.array(0.1 * np.abs(h.T @ g).max())}
        if self.fixed_matrix is None:
            values["F"] = f
        return values


@register_family
class DynamicLassoFamily(ConicFamily):
    """The Lasso turned linear dynamical system (neural SCS paper, sec. 6.3.2)::

        minimize   sum_i ||F z_i - g_i||_2^2 + mu sum_i ||z_i||_1 + ||v||_2
        subject to z_{i+1} = z_i + delta 1 + beta v_i,   i = 1, ..., steps - 1

    with ``z = [z_1, ..., z_steps]`` ``(p, steps)`` and ``v = [v_1, ..., v_{steps-1}]``
    ``(p, steps - 1)`` (``||v||_2`` the norm of all of ``v``).

    Data: one fixed ``F`` (drawn from ``fixed_matrix_seed``); per instance ``z_1*`` as in
    :class:`LassoFamily`, ``z_{i+1}* = z_i* + delta`` on the nonzero entries of ``z_1*`` only
    (sparsity kept), ``g_i = F z_i* + w_i`` with independent ``w_i ~ N(0, noise^2 I)``, and
    ``mu = 0.1 ||F^T g_1||_inf`` (the Lasso's rule, from the first step).

    Our reading of the paper's garbled formula "``||Hz - g||^2 + lambda ||z||_1^2 + ||v||_2``
    s.t. ``z_{i+1} = z_i + delta + beta v_i``": ``||Hz - g||^2`` with ``H = blockdiag(F, ...,
    F)`` is the sum above (no 1/2, as printed); ``lambda ||z||_1^2`` is taken as ``mu
    ||z||_1`` (a squared norm would add a cone that Table 2 does not list); ``delta`` is added
    to every entry in the constraint, as printed (the model does not know the support of
    ``z*``), so ``b`` does not vary in its zero-cone rows. With these choices the canonical
    sizes are exactly Table 2's (2 steps: ``n=53, m=105``, 525 nonzeros, 10 zero, 40 nonneg,
    SOC ``[41, 3, 11]``; 3 steps: ``n=83, m=165``, 805 nonzeros, 20 zero, 60 nonneg, SOC
    ``[61, 3, 21]``).

    Args:
        p, q: sizes of ``F`` (``q x p``).
        steps: number of time steps (``>= 2``; the paper uses 2 and 3).
        density, noise: as in :class:`LassoFamily`.
        delta: the drift per step.
        beta: the weight of ``v`` in the dynamics.
        fixed_matrix_seed: seed of the fixed ``F`` (the paper keeps ``F`` fixed, so ``A`` is
            shared); ``None`` draws ``F`` per instance.

    Example:
        >>> family = DynamicLassoFamily(steps=2)
        >>> family.cones
        ConeSpec(zero=10, nonneg=40, soc=(41, 3, 11))
    """

    name = "dynamic_lasso"

    def __init__(self, p: int = 10, q: int = 20, steps: int = 2, density: float = 0.1,
                 delta: float = 0.1, beta: float = 0.005, noise: float = 0.1,
                 fixed_matrix_seed: int | None = 0):
        self.p = check_count("p", p, minimum=1)
        self.q = check_count("q", q, minimum=1)
        self.steps = check_count("steps", steps, minimum=2)
        self.density = _check_density(density)
        self.delta = check_finite_number("delta", delta)
        self.beta = check_positive("beta", beta)
        self.noise = check_nonnegative("noise", noise)
        self.fixed_matrix_seed = _check_seed("fixed_matrix_seed", fixed_matrix_seed)
        self.fixed_matrix = (None if self.fixed_matrix_seed is None else _draw_normal(
            torch.Generator().manual_seed(self.fixed_matrix_seed), self.q, self.p))

    @classmethod
    def declared_size(cls, config):
        p = check_count("p", config.get("p", 10), minimum=1)
        q = check_count("q", config.get("q", 20), minimum=1)
        steps = check_count("steps", config.get("steps", 2), minimum=2)
        return steps * (q * p + q + 2 * p)  # F, observations, z and v of every step

    def config(self) -> dict[str, Any]:
        return {"p": self.p, "q": self.q, "steps": self.steps, "density": self.density,
                "delta": self.delta, "beta": self.beta, "noise": self.noise,
                "fixed_matrix_seed": self.fixed_matrix_seed}

    def _build(self):
        cp = require("cvxpy", "the conic task families (Lasso, Kalman)")

        z = cp.Variable((self.p, self.steps), name="z")
        v = cp.Variable((self.p, self.steps - 1), name="v")
        g = cp.Parameter((self.q, self.steps), name="g")
        mu = cp.Parameter(nonneg=True, name="mu")
        params = {"g": g, "mu": mu}
        f = self._source_matrix(params)
        objective = (cp.square(cp.norm(cp.vec(f @ z - g, order="F"), 2))
                     + mu * cp.norm1(cp.vec(z, order="F"))
                     + cp.norm(cp.vec(v, order="F"), 2))
        constraints = [z[:, 1:] == z[:, :-1] + self.delta + self.beta * v]
        return cp.Problem(cp.Minimize(objective), constraints), params

    def _draw_one(self, generator: torch.Generator) -> dict[str, np.ndarray]:
        f = _draw_normal(generator, self.q, self.p) if self.fixed_matrix is None \
            else self.fixed_matrix
        z_star = _draw_sparse_solution(generator, self.p, self.density)
        support = z_star != 0
        trajectory = np.stack([z_star + i * self.delta * support for i in range(self.steps)],
                              axis=1)
        g = f @ trajectory + self.noise * _draw_normal(generator, self.q, self.steps)
        values = {"g": g, "mu": np.array(0.1 * np.abs(f.T @ g[:, 0]).max())}
        if self.fixed_matrix is None:
            values["F"] = f
        return values


def kalman_dynamics(dt: float, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Appendix A's drift ``F`` (4x4), input ``G`` (4x2) and observation ``H`` (2x4) of a
    vehicle with position and velocity in the plane, time step ``dt`` and damping ``gamma``
    (Diamond & Boyd's robust Kalman example)."""
    decay = (1 - gamma * dt / 2) * dt
    f = np.array([[1.0, 0.0, decay, 0.0],
                  [0.0, 1.0, 0.0, decay],
                  [0.0, 0.0, 1 - gamma * dt, 0.0],
                  [0.0, 0.0, 0.0, 1 - gamma * dt]])
    g = np.array([[dt ** 2 / 2, 0.0], [0.0, dt ** 2 / 2], [dt, 0.0], [0.0, dt]])
    h = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    return f, g, h


@register_family
class KalmanFamily(ConicFamily):
    """Robust Kalman filtering of a moving vehicle (neural SCS paper, sec. 3.3, 4.4.1,
    Appendix A; cvxpy's robust Kalman example by Diamond & Boyd)::

        minimize   sum_t ||w_t||_2^2 + mu sum_t huber(||v_t||_2, rho)
        subject to x_{t+1} = F x_t + G w_t,  y_t = H x_t + v_t,   t = 0, ..., steps - 1

    over states ``x`` ``(4, steps + 1)``, inputs ``w`` ``(2, steps)`` and measurement noise
    ``v`` ``(2, steps)``, with ``huber(a, rho) = a^2`` for ``|a| <= rho`` and ``2 rho |a| -
    rho^2`` beyond (cvxpy's ``huber``; the paper's printed definition drops the square).
    ``F, G, H`` are Appendix A's with damping ``gamma = 0.05`` and ``dt = horizon / (steps -
    1)`` (the example's ``np.linspace(0, T, n, retstep=True)``).

    Data: per instance ``x_0* = 0``, ``w_t* ~ N(0, 1)``, ``v_t* ~ N(0, 1)`` with a random
    ``round(outlier_fraction * steps)`` of the time steps multiplied by ``outlier_scale``
    (sec. 4.4.1: "increase v_t* by a factor of 20 for a randomly selected 20% time
    intervals"; the cvxpy example instead redraws them with standard deviation 20), the system
    simulated forward and ``y_t = H x_t* + v_t*``. Only ``y`` is a parameter and it enters
    ``b`` alone, in zero-cone rows: ``A`` and ``c`` are identical across instances (sec. 5.3.3),
    the program holds one shared ``(m, n)`` matrix, and the features are the ``2 steps``
    entries of ``b`` holding ``y``.

    The paper's "n = 50 and T = 12" are the example's number of time steps and time horizon;
    with ``steps = 50`` the canonical sizes are exactly Table 1's (``n=655, m=852``, 1652
    nonzeros, 350 zero, 100 nonneg, SOC ``[102] + [3] x 100``).

    Args:
        steps: number of time steps ``n`` (>= 1).
        horizon: the time horizon ``T`` (sets ``dt``).
        mu: weight of the Huber penalty (the paper: 2).
        rho: Huber threshold (the paper: 2).
        gamma: damping of the dynamics.
        outlier_fraction: fraction of time steps with outlier noise, in [0, 1].
        outlier_scale: factor applied to their ``v_t*``.

    Example:
        >>> family = KalmanFamily(steps=10)
        >>> tasks = family.sample(3, seed=0)
        >>> tasks.problem.shared_matrix, family.feature_dim
        (True, 20)
    """

    name = "robust_kalman"

    def __init__(self, steps: int = 50, horizon: float = 12.0, mu: float = 2.0,
                 rho: float = 2.0, gamma: float = 0.05, outlier_fraction: float = 0.2,
                 outlier_scale: float = 20.0):
        self.steps = check_count("steps", steps, minimum=1)
        self.horizon = check_positive("horizon", horizon)
        self.mu = check_positive("mu", mu)
        self.rho = check_positive("rho", rho)
        self.gamma = check_nonnegative("gamma", gamma)
        self.outlier_fraction = check_nonnegative("outlier_fraction", outlier_fraction)
        if self.outlier_fraction > 1:
            raise ValueError(f"outlier_fraction must lie in [0, 1], got {outlier_fraction}")
        self.outlier_scale = check_positive("outlier_scale", outlier_scale)
        self.dt = self.horizon / max(self.steps - 1, 1)
        self.drift, self.input, self.observation = kalman_dynamics(self.dt, self.gamma)

    @classmethod
    def declared_size(cls, config):
        steps = check_count("steps", config.get("steps", 50), minimum=1)
        return 12 * (steps + 1)  # x (4 per step), w, v and y (2 each)

    def config(self) -> dict[str, Any]:
        return {"steps": self.steps, "horizon": self.horizon, "mu": self.mu, "rho": self.rho,
                "gamma": self.gamma, "outlier_fraction": self.outlier_fraction,
                "outlier_scale": self.outlier_scale}

    def _build(self):
        cp = require("cvxpy", "the conic task families (Lasso, Kalman)")

        x = cp.Variable((4, self.steps + 1), name="x")
        w = cp.Variable((2, self.steps), name="w")
        v = cp.Variable((2, self.steps), name="v")
        y = cp.Parameter((2, self.steps), name="y")
        objective = (cp.sum_squares(w)
                     + self.mu * cp.sum(cp.huber(cp.norm(v, 2, axis=0), self.rho)))
        constraints = [x[:, 1:] == self.drift @ x[:, :-1] + self.input @ w,
                       y == self.observation @ x[:, :-1] + v]
        return cp.Problem(cp.Minimize(objective), constraints), {"y": y}

    def _draw_one(self, generator: torch.Generator) -> dict[str, np.ndarray]:
        w = _draw_normal(generator, 2, self.steps)
        v = _draw_normal(generator, 2, self.steps)
        outliers = _draw_subset(generator, self.steps, round(self.outlier_fraction * self.steps))
        v[:, outliers] *= self.outlier_scale
        x = np.zeros((4, self.steps + 1))
        for t in range(self.steps):
            x[:, t + 1] = self.drift @ x[:, t] + self.input @ w[:, t]
        return {"y": self.observation @ x[:, :-1] + v}
