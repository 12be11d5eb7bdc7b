"""Newton-Krylov for batched nonlinear systems ``g(y) = 0``: each Newton step solves
``J(y_k) d = -g(y_k)`` approximately by one GMRES(m) cycle from ``d = 0`` whose products
``J v`` are forward differences of ``g`` (Brown and Saad, SIAM J. Sci. Stat. Comput. 11, 1990;
Knoll and Keyes, J. Comput. Phys. 193, 2004)::

    d_k = the GMRES(m) correction of J(y_k) d = -g(y_k) in K_m(J, g(y_k)),
    J v ~ (g(y_k + s v) - g(y_k)) / s,   s = eps max(1, ||y_k||) / ||v||
    y_{k+1} = y_k + d_k

One driver iteration is one Newton step. The difference step is the one of the R2N2's
forward-difference layers (:mod:`metasolve.learned.r2n2`, ``difference="forward"``), SciPy's
``KrylovJacobian`` scaling with 2-norms: the perturbation ``s v`` has norm ``eps max(1, ||y||)``
whatever ``v`` is, and ``J v = 0`` for ``v = 0``.

Cost: ``m`` evaluations of ``g`` in the GMRES cycle (one per Arnoldi step) and one at the new
iterate, which is also the next step's right-hand side and gives the residual: ``m + 1`` per
Newton step (:attr:`NewtonKrylov.evaluations_per_iteration`). There is no forcing term and no
line search: every step takes the full cycle, so the cost per step is fixed, as an R2N2's is.

Against SciPy's ``newton_krylov(method="gmres", inner_maxiter=m, line_search=None)`` (the
``r2n2-chandrasekhar`` experiment's reference, :func:`metasolve.baselines.newton_krylov_history`):
the same inner GMRES(m) cycle; SciPy scales the difference step with max-norms and by
``1 / max(1, |g|)``, stops its inner GMRES early at an Eisenstat-Walker forcing tolerance, and
counts ``m + 2`` calls per step (it also evaluates the residual of GMRES's result); both converge
to the same solution.

Example (Chandrasekhar's H-equation):
    >>> import metasolve as ms
    >>> tasks = ms.ChandrasekharFamily().sample(4, seed=0)
    >>> sol = ms.run(ms.NewtonKrylov(inner=2), tasks.problem, atol=1e-10, rtol=0.0)
    >>> bool(sol.converged.all())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ..problems import NonlinearSystem
from ..validation import check_count, check_positive
from .base import IterativeMethod, State
from .gmres import gmres_cycle
from .registry import register_method


def forward_difference(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       direction: torch.Tensor, fx: torch.Tensor,
                       epsilon: float) -> torch.Tensor:
    """``J(x) d`` by a forward difference whose step is scaled per instance (batched).

    ``s = epsilon max(1, ||x||) / ||d||`` (SciPy's ``KrylovJacobian`` scaling, with 2-norms and
    without its ``1 / max(1, |f|)`` factor): the perturbation ``s d`` stays at a fixed relative
    size of ``x`` whatever ``||d||`` is; ``(f(x + s d) - f(x)) / s``, and 0 where ``d = 0``.
    ``fx`` is ``f(x)``. Differentiable (the step ``s`` included).
    """
    d_norm = torch.linalg.vector_norm(direction, dim=1, keepdim=True)
    x_norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    flat = d_norm == 0
    # A zero direction has a zero derivative; dividing by 1 there keeps 0/0 out of both
    # the value and its gradient.
    step = epsilon * x_norm.clamp(min=1.0) / torch.where(flat, torch.ones_like(d_norm), d_norm)
    value = (function(x + step * direction) - fx) / step
    return torch.where(flat, torch.zeros_like(value), value)


@register_method
class NewtonKrylov(IterativeMethod):
    """Newton-Krylov with one GMRES(``inner``) cycle per Newton step (module docstring).

    Args:
        inner: ``m``, GMRES (Arnoldi) steps per Newton step (SciPy's ``inner_maxiter``), at most
            the system's size.
        epsilon: the relative difference step; ``None`` (the default) takes the square root of
            the iterate's machine epsilon, as SciPy's ``rdiff`` does (about 1.5e-8 in float64).

    No parameters ``theta`` besides the initial guess ``x0``; the default guess is
    ``problem.start``. The stopping norm is ``||g(y_k)||`` against
    ``problem.reference_norm()``.
    """

    name = "newton-krylov"
    problem_type = NonlinearSystem
    per_instance_state = True

    def __init__(self, inner: int = 20, epsilon: float | None = None):
        self.inner = check_count("inner", inner, minimum=1)
        self.epsilon = None if epsilon is None else check_positive("epsilon", epsilon)

    def config(self):
        return {"inner": self.inner, "epsilon": self.epsilon}

    @property
    def evaluations_per_iteration(self) -> int:
        """Evaluations of ``g`` of one Newton step (``inner`` products and the new iterate's),
        for systems of at least ``inner`` unknowns."""
        return self.inner + 1

    def zero_guess(self, problem: NonlinearSystem) -> torch.Tensor:
        return problem.start

    def reference_norm(self, problem: NonlinearSystem) -> torch.Tensor:
        return problem.reference_norm()

    def init(self, problem: NonlinearSystem, x0, params) -> State:
        return {"x": x0, "fx": problem.function(x0)}

    def step(self, problem: NonlinearSystem, state: State, params: Mapping) -> State:
        x, fx = state["x"], state["fx"]
        epsilon = self.epsilon if self.epsilon is not None else \
            float(torch.finfo(x.dtype).eps) ** 0.5

        def jacobian_product(v):
            return forward_difference(problem.function, x, v, fx, epsilon)

        x = x + gmres_cycle(jacobian_product, -fx, self.inner)
        return {"x": x, "fx": problem.function(x)}

    def residual(self, problem: NonlinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["fx"], dim=1)
