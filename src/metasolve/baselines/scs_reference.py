"""The real ``scs`` package (SCS 3.x, O'Donoghue et al.) as a per-instance reference and
deployment baseline for the neural SCS paper (sec. 3.2, 4.4: "SCS" and "SCS+AA").

:func:`solve_with_scs` solves instance ``index`` of a :class:`~metasolve.problems.ConeProgram`
(optionally warm-started, optionally with SCS's Anderson acceleration);
:func:`solve_batch_with_scs` solves many. When the batch shares its matrix ``A``, the batch
solver can build one ``scs.SCS`` object -- whose setup equilibrates ``A`` and factorizes the
KKT matrix -- and move between instances with ``update(b=..., c=...)``, reusing the
factorization. That is how warm starts are deployed on the Kalman and fixed-``F`` Lasso
families.

Reuse is *not* iteration-for-iteration equivalent to fresh solves under SCS's defaults: an
updated solver keeps the ``b``/``c`` normalization computed for the first instance
(``normalize=True``) and the dual scale adapted during the previous solve
(``adaptive_scale=True``). Solutions still meet the tolerance, but iteration counts then
depend on the batch order. With ``normalize=False`` and ``adaptive_scale=False`` the
iteration counts are identical (checked on 50 Kalman and 50 dynamic-Lasso instances), and
``solve_batch_with_scs(reuse=None)`` reuses exactly in that case.

Measured with the snippet in :func:`solve_batch_with_scs`'s docstring, extended with the
settings of each row (50 instances ``seed=0``, ``eps = 1e-4``, no AA, ``OMP_NUM_THREADS=
MKL_NUM_THREADS=1``, 2-core AMD EPYC container, best of 3; per instance; "fixed F" is
``LassoFamily(50, 100, fixed_matrix_seed=0)``):

=============================  =========  ==========  ======  =========
family, settings               mode       setup (ms)  iters   total (ms)
=============================  =========  ==========  ======  =========
Kalman 50 steps, SCS defaults  fresh      1.45        289.5   13.1
Kalman 50 steps, SCS defaults  reuse      0.04        606.5   23.8
Kalman, ``qdldl``              fresh      0.63        293.5    6.3
Kalman, ``qdldl``              reuse      0.02        554.5   10.6
Kalman, no normalize/adaptive  fresh      1.15        332.0   13.7
Kalman, no normalize/adaptive  reuse      0.03        332.0   12.7
Lasso p=50 q=100 fixed F       fresh      1.69        263.0    6.3
Lasso p=50 q=100 fixed F       reuse      0.04        484.5    8.5
Lasso, no normalize/adaptive   fresh      1.52       1893.5   31.9
Lasso, no normalize/adaptive   reuse      0.04       1893.5   30.4
=============================  =========  ==========  ======  =========

So ``update`` does remove the setup (factorization) cost, 0.6-1.7 ms here, but under SCS's
defaults the carried-over adapted scale roughly doubles the iterations and reuse is a net loss; it
pays only when normalization and scale adaptation are off (about 8 % faster at identical
iterations), which costs many more iterations on Lasso. Hence ``reuse=None`` reuses only
in that exact case. (SCS's ``auto`` linear solver picks MKL Pardiso where installed; the
bundled ``qdldl`` is about twice as fast on these small problems: pass
``linear_solver="qdldl"``.)

SCS's conventions (``min c^T x s.t. A x + s = b, s in K``, cones ``z`` (zero), ``l``
(nonneg), ``q`` (SOC sizes) in that row order) are the same as :class:`ConeProgram`'s, so the
data pass through unchanged.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from ..extras import require
from ..problems import ConeProgram
from ..validation import check_count, check_nonnegative

_WARM_KEYS = ("x", "y", "s")


def scs_problem_data(program: ConeProgram, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, cone)`` of instance ``index`` in the form ``scs.SCS(data, cone)`` takes:
    ``data = {A: csc_matrix, b, c}`` (float64, copies), ``cone = {z, l, q}``."""
    index = _check_index(program, index)
    matrix = program.matrix if program.shared_matrix else program.matrix[index]
    data = {"A": _csc(matrix),
            "b": _numpy(program.rhs[index]).copy(),
            "c": _numpy(program.cost[index]).copy()}
    return data, _cone_dict(program)


def solve_with_scs(program: ConeProgram, index: int, *, eps_abs: float = 1e-4,
                   eps_rel: float = 1e-4, max_iters: int = 100_000,
                   warm_start: dict | None = None, acceleration_lookback: int = 0,
                   normalize: bool = True, verbose: bool = False, **settings) -> dict[str, Any]:
    """Solve instance ``index`` of ``program`` with the ``scs`` package.

    Args:
        program: the batch of cone programs (SCS standard form).
        index: which instance.
        eps_abs, eps_rel: SCS's stopping tolerances.
        max_iters: SCS's iteration limit.
        warm_start: ``None`` for a cold start, or a dict with any of ``x`` ``(n,)``, ``y``
            ``(m,)``, ``s`` ``(m,)`` (NumPy arrays or tensors); missing ones start at zero.
        acceleration_lookback: memory of SCS's Anderson acceleration (the paper's SCS+AA uses
            5); 0 disables it (plain SCS). Note SCS's own default is 10.
        normalize: SCS's heuristic data equilibration.
        verbose: SCS's progress output.
        **settings: any other SCS setting (``alpha``, ``scale``, ``adaptive_scale``, ``rho_x``,
            ``acceleration_interval``, ``time_limit_secs``, ``linear_solver``...); an unknown
            name raises ``TypeError`` (from SCS).

    Returns:
        ``dict`` with ``x``, ``y``, ``s`` (NumPy), ``status`` (SCS's string, e.g.
        ``"solved"``), ``status_val`` (SCS's integer code), ``iterations``, ``solve_time`` (SCS's
        reported setup + solve time, seconds), ``setup_time`` (its setup part), ``wall_time``
        (seconds measured around the ``solve`` call), ``setup_wall_time`` (around the
        ``scs.SCS`` constructor), ``objective`` (``c^T x``; add the program's ``offset``, if it
        has one, for the original problem's value) and ``info`` (SCS's full info dict).

    Example:
        >>> from metasolve.tasks.conic import LassoFamily
        >>> prog = LassoFamily(p=10, q=20).sample(1, seed=0).problem
        >>> solve_with_scs(prog, 0)["status"]
        'solved'
    """
    scs = require("scs", "solving with the scs package")

    stgs = _settings(eps_abs, eps_rel, max_iters, acceleration_lookback, normalize, verbose,
                     settings)
    data, cone = scs_problem_data(program, index)
    warm = _warm_start(program, warm_start)
    start = time.perf_counter()
    solver = scs.SCS(data, cone, **stgs)
    setup_wall = time.perf_counter() - start
    result = _solve(solver, warm, data["c"])
    result["setup_wall_time"] = setup_wall
    return result


def solve_batch_with_scs(program: ConeProgram, *, indices=None, warm_starts=None,
                         reuse: bool | None = None, eps_abs: float = 1e-4,
                         eps_rel: float = 1e-4, max_iters: int = 100_000,
                         acceleration_lookback: int = 0, normalize: bool = True,
                         verbose: bool = False, **settings) -> list[dict[str, Any]]:
    """:func:`solve_with_scs` on each instance of ``program`` (or of ``indices``).

    Args:
        indices: which instances (default: all), solved in this order.
        warm_starts: ``None``, or one entry per solved instance: a dict as in
            :func:`solve_with_scs` or ``None`` (cold start).
        reuse: with a shared matrix, build one ``scs.SCS`` and ``update`` ``b`` and ``c`` for
            later instances (their ``setup_wall_time`` is then the update's and ``reused`` is
            ``True``). ``None`` (default): reuse only where it is exactly equivalent to fresh
            solves, i.e. ``normalize=False`` and ``adaptive_scale=False`` (see the module
            docstring); ``True``: reuse whenever the matrix is shared (deployment: fastest,
            iteration counts may depend on order); ``False``: never.
        other arguments: as in :func:`solve_with_scs`.

    Every solve starts cold unless a warm start is given: SCS's implicit "continue from the
    previous solution" is never used.

    Example (the timings in the module docstring)::

        import time, torch; torch.set_num_threads(1)
        from metasolve.tasks.conic import KalmanFamily
        from metasolve.baselines.scs_reference import solve_batch_with_scs
        prog = KalmanFamily().sample(50, seed=0).problem
        for reuse in (True, False):
            t = time.perf_counter(); solve_batch_with_scs(prog, reuse=reuse)
            print(reuse, (time.perf_counter() - t) / 50)
    """
    scs = require("scs", "solving with the scs package")

    stgs = _settings(eps_abs, eps_rel, max_iters, acceleration_lookback, normalize, verbose,
                     settings)
    indices = list(range(program.batch_size)) if indices is None else \
        [_check_index(program, i) for i in indices]
    if warm_starts is not None and len(warm_starts) != len(indices):
        raise ValueError(f"warm_starts must have one entry per solved instance "
                         f"({len(indices)}), got {len(warm_starts)}")
    if reuse is None:
        reuse = not normalize and not stgs.get("adaptive_scale", True)
    shared = bool(reuse) and program.shared_matrix
    cone = _cone_dict(program)
    # Convert a shared A to CSC once, not per instance.
    shared_csc = _csc(program.matrix) if program.shared_matrix else None
    solver = None
    results = []
    for k, i in enumerate(indices):
        warm = _warm_start(program, None if warm_starts is None else warm_starts[k])
        b, c = _numpy(program.rhs[i]).copy(), _numpy(program.cost[i]).copy()
        start = time.perf_counter()
        if shared and solver is not None:
            solver.update(b=b, c=c)
            reused = True
        else:
            a = shared_csc if shared_csc is not None else _csc(program.matrix[i])
            solver = scs.SCS({"A": a, "b": b, "c": c}, cone, **stgs)
            reused = False
        setup_wall = time.perf_counter() - start
        result = _solve(solver, warm, c)
        result["setup_wall_time"] = setup_wall
        result["reused"] = reused
        results.append(result)
    return results


# --------------------------------------------------------------------------------------------


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.float64)


def _csc(matrix):
    from scipy import sparse

    return sparse.csc_matrix(_numpy(matrix))


def _check_index(program: ConeProgram, index) -> int:
    if isinstance(index, torch.Tensor) and index.ndim == 0:
        index = int(index)
    if isinstance(index, np.integer):
        index = int(index)
    check_count("index", index)
    if index >= program.batch_size:
        raise ValueError(f"index must be < the batch size {program.batch_size}, got {index}")
    return index


def _cone_dict(program: ConeProgram) -> dict[str, Any]:
    cones = program.cones
    return {"z": int(cones.zero), "l": int(cones.nonneg), "q": [int(q) for q in cones.soc]}


def _settings(eps_abs, eps_rel, max_iters, acceleration_lookback, normalize, verbose,
              settings) -> dict[str, Any]:
    if "warm_start" in settings:
        raise TypeError("warm_start is not an SCS setting here; pass warm_start={x, y, s}")
    stgs = {"eps_abs": check_nonnegative("eps_abs", eps_abs),
            "eps_rel": check_nonnegative("eps_rel", eps_rel),
            "max_iters": check_count("max_iters", max_iters, minimum=1),
            "acceleration_lookback": check_count("acceleration_lookback",
                                                 acceleration_lookback),
            "normalize": bool(normalize), "verbose": bool(verbose)}
    stgs.update(settings)
    return stgs


def _warm_start(program: ConeProgram, warm_start) -> dict[str, np.ndarray] | None:
    if warm_start is None:
        return None
    if not isinstance(warm_start, dict):
        raise TypeError(f"warm_start must be a dict with keys among {_WARM_KEYS} or None, "
                        f"got {type(warm_start).__name__}")
    unknown = sorted(set(warm_start) - set(_WARM_KEYS))
    if unknown:
        raise TypeError(f"warm_start has unknown keys {unknown}; expected some of "
                        f"{_WARM_KEYS}")
    sizes = {"x": program.variables, "y": program.constraints, "s": program.constraints}
    warm = {}
    for key, size in sizes.items():
        value = warm_start.get(key)
        # A missing part starts at zero (SCS's cold start), never at a previous solve's value.
        array = np.zeros(size) if value is None else _numpy(value).reshape(-1).copy()
        if array.shape != (size,):
            raise ValueError(f"warm_start[{key!r}] must have {size} entries, got "
                             f"{array.size}")
        if not np.isfinite(array).all():
            raise ValueError(f"warm_start[{key!r}] contains NaN or Inf entries")
        warm[key] = array
    return warm


def _solve(solver, warm: dict[str, np.ndarray] | None, c: np.ndarray) -> dict[str, Any]:
    start = time.perf_counter()
    if warm is None:
        out = solver.solve(warm_start=False)
    else:
        out = solver.solve(warm_start=True, x=warm["x"], y=warm["y"], s=warm["s"])
    wall = time.perf_counter() - start
    info = out["info"]
    x = np.asarray(out["x"], dtype=np.float64)
    return {
        "x": x,
        "y": np.asarray(out["y"], dtype=np.float64),
        "s": np.asarray(out["s"], dtype=np.float64),
        "status": str(info["status"]),
        "status_val": int(info["status_val"]),
        "iterations": int(info["iter"]),
        # SCS reports milliseconds.
        "solve_time": (float(info["setup_time"]) + float(info["solve_time"])) / 1000.0,
        "setup_time": float(info["setup_time"]) / 1000.0,
        "wall_time": wall,
        "objective": float(c @ x),
        "info": info,
    }
