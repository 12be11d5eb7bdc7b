"""BiCGStab for batched nonsymmetric linear systems (van der Vorst, SIAM J. Sci. Stat. Comput.
13, 1992; Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., Algorithm 7.7).

From ``r_0 = b - A x_0``, the shadow residual ``r^ = r_0`` and ``p_0 = r_0``, one iteration::

    v = A p_k,            alpha = rho_k / (r^, v)          (rho_k = (r^, r_k))
    s = r_k - alpha v,    t = A s,    omega = (t, s) / (t, t)
    x_{k+1} = x_k + alpha p_k + omega s,    r_{k+1} = s - omega t
    beta = (rho_{k+1} / rho_k) (alpha / omega),    p_{k+1} = r_{k+1} + beta (p_k - omega v)

two products with ``A`` and no transpose. ``r_k`` is updated by a recurrence, so the driver
confirms a stop on the true residual (``recurrence_residual``). An instance whose ``s`` is
exactly zero has converged at the half step (``x_k + alpha p_k`` solves it; ``omega = 0`` is
then harmless). The breakdowns of the method, ``(r^, v) = 0`` or ``rho_{k+1} = 0`` or
``omega = 0`` with ``r`` not yet zero, stop that instance with ``Status.BREAKDOWN``.

Example:
    >>> import torch, metasolve as ms
    >>> A = torch.tensor([[4.0, 1.0, 0.0], [-1.0, 3.0, 2.0], [0.0, -2.0, 5.0]],
    ...                  dtype=torch.float64)
    >>> system = ms.LinearSystem(A, torch.ones(1, 3, dtype=torch.float64))
    >>> sol = ms.run(ms.BiCGStab(), system, rtol=1e-12)
    >>> bool(sol.converged.all()), sol.iterations.tolist()
    (True, [3])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..problems import LinearSystem
from .base import IterativeMethod, State, batched_dot, safe_ratio
from .registry import register_method


@register_method
class BiCGStab(IterativeMethod):
    """BiCGStab (module docstring) for a batch of (nonsymmetric) linear systems, with a matrix
    in any storage :class:`~metasolve.problems.LinearSystem` holds. No parameters ``theta``
    besides the initial guess ``x0``.

    State: ``x``, the recurrence residual ``r``, the shadow residual ``shadow`` (``r^``), the
    direction ``p``, ``rho = (r^, r)`` and ``breakdown``.
    """

    name = "bicgstab"
    problem_type = LinearSystem
    recurrence_residual = True

    def init(self, problem: LinearSystem, x0, params) -> State:
        r = problem.residual(x0)
        breakdown = torch.zeros(problem.batch_size, dtype=torch.bool, device=r.device)
        return {"x": x0, "r": r, "shadow": r, "p": r, "rho": batched_dot(r, r),
                "breakdown": breakdown}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        x, r, shadow, p, rho = (state[k] for k in ("x", "r", "shadow", "p", "rho"))
        live = batched_dot(r, r) != 0  # an instance solved exactly has nothing to break
        v = problem.matvec(p)
        sv = batched_dot(shadow, v)
        alpha = safe_ratio(rho, sv)
        s = torch.addcmul(r, alpha.unsqueeze(1), v, value=-1)  # fused: no temporary vector
        s_live = batched_dot(s, s) != 0
        t = problem.matvec(s)
        omega = safe_ratio(batched_dot(t, s), batched_dot(t, t))
        x = torch.addcmul(x, alpha.unsqueeze(1), p).addcmul_(omega.unsqueeze(1), s)
        r_new = torch.addcmul(s, omega.unsqueeze(1), t, value=-1)
        del s, t
        rho_new = batched_dot(shadow, r_new)
        r_live = batched_dot(r_new, r_new) != 0
        beta = safe_ratio(rho_new, rho) * safe_ratio(alpha, omega)
        p = torch.addcmul(p, omega.unsqueeze(1), v, value=-1).mul_(beta.unsqueeze(1)).add_(r_new)
        breakdown = state["breakdown"] | (live & (sv == 0)) | (s_live & (omega == 0)) \
            | (s_live & (rho_new == 0) & r_live)
        return {"x": x, "r": r_new, "shadow": shadow, "p": p, "rho": rho_new,
                "breakdown": breakdown}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["r"], dim=1)

    def replace_residual(self, problem: LinearSystem, state: State, params: Mapping,
                         residual: torch.Tensor) -> State:
        """Residual replacement with a restart: ``r = b - A x`` becomes the new shadow
        residual and direction (the method started afresh from ``x``)."""
        return {**state, "r": residual, "shadow": residual, "p": residual,
                "rho": batched_dot(residual, residual)}
