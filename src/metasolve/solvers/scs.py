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
by unrolling anything. A sparse ``A`` shared by the batch on the CPU (Kalman filtering:
662 nonzeros of 90,630 at 20 time steps) is applied with SciPy's sparse products and one sparse
factorisation of ``I + A^T A`` (SuperLU), solved against the whole batch at once
(:class:`~metasolve.sparse.SharedSparseMatrix`).

Each iteration is two kernels around that solve (:func:`_plain_step_start`,
:func:`_plain_step_end`): the second computes ``f(z)``, the fixed-point residual of ``z`` and
SCS's stopping test at ``z`` in one pass over the batch, so the driver's ``residual`` and
``converged`` only read them from the state. The kernels take the batch as columns (the
transpose of the driver's rows) and the iterates are held that way in memory (``z.T``
contiguous): the sparse products then gather whole rows of the batch, and every reduction runs
across rows. With compiled kernels on (:mod:`metasolve.kernels`) each kernel is one fused loop;
``python benchmarks/scs_per_iteration.py`` measures both against the ``scs`` package.

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
from ..kernels import compiled, euclidean_norm
from ..problems import ConeProgram, apply_matrix
from ..validation import check_positive
from .base import IterativeMethod, State, batch_fastest
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
    """``(I + Q)^{-1}`` for a batch of cone programs, factorised once (see the module doc).

    A sparse ``A`` shared by the batch on the CPU (:attr:`ConeProgram.sparse`) is factorised
    sparse, once per matrix, and the state holds no factor; otherwise the state holds the
    dense Cholesky factor of ``I + A^T A`` (one, or one per instance). ``h`` and ``g`` are
    ``(B, n + m)``, held with the batch fastest like the iterates."""

    #: The tensors that define the step, kept in the solver state between iterations.
    PARTS = ("factor", "h", "g", "denominator")

    def __init__(self, problem: ConeProgram, normalize: bool = True,
                 parts: Mapping[str, torch.Tensor] | None = None):
        self.problem = problem
        self.operator = problem.operator
        if parts is not None:  # rebuilt from the state: nothing to factorise again
            for key in self.PARTS:
                setattr(self, key, parts.get(key))
            return
        self.factor = None
        if isinstance(self.operator, torch.Tensor):
            a = problem.matrix
            eye = torch.eye(problem.variables, dtype=a.dtype, device=a.device)
            gram = a.mT @ a if problem.shared_matrix else torch.bmm(a.mT, a)
            self.factor = torch.linalg.cholesky(eye + gram)
        self.h = batch_fastest(embedding_vector(problem, normalize))
        h = self.h.T
        x = self.solve_gram(_gram_rhs(self.operator, h))
        self.g = torch.cat([x, h[problem.variables:] + apply_matrix(self.operator, x)]).T
        self.denominator = 1.0 + torch.linalg.vecdot(self.h, self.g)

    def parts(self) -> dict[str, torch.Tensor]:
        return {key: getattr(self, key) for key in self.PARTS
                if getattr(self, key) is not None}

    def solve_gram(self, rhs: torch.Tensor) -> torch.Tensor:
        """``(I + A^T A)^{-1} r`` for a batch of columns ``r`` ``(n, B)``."""
        if self.factor is None:
            return self.operator.solve_gram(rhs)
        if self.problem.shared_matrix:
            return torch.cholesky_solve(rhs, self.factor)
        return torch.cholesky_solve(rhs.T.unsqueeze(-1), self.factor).squeeze(-1).T

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """``(I + Q)^{-1} w`` for ``w`` ``(B, n + m + 1)``."""
        x = self.solve_gram(_gram_rhs(self.operator, w.T))
        return _embedding_solution(self.operator, self.h.T, self.g.T, self.denominator, w.T,
                                   x).T


# The kernels below take every per-instance vector as a batch of columns ((length, B), the
# transpose of the driver's rows): the sparse products then gather whole rows of the batch,
# and the cones' and the stopping test's reductions run across rows (kernels.py).


def _gram_rhs(operator, w: torch.Tensor) -> torch.Tensor:
    """``w_x - A^T w_y``, the right-hand side of ``(I + A^T A) x`` in ``M^{-1} w``."""
    n, m = operator.shape[-1], operator.shape[-2]
    return w[:n] - apply_matrix(operator, w[n:n + m], adjoint=True)


def _embedding_solution(operator, h, g, denominator, w, x) -> torch.Tensor:
    """``(I + Q)^{-1} w`` from ``x``, the solution of ``(I + A^T A) x = w_x - A^T w_y``:
    ``M^{-1} w_z = (x, w_y + A x)``, ``tau = (w_tau + h.M^{-1} w_z) / (1 + h.g)`` and
    ``z = M^{-1} w_z - g tau``."""
    n, m = operator.shape[-1], operator.shape[-2]
    y = w[n:n + m] + apply_matrix(operator, x)
    tau = (w[-1] + (h[:n] * x).sum(dim=0) + (h[n:] * y).sum(dim=0)) / denominator
    return torch.cat([x - g[:n] * tau, y - g[n:] * tau, tau.unsqueeze(0)])


@compiled
def _plain_step_start(operator, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w = u + v`` and the right-hand side of its Gram solve (eq. 4, before the solve)."""
    half = z.shape[0] // 2
    w = z[:half] + z[half:]
    return w, _gram_rhs(operator, w)


@compiled
def _plain_step_end(operator, cones, h, g, denominator, alpha: float, z: torch.Tensor,
                    w: torch.Tensor, x: torch.Tensor, tests) -> tuple[torch.Tensor, ...]:
    """The rest of one SCS iteration from the Gram solve's ``x`` (eq. 4-6): ``f(z)``, and, in
    the same pass over ``z``, the fixed-point residual of ``z`` and whether ``z`` passes SCS's
    stopping test (``tests``: the arguments of :func:`_passes` after ``z``; ``None``: ``f(z)``
    alone, for a candidate an acceleration rule evaluates)."""
    half = z.shape[0] // 2
    u, v = z[:half], z[half:]
    n, m = operator.shape[-1], operator.shape[-2]
    tilde = _embedding_solution(operator, h, g, denominator, w, x)
    relaxed = torch.lerp(u, tilde, alpha)  # alpha tilde + (1 - alpha) u
    shifted = relaxed - v
    projected = torch.cat([shifted[:n], project_dual_cone(shifted[n:n + m], cones, dim=0),
                           shifted[-1:].clamp_min(0)])
    fz = torch.cat([projected, projected - shifted])  # v+ = v - u^ + u+
    if tests is None:
        return fz, None, None
    return fz, _fixed_point_residual.uncompiled(z, fz), _passes.uncompiled(z, *tests)


@compiled
def _fixed_point_residual(z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    half = z.shape[0] // 2
    inverse = 1 / z[half - 1].clamp_min(TAU_FLOOR)
    inverse_f = 1 / fz[half - 1].clamp_min(TAU_FLOOR)
    # z / tau - f(z) / tau_f in two passes over the batch; the product is a fresh tensor,
    # so updating it in place keeps every tensor autograd saved.
    return euclidean_norm((z * inverse).addcmul_(fz, inverse_f, value=-1), dim=0)


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
            start = batch_fastest(cold_start(problem))
            image = SCS.fixed_point_map(self, problem, LinearStep(problem, self.normalize),
                                        start)
            return torch.linalg.vector_norm(start - image, dim=1)

    def fixed_point_map(self, problem: ConeProgram, linear: LinearStep,
                        z: torch.Tensor) -> torch.Tensor:
        """``f(z)``: one SCS iteration from ``z = (u, v)``."""
        return self._evaluate(problem, linear, z, checks=False)["fx"]

    def _evaluate(self, problem: ConeProgram, linear: LinearStep, z: torch.Tensor,
                  checks: bool = True) -> State:
        """``f(z)`` (``fx``), and with ``checks`` the fixed-point residual of ``z``
        (``residual``) and SCS's stopping test at ``z`` (``passed``): two kernels around the
        Gram solve, which read the batch once each (kernels.py: fused when compiled)."""
        w, rhs = _plain_step_start(linear.operator, z.T)
        x = linear.solve_gram(rhs)
        fz, residual, passed = _plain_step_end(
            linear.operator, problem.cones, linear.h.T, linear.g.T, linear.denominator,
            self.alpha, z.T, w, x, self._tests(problem, linear) if checks else None)
        if not checks:
            return {"fx": fz.T}
        return {"fx": fz.T, "residual": residual, "passed": passed}

    def _tests(self, problem: ConeProgram, linear: LinearStep) -> tuple:
        """The arguments of the stopping test after the iterate (:func:`_passes`)."""
        scales = problem.data_scales() if self.normalize else None
        return (linear.operator, linear.h.T, scales, problem.data_norms(), self.eps_abs,
                self.eps_rel)

    @staticmethod
    def residual_of(z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
        """``||z / tau - f(z) / tau_f||``, the fixed-point residual of sec. 4.3.2."""
        return _fixed_point_residual(z.T, fz.T)

    def accelerate(self, problem: ConeProgram, state: State, z: torch.Tensor, fz: torch.Tensor,
                   fixed_point_map) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """The next iterate from ``z`` and ``f(z)``, the state a subclass keeps, and ``f`` at the
        next iterate if the rule already evaluated it (else ``None``). Plain SCS takes ``f(z)``.
        Subclasses (Anderson, learned models) override this; ``fixed_point_map(z)`` is ``f``."""
        return fz, {}, None

    def init(self, problem: ConeProgram, x0: torch.Tensor,
             params: Mapping[str, torch.Tensor]) -> State:
        linear = LinearStep(problem, self.normalize)
        x0 = batch_fastest(x0)
        state = {"x": x0, **self._evaluate(problem, linear, x0), **linear.parts(),
                 "k": torch.zeros(problem.batch_size, dtype=torch.int64,
                                  device=x0.device)}
        state.update(self.init_extra(problem, x0, state["fx"], params))
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
            evaluated = self._evaluate(problem, linear, z_next)
        else:  # the rule evaluated f already: the residual and the test on their own
            evaluated = {"fx": fz_next, "residual": self.residual_of(z_next, fz_next),
                         "passed": _passes(z_next.T, *self._tests(problem, linear))}
        new = dict(state)
        new.update(extra)
        new.update({"x": z_next, **evaluated, "k": state["k"] + 1})
        return new

    def residual(self, problem: ConeProgram, state: State) -> torch.Tensor:
        return state["residual"]

    def converged(self, problem: ConeProgram, state: State, norms: torch.Tensor,
                  threshold: torch.Tensor) -> torch.Tensor:
        return state["passed"]


def primal_dual(problem: ConeProgram, z: torch.Tensor,
                normalize: bool = True) -> dict[str, torch.Tensor]:
    """The candidate solution ``(x, y, s) = (u_x, u_y, v_s) / tau`` of the iterate ``z`` (of the
    normalised program when ``normalize``, mapped back: ``x, s`` times ``||b||``, ``y`` times
    ``||c||``) and its residuals as SCS 3 reports them (infinity norms):
    ``primal = ||A x + s - b||``, ``dual = ||A^T y + c||``, ``gap = |c^T x + b^T y|``, with the
    scales their relative tolerances multiply (``primal_scale`` etc.). ``x``, ``y`` and ``s``
    are ``(B, n)``, ``(B, m)``, ``(B, m)``; the rest ``(B,)``."""
    scales = problem.data_scales() if normalize else None
    out = _primal_dual(problem.operator, problem.rhs.T, problem.cost.T, scales,
                       problem.data_norms(), z.T)
    return {key: value.T if value.ndim == 2 else value for key, value in out.items()}


@compiled
def _primal_dual(operator, b, c, scales, data_norms, z):
    n, m = operator.shape[-1], operator.shape[-2]
    k = n + m + 1
    tau = z[k - 1]
    # (x, y, s) = (u_x, u_y, v_s) / tau, times (||b||, ||c||, ||b||) when normalised: one
    # scale per instance and vector.
    inverse = 1 / tau.clamp_min(TAU_FLOOR)
    if scales is None:
        primal_scale = dual_scale = inverse
    else:
        primal_scale, dual_scale = (scale * inverse for scale in scales)
    x = z[:n] * primal_scale
    y = z[n:n + m] * dual_scale
    s = z[k + n:k + n + m] * primal_scale
    ax, aty = apply_matrix(operator, x), apply_matrix(operator, y, adjoint=True)
    cx, by = (c * x).sum(dim=0), (b * y).sum(dim=0)
    return {
        "x": x, "y": y, "s": s, "tau": tau,
        "primal": _max_abs(ax + s - b),
        "primal_scale": torch.maximum(torch.maximum(_max_abs(ax), _max_abs(s)), data_norms[0]),
        "dual": _max_abs(aty + c),
        "dual_scale": torch.maximum(_max_abs(aty), data_norms[1]),
        "gap": (cx + by).abs(), "gap_scale": torch.maximum(cx.abs(), by.abs()),
        "objective": cx,
    }


@compiled
def _passes(z, operator, h, scales, data_norms, eps_abs: float,
            eps_rel: float) -> torch.Tensor:
    """SCS's stopping test at ``z`` (see the module doc): primal, dual and gap residuals within
    ``eps_abs + eps_rel`` times their scales, and ``tau > 0``. ``b`` and ``c`` are read back
    from ``h = (c, b)``, or ``(c / ||c||, b / ||b||)`` with the ``scales`` of normalised data,
    so that the test reads no other per-instance vector."""
    n = operator.shape[-1]
    b, c = (h[n:], h[:n]) if scales is None else (h[n:] * scales[0], h[:n] * scales[1])
    res = _primal_dual.uncompiled(operator, b, c, scales, data_norms, z)
    passed = res["tau"] > 0
    for name in ("primal", "dual", "gap"):
        passed = passed & (res[name] <= eps_abs + eps_rel * res[f"{name}_scale"])
    return passed


def _max_abs(t: torch.Tensor) -> torch.Tensor:
    """The infinity norm of each column (``vector_norm(ord=inf)`` is several times slower)."""
    return t.abs().amax(dim=0)
