"""SciPy's restarted GMRES and Newton-Krylov-GMRES as per-instance baselines with residual
histories and counted function evaluations (the R2N2 paper's references, sec. 4.1-4.2).

Both count every call of the operator or function they are given, so a comparison "at equal
function evaluations" is checked, not assumed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from ..problems import check_vectors
from ..validation import check_count, check_tensor


def gmres_history(matrices: torch.Tensor, rhs: torch.Tensor, restart: int, cycles: int,
                  x0: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """GMRES(``restart``) for ``cycles`` restart cycles on each ``A_i x = b_i``.

    Args:
        matrices: ``(B, m, m)`` (or one ``(m, m)`` shared by the batch), finite.
        rhs: ``(B, m)``, finite.
        restart: Krylov dimension per cycle (the R2N2's layers ``n``: the same subspace
            ``K_n(A, r_k)`` as one R2N2 outer iteration).
        cycles: outer iterations (restarts).
        x0: ``(B, m)`` initial guesses with ``rhs``'s dtype and device; zeros when ``None``.

    Returns:
        ``residual`` ``(cycles + 1, B)``: ``||A x_k - b||`` after ``k`` cycles; ``matvecs``
        ``(cycles, B)``: products of each cycle; ``x`` ``(B, m)``.
    """
    from scipy.sparse.linalg import LinearOperator, gmres

    check_tensor("rhs", rhs, ndim=2)
    batch, m = rhs.shape
    check_tensor("matrices", matrices, ndim=(2, 3))
    want = (m, m) if matrices.ndim == 2 else (batch, m, m)
    if tuple(matrices.shape) != want:
        raise ValueError(f"matrices must have shape {want} to match rhs {tuple(rhs.shape)}, "
                         f"got {tuple(matrices.shape)}")
    if x0 is not None:
        check_vectors("x0", x0, like=rhs)
    check_count("restart", restart, minimum=1)
    check_count("cycles", cycles, minimum=1)
    mats = matrices.detach().double().cpu().numpy()
    if mats.ndim == 2:
        mats = np.broadcast_to(mats, (batch, m, m))
    b = rhs.detach().double().cpu().numpy()
    xs = np.zeros_like(b) if x0 is None else x0.detach().double().cpu().numpy().copy()
    residual = np.zeros((cycles + 1, batch))
    matvecs = np.zeros((cycles, batch), dtype=np.int64)
    for i in range(batch):
        a = mats[i]
        count = [0]

        def product(v, a=a, count=count):
            count[0] += 1
            return a @ np.ravel(v)

        op = LinearOperator((m, m), matvec=product, dtype=np.float64)
        x = xs[i]
        residual[0, i] = np.linalg.norm(a @ x - b[i])
        for k in range(cycles):
            count[0] = 0
            x, _ = gmres(op, b[i], x0=x, rtol=0.0, atol=0.0, restart=restart, maxiter=1)
            matvecs[k, i] = count[0]
            residual[k + 1, i] = np.linalg.norm(a @ x - b[i])
        xs[i] = x
    return {"residual": residual, "matvecs": matvecs, "x": xs}


def newton_krylov_history(function: Callable[[np.ndarray], np.ndarray], x0: np.ndarray,
                          iterations: int, inner_dim: int) -> dict[str, np.ndarray]:
    """SciPy's ``newton_krylov`` with a GMRES inner solver of ``inner_dim`` steps, no line
    search, for exactly ``iterations`` Newton steps (or until ``f`` is exactly zero).

    With SciPy 1.17 a Newton step calls ``f`` ``inner_dim + 2`` times: once per Arnoldi step
    (a forward-difference Jacobian-vector product), once more inside GMRES for the residual of
    its result after the cycle (another product), and once at the new iterate (the next step's
    ``f(x_k)``). The inner GMRES stops early, with fewer calls, when it meets Newton's forcing
    tolerance. The counts are returned, so callers can check them against the method they
    compare with.

    Args:
        function: ``f``, mapping a 1-D NumPy array to one of the same length.
        x0: the starting point, a finite 1-D array.
        iterations: Newton steps.
        inner_dim: GMRES steps per Newton step (SciPy's ``inner_maxiter``).

    Returns:
        ``residual`` ``(iterations + 1,)``: ``||f(x_k)||`` (the last value repeated after an
        exact or failed stop); ``evaluations`` ``(iterations,)``: calls of ``f`` per Newton step
        (the start's evaluation counted in the first); ``x``.
    """
    from scipy.optimize import newton_krylov
    from scipy.optimize._nonlin import NoConvergence

    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    try:
        start = np.array(x0, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"x0 must be a finite 1-D array of real numbers, got "
                         f"{type(x0).__name__}") from error
    if start.ndim != 1 or start.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {start.shape}")
    if not np.isfinite(start).all():
        raise ValueError(f"x0 contains {int((~np.isfinite(start)).sum())} NaN or Inf entries; "
                         f"expected finite values")
    check_count("iterations", iterations, minimum=1)
    check_count("inner_dim", inner_dim, minimum=1)
    calls = [0]

    def counted(x):
        calls[0] += 1
        return function(x)

    residual = [float(np.linalg.norm(function(start.copy())))]
    evaluations = []
    last = [start.copy()]

    def record(x, fx):
        residual.append(float(np.linalg.norm(fx)))
        evaluations.append(calls[0])
        calls[0] = 0
        last[0] = np.array(x, dtype=np.float64)

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            newton_krylov(counted, start.copy(), iter=iterations,
                          method="gmres", inner_maxiter=inner_dim, line_search=None,
                          callback=record, f_tol=0.0, f_rtol=0.0, x_tol=0.0, x_rtol=0.0)
        except (NoConvergence, ValueError, FloatingPointError, np.linalg.LinAlgError):
            pass
    while len(residual) < iterations + 1:  # stopped early: exact zero or a failed step
        residual.append(residual[-1])
        evaluations.append(0)
    return {"residual": np.array(residual[:iterations + 1]),
            "evaluations": np.array(evaluations[:iterations], dtype=np.int64), "x": last[0]}
