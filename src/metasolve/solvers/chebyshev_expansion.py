"""Polynomials in ``A`` expanded in a fixed, stable basis and applied matrix-free: the second of
the two paradigms in which the AutoSpec issue's engine outputs a polynomial method.

``q(t) = sum_{j<K} c_j T_j(L(t))`` with Chebyshev polynomials ``T_j`` of the map
``L(t) = (t - c) / h`` of ``[lower, upper]`` onto ``[-1, 1]`` (``c``, ``h`` the interval's centre
and half-width). Step ``k`` adds ``c_k T_k(L(A)) v`` and forms ``T_{k+1}(L(A)) v`` by the
three-term recurrence ``T_{k+1} = 2 L T_k - T_{k-1}`` (one product ``A @ v``), so ``K`` steps
cost ``K`` products and four vectors of storage, whatever the degree.

* :class:`ChebyshevSeries` evaluates a matrix function, ``x = q(A) b`` (the AutoSpec task (c),
  ``q(t) ~ t^{-1/2}``). It has no residual: run it with ``monitor="error"`` against
  ``problem.solution``.
* :class:`ChebyshevExpansion` solves ``A x = b``: ``x = x_0 + q(A) r_0``. The residual comes for
  free: ``A T_k = h L T_k + c T_k`` and ``L T_k = (T_{k+1} + T_{k-1}) / 2`` (``T_1`` for
  ``k = 0``), so ``A x`` is accumulated without another product. After ``k`` steps
  ``r_k = (1 - t q_k(t)) r_0`` evaluated at ``A``, a polynomial of degree ``k`` with value 1 at 0:
  ``K`` steps cost what ``K`` steps of :class:`~metasolve.solvers.recurrence.PolynomialRecurrence`
  cost.

Parameters ``theta`` (``params``): ``coefficients`` ``c`` (``(B, K)``), ``lower`` and ``upper``
(``(B,)``). :func:`metasolve.polynomials.chebyshev_solve_expansion` gives the coefficients of
Chebyshev iteration.

Example:
    >>> import torch, metasolve as ms
    >>> from metasolve.polynomials import chebyshev_solve_expansion
    >>> A = torch.diag(torch.linspace(1.0, 10.0, 20, dtype=torch.float64))
    >>> system = ms.LinearSystem(A, torch.ones(1, 20, dtype=torch.float64))
    >>> low = torch.tensor([1.0], dtype=torch.float64)
    >>> high = torch.tensor([10.0], dtype=torch.float64)
    >>> theta = {"coefficients": chebyshev_solve_expansion(low, high, 40), "lower": low,
    ...          "upper": high}
    >>> sol = ms.run(ms.ChebyshevExpansion(), system, params=theta, fixed_iterations=40, rtol=0.0)
    >>> bool(sol.relative_history[-1, 0] < 1e-10)
    True
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..problems import LinearSystem
from ..validation import check_instance_scalars, check_tensor
from .base import IterativeMethod, State
from .registry import register_method


@register_method
class ChebyshevSeries(IterativeMethod):
    """``x_{k+1} = x_k + c_k T_k(L(A)) b``: after ``K`` steps ``x = x_0 + q(A) b``."""

    name = "chebyshev-series"
    parameter_names = ("coefficients", "lower", "upper")
    parameter_shapes = {"coefficients": "steps", "lower": "instance", "upper": "instance"}
    problem_type = LinearSystem
    per_instance_state = True

    def _start(self, problem: LinearSystem, x0, params) -> tuple[State, torch.Tensor]:
        missing = sorted({"coefficients", "lower", "upper"} - set(params))
        if missing:
            raise ValueError(f"{self.name} needs params {missing} (its expansion and interval)")
        batch = problem.batch_size
        lower = check_instance_scalars("params['lower']", params["lower"], batch)
        upper = check_instance_scalars("params['upper']", params["upper"], batch)
        if not bool((lower.detach() < upper.detach()).all()):
            raise ValueError("params['lower'] must be below params['upper'] for every instance")
        check_tensor("params['coefficients']", params["coefficients"], ndim=2)
        state = {"x": x0, "previous": torch.zeros_like(x0), "centre": (upper + lower) / 2,
                 "half": (upper - lower) / 2,
                 "k": torch.zeros(batch, dtype=torch.int64, device=x0.device)}
        return state, problem.rhs

    def init(self, problem: LinearSystem, x0, params) -> State:
        state, vector = self._start(problem, x0, params)
        return {**state, "current": vector}

    def _advance(self, problem: LinearSystem, state: State, params: Mapping):
        """``(new state, c_k, T_k v, A T_k v)`` for one step (one product)."""
        k = state["k"]
        steps = params["coefficients"].shape[1]
        if int(k.max()) >= steps:
            raise ValueError(f"the expansion has {steps} coefficients; run it with "
                             f"maxiter <= {steps}")
        centre, half = state["centre"].unsqueeze(1), state["half"].unsqueeze(1)
        current, previous = state["current"], state["previous"]
        mapped = (problem.matvec(current) - centre * current) / half  # L(A) T_k v
        following = torch.where((k == 0).unsqueeze(1), mapped, 2 * mapped - previous)
        rows = torch.arange(k.shape[0], device=k.device)
        c = params["coefficients"][rows, k].unsqueeze(1)
        new = {**state, "x": state["x"] + c * current, "current": following,
               "previous": current, "k": k + 1}
        return new, c, current, half * mapped + centre * current

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        return self._advance(problem, state, params)[0]

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        raise ValueError(f"{self.name} evaluates a matrix function and has no residual; run it "
                         "with monitor='error' and problem.solution")


@register_method
class ChebyshevExpansion(ChebyshevSeries):
    """``x_{k+1} = x_k + c_k T_k(L(A)) r_0`` with the residual tracked at no extra product."""

    name = "chebyshev-expansion"
    recurrence_residual = True

    def init(self, problem: LinearSystem, x0, params) -> State:
        state, _ = self._start(problem, x0, params)
        r = problem.residual(x0)
        return {**state, "current": r, "r": r}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        new, c, _, a_current = self._advance(problem, state, params)
        return {**new, "r": state["r"] - c * a_current}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(state["r"], dim=1)

    def replace_residual(self, problem: LinearSystem, state: State, params: Mapping,
                         residual: torch.Tensor) -> State:
        """``r = b - A x``. The later terms ``c_k T_k(L(A)) r_0`` do not read ``r``, so the
        expansion goes on as before; only the monitored residual becomes honest."""
        return {**state, "r": residual}
