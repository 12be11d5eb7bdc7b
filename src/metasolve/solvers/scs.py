"""The SCS fixed-point iteration on the homogeneous self-dual embedding, batched and
differentiable (neural SCS paper, sec. 3.2, eq. 2-6; O'Donoghue et al. 2016).

With ``u = (x, y, tau)``, ``v = (r, s, kappa)`` and ``Q = [[0, A^T, c], [-A, 0, b],
[-c^T, -b^T, 0]]``, one iteration with relaxation ``alpha`` (SCS's over-relaxation, 1.5 by
default) is::

    u~ = (I + Q)^{-1} (u + v)                      (eq. 4, the linear step)
    u^ = alpha u~ + (1 - alpha) u
    u+ = Pi_C(u^ - v)                              (eq. 5, C = R^n x K* x R_+)
    v+ = v - u^ + u+                               (eq. 6)

The linear step never forms ``I + Q``: writing ``M = [[I, A^T], [-A, I]]`` and ``h = (c, b)``,
``(I + Q) (z, tau) = (w, w_tau)`` gives ``tau = (w_tau + h.M^{-1} w) / (1 + h.M^{-1} h)`` and
``z = M^{-1} w - M^{-1} h tau``; ``M^{-1}`` needs one Cholesky factorisation of ``I + A^T A`` per
distinct matrix (once per batch when ``A`` is shared, as in Kalman filtering), and
``g = M^{-1} h`` one solve per instance, both in :meth:`SCS.init`. Autograd differentiates the
triangular solves analytically (implicit differentiation of the linear system, sec. 4.3.2), not
by unrolling anything.

The driver's iterate ``state["x"]`` is ``(u, v)`` ``(B, 2 (n + m + 1))``: an initial guess or a
learned prediction is given in that layout (:func:`pack`, :func:`unpack`). The monitored norm is
the tau-normalised fixed-point residual of sec. 4.3.2, ``||z_k / tau_k - f(z_k) / tau(f(z_k))||``
with ``z = (u, v)``: ``init`` applies the map once to measure it at the start, and every step
applies it once (the step's new iterate is the previous application's output, or, in a
subclass, an accelerated combination). The stopping test is SCS's (version 3, infinity norms):
primal ``||A x + s - b|| <= eps_abs + eps_rel max(||A x||, ||s||, ||b||)``, dual
``||A^T y + c|| <= eps_abs + eps_rel max(||A^T y||, ||c||)`` and gap
``|c^T x + b^T y| <= eps_abs + eps_rel max(|c^T x|, |b^T y|)``, at ``(x, y, s) = (u_x, u_y,
v_s) / tau``; ``run``'s ``rtol``/``atol`` are not used.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..cones import project_dual_cone
from ..problems import ConeProgram
from ..validation import check_positive
from .base import IterativeMethod, State
from .registry import register_method


def pack(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(u, v) -> z``, the driver's iterate."""
    return torch.cat([u, v], dim=-1)


def unpack(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = z.shape[-1] // 2
    return z[..., :half], z[..., half:]


def cold_start(problem: ConeProgram) -> torch.Tensor:
    """The cold start ``u = (0, 0, 1)``, ``v = 0``. (With ``kappa = 1`` as well, the first
    iterates' ``tau`` is projected to zero whenever ``h.M^{-1} h`` is large, i.e. for data with
    large ``||b||`` or ``||c||``, and the tau-normalised residual is undefined there.)"""
    k = problem.variables + problem.constraints + 1
    u = torch.zeros(problem.batch_size, k, dtype=problem.dtype, device=problem.rhs.device)
    u[:, -1] = 1.0
    return pack(u, torch.zeros_like(u))


def embedding_vector(problem: ConeProgram, normalize: bool) -> torch.Tensor:
    """``h = (c, b)``, or ``(c / ||c||, b / ||b||)`` when the data are normalised."""
    if not normalize:
        return torch.cat([problem.cost, problem.rhs], dim=1)
    beta, gamma = problem.data_scales()
    return torch.cat([problem.cost / gamma.unsqueeze(1), problem.rhs / beta.unsqueeze(1)], dim=1)


class LinearStep:
    """``(I + Q)^{-1}`` for a batch of cone programs, factorised once (see the module doc)."""

    #: The tensors that define the step, kept in the solver state between iterations.
    PARTS = ("factor", "h", "g", "denominator")

    def __init__(self, problem: ConeProgram, normalize: bool = True,
                 parts: Mapping[str, torch.Tensor] | None = None):
        self.problem = problem
        if parts is not None:  # rebuilt from the state: nothing to factorise again
            for key in self.PARTS:
                setattr(self, key, parts[key])
            return
        a = problem.matrix
        n = problem.variables
        eye = torch.eye(n, dtype=a.dtype, device=a.device)
        gram = a.mT @ a if problem.shared_matrix else torch.bmm(a.mT, a)
        self.factor = torch.linalg.cholesky(eye + gram)
        self.h = embedding_vector(problem, normalize)
        self.g = self._solve_m(self.h)
        self.denominator = 1.0 + (self.h * self.g).sum(dim=1)

    def parts(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in self.PARTS}

    def _solve_m(self, w: torch.Tensor) -> torch.Tensor:
        """``M^{-1} w`` for ``w = (w_x, w_y)``: ``(I + A^T A) x = w_x - A^T w_y``,
        ``y = w_y + A x``."""
        n = self.problem.variables
        wx, wy = w[:, :n], w[:, n:]
        rhs = wx - self.problem.rmatvec(wy)
        if self.problem.shared_matrix:
            x = torch.cholesky_solve(rhs.T, self.factor).T
        else:
            x = torch.cholesky_solve(rhs.unsqueeze(-1), self.factor).squeeze(-1)
        return torch.cat([x, wy + self.problem.matvec(x)], dim=1)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        wz, wt = w[:, :-1], w[:, -1]
        mz = self._solve_m(wz)
        tau = (wt + (self.h * mz).sum(dim=1)) / self.denominator
        return torch.cat([mz - self.g * tau.unsqueeze(1), tau.unsqueeze(1)], dim=1)


#: ``tau`` below this is measured as this: an iterate whose ``tau`` was projected to zero (the
#: embedding's scale still settling, or a poor learned prediction) gets a large but finite
#: normalised residual instead of a division by zero.
TAU_FLOOR = 1e-6


def tau_normalized(z: torch.Tensor) -> torch.Tensor:
    """``z / tau`` (``tau`` is the last entry of ``u``), the scale-free iterate of sec. 4.3.2."""
    u, _ = unpack(z)
    return z / u[:, -1:].clamp_min(TAU_FLOOR)


@register_method
class SCS(IterativeMethod):
    """The SCS iteration (eq. 4-6) with relaxation ``alpha`` and SCS's stopping test.

    Args:
        alpha: over-relaxation in (0, 2) (SCS's default 1.5; 1 is plain Douglas-Rachford).
        eps_abs, eps_rel: the stopping tolerances of SCS 3.
        normalize: iterate on ``b / ||b||`` and ``c / ||c||`` (an equivalent program; SCS
            normalises its data too). Without it, data with large ``||b||, ||c||`` (Kalman
            measurements, Lasso) drive ``tau`` to zero in the first iterations and converge
            orders of magnitude slower. The iterate then lives in the normalised program;
            :func:`primal_dual` maps it back, and every reported residual is the original
            program's.

    Example:
        >>> import torch, metasolve as ms
        >>> from metasolve.problems import ConeProgram, ConeSpec
        >>> a = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)   # x <= 1 and x >= -2
        >>> prog = ConeProgram(a, torch.tensor([[1.0, 2.0]], dtype=torch.float64),
        ...                    torch.tensor([[-1.0]], dtype=torch.float64), ConeSpec(nonneg=2))
        >>> sol = ms.run(ms.SCS(eps_abs=1e-9, eps_rel=1e-9), prog, maxiter=500)
        >>> round(float(ms.solvers.scs.primal_dual(prog, sol.x)["x"][0, 0]), 6)
        1.0
    """

    name = "scs"
    problem_type = ConeProgram

    def __init__(self, alpha: float = 1.5, eps_abs: float = 1e-4, eps_rel: float = 1e-4,
                 normalize: bool = True):
        self.alpha = check_positive("alpha", alpha)
        if self.alpha >= 2:
            raise ValueError(f"alpha must lie in (0, 2), got {alpha}")
        self.eps_abs = check_positive("eps_abs", eps_abs)
        self.eps_rel = check_positive("eps_rel", eps_rel)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        self.normalize = normalize

    def config(self) -> dict:
        return {"alpha": self.alpha, "eps_abs": self.eps_abs, "eps_rel": self.eps_rel,
                "normalize": self.normalize}

    def zero_guess(self, problem: ConeProgram) -> torch.Tensor:
        return cold_start(problem)

    def reference_norm(self, problem: ConeProgram) -> torch.Tensor:
        """``R_0 = ||z_0 - f(z_0)||`` at the cold start, *not* tau-normalised (the image's
        ``tau`` may be 0 in the first iterations, where the normalised residual is not
        meaningful): a constant of each program, the normaliser of the neural SCS paper's loss
        (eq. 7), so a learned initializer cannot shrink it. It differs from the history's row
        0 (which is tau-normalised) by a factor of order 1."""
        with torch.no_grad():
            start = cold_start(problem)
            image = SCS.fixed_point_map(self, problem, LinearStep(problem, self.normalize),
                                        start)
            return torch.linalg.vector_norm(start - image, dim=1)

    def fixed_point_map(self, problem: ConeProgram, linear: LinearStep,
                        z: torch.Tensor) -> torch.Tensor:
        """``f(z)``: one SCS iteration from ``z = (u, v)``."""
        u, v = unpack(z)
        n, m = problem.variables, problem.constraints
        tilde = linear(u + v)
        relaxed = self.alpha * tilde + (1 - self.alpha) * u
        w = relaxed - v
        projected = torch.cat([w[:, :n], project_dual_cone(w[:, n:n + m], problem.cones),
                               w[:, -1:].clamp_min(0)], dim=1)
        return pack(projected, v - relaxed + projected)

    @staticmethod
    def residual_of(z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
        """``||z / tau - f(z) / tau_f||``, the fixed-point residual of sec. 4.3.2."""
        return torch.linalg.vector_norm(tau_normalized(z) - tau_normalized(fz), dim=1)

    def accelerate(self, problem: ConeProgram, state: State, z: torch.Tensor, fz: torch.Tensor,
                   fixed_point_map) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """The next iterate from ``z`` and ``f(z)``, the state a subclass keeps, and ``f`` at the
        next iterate if the rule already evaluated it (else ``None``). Plain SCS takes ``f(z)``.
        Subclasses (Anderson, learned models) override this; ``fixed_point_map(z)`` is ``f``."""
        return fz, {}, None

    def init(self, problem: ConeProgram, x0: torch.Tensor,
             params: Mapping[str, torch.Tensor]) -> State:
        linear = LinearStep(problem, self.normalize)
        fz = self.fixed_point_map(problem, linear, x0)
        state = {"x": x0, "fx": fz, **linear.parts(),
                 "k": torch.zeros(problem.batch_size, dtype=torch.int64,
                                  device=x0.device)}
        state.update(self.init_extra(problem, x0, fz, params))
        return state

    def init_extra(self, problem, x0, fz, params) -> State:
        """Extra state of a subclass (history, hidden state), built at the start."""
        return {}

    def step(self, problem: ConeProgram, state: State,
             params: Mapping[str, torch.Tensor]) -> State:
        linear = LinearStep(problem, parts=state)
        def f(z):
            return self.fixed_point_map(problem, linear, z)

        z_next, extra, fz_next = self.accelerate(problem, state, state["x"], state["fx"], f)
        if fz_next is None:
            fz_next = f(z_next)
        new = dict(state)
        new.update(extra)
        new.update({"x": z_next, "fx": fz_next, "k": state["k"] + 1})
        return new

    def residual(self, problem: ConeProgram, state: State) -> torch.Tensor:
        return self.residual_of(state["x"], state["fx"])

    def converged(self, problem: ConeProgram, state: State, norms: torch.Tensor,
                  threshold: torch.Tensor) -> torch.Tensor:
        res = primal_dual(problem, state["x"], self.normalize)
        ok = torch.ones_like(norms, dtype=torch.bool)
        for name in ("primal", "dual", "gap"):
            ok &= res[name] <= self.eps_abs + self.eps_rel * res[f"{name}_scale"]
        return ok & (res["tau"] > 0)


def primal_dual(problem: ConeProgram, z: torch.Tensor,
                normalize: bool = True) -> dict[str, torch.Tensor]:
    """The candidate solution ``(x, y, s) = (u_x, u_y, v_s) / tau`` of the iterate ``z`` (of the
    normalised program when ``normalize``, mapped back: ``x, s`` times ``||b||``, ``y`` times
    ``||c||``) and its residuals as SCS 3 reports them (infinity norms):
    ``primal = ||A x + s - b||``, ``dual = ||A^T y + c||``, ``gap = |c^T x + b^T y|``, with the
    scales their relative tolerances multiply (``primal_scale`` etc.)."""
    n, m = problem.variables, problem.constraints
    normalized = tau_normalized(z)
    u, v = unpack(normalized)
    x, y, s = u[:, :n], u[:, n:n + m], v[:, n:n + m]
    if normalize:
        beta, gamma = problem.data_scales()
        x, s, y = x * beta.unsqueeze(1), s * beta.unsqueeze(1), y * gamma.unsqueeze(1)
    ax, aty = problem.matvec(x), problem.rmatvec(y)
    inf = torch.inf
    cx, by = (problem.cost * x).sum(dim=1), (problem.rhs * y).sum(dim=1)
    return {
        "x": x, "y": y, "s": s, "tau": unpack(z)[0][:, -1],
        "primal": torch.linalg.vector_norm(ax + s - problem.rhs, ord=inf, dim=1),
        "primal_scale": torch.stack([torch.linalg.vector_norm(t, ord=inf, dim=1)
                                     for t in (ax, s, problem.rhs)]).amax(dim=0),
        "dual": torch.linalg.vector_norm(aty + problem.cost, ord=inf, dim=1),
        "dual_scale": torch.stack([torch.linalg.vector_norm(t, ord=inf, dim=1)
                                   for t in (aty, problem.cost)]).amax(dim=0),
        "gap": (cx + by).abs(), "gap_scale": torch.maximum(cx.abs(), by.abs()),
        "objective": cx,
    }
