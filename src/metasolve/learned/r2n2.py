"""R2N2: the recursively recurrent superstructure of iterative methods (R2N2 paper, sec. 3).

One outer iteration (one pass through the network, Figure 2) from the iterate ``x_k``::

    v_0 = f(x_k)
    v_j = f(x_k + h sum_{l<j} theta_{j,l} v_l)              j = 1, ..., n-1   (eq. 9)
    x_{k+1} = x_k + h sum_j theta_{n,j} v_j                                  (eq. 10)

``f`` belongs to the task: ``A x - b`` for a :class:`~metasolve.problems.LinearSystem`, the map
``g`` of a :class:`~metasolve.problems.NonlinearSystem` (``g(x) = 0`` is solved), the right-hand
side of an :class:`~metasolve.problems.InitialValueProblem` (``h`` is then its step size; for
equations ``h = 1``). Nothing in the method depends on the dimension, so one trained R2N2 applies
to systems of any size.

Paper notation: ``n`` is ``layers``; ``theta_{j,l}`` (``j = 1..n-1``, ``l < j``) is the parameter
``stage_weights``, packed row by row (``theta_{1,0}; theta_{2,0}, theta_{2,1}; ...``), the
``b_{jl} / h`` of eq. (7b) and a Butcher tableau's ``a_{jl}``; ``theta_{n,j}`` is
``output_weights``, the ``c_j / h`` of eq. (8) and a tableau's ``b_j``. Both are per-instance
parameters (``(B, n(n-1)/2)`` and ``(B, n)``), given to the constructor as constants or produced
by a :class:`~metasolve.learned.metasolver.ConstantMetaSolver` while training.

Options:

* ``output_steps = T``: iteration-dependent output weights ``theta_{n,k}`` (supplement SM3.3),
  ``output_weights`` then has ``T n`` entries, row ``k`` used at outer iteration ``k`` and the last
  row at every later one;
* ``difference="forward"``: layers ``j >= 1`` hard-wired to forward differences (SM1, eq. 1),
  ``v_j = (f(x_k + s_j d_j) - f(x_k)) / s_j`` with ``d_j = h sum_l theta_{j,l} v_l``, so
  ``v_j ~ J(x_k) d_j`` and the subspace is the Newton-Krylov one of sec. 3.2.2. The step is
  scaled per instance as in SciPy's ``KrylovJacobian``: ``s_j = eps max(1, ||x_k||) / ||d_j||``,
  so the perturbation ``s_j d_j`` has norm ``eps max(1, ||x_k||)`` however small ``d_j`` is
  (``d_j`` shrinks with ``||f(x_k)||``; a fixed ``eps d_j`` would round to nothing near a
  solution and stall the iteration); ``v_j = 0`` when ``d_j = 0``. On a linear ``f`` the
  quotient is ``A d_j`` for every ``s_j``, so the SM4 analysis below is unchanged. Autograd
  differentiates the difference quotient as written, ``s_j`` included (the backward pass of
  SM1.3, eq. 4).

Every outer iteration costs ``n`` evaluations of ``f``: ``n - 1`` inside and one at the new iterate
(which is the next iteration's ``v_0``, kept in the state, and gives the residual for free).

The residual the driver monitors is ``||f(x_k)||`` for equations and, for an initial-value
problem, the error of ``x_k`` against the reference trajectory at ``t_0 + k h`` (so running on an
initial-value problem needs its reference trajectory).

**Classical counterpart** (:meth:`R2N2.classical`): restarted GMRES(n) on linear systems,
Newton-Krylov with ``n - 1`` inner GMRES steps on nonlinear ones, the ``n``-stage explicit
Runge-Kutta method on initial-value problems: what ``LearnedSolver.solve_baseline`` runs and the
safeguard falls back to.

**Safeguarded mode** (:meth:`R2N2.safeguarded`, what ``LearnedSolver.solve`` runs by default). On
a linear system the residual of one outer iteration is ``r_{k+1} = M r_k`` with ``M = q(A)``
(SM4), the same ``M`` at every iteration (the last row of iteration-dependent output weights,
after the first ``T - 1``). Before the first step the view computes, per instance, the spectral
radius ``rho(M)`` for the weights it is given (:meth:`R2N2.certificate_radius`); an instance with
``rho(M) >= 1`` does not run (it stops at once with ``Status.BREAKDOWN``, and the safeguard runs
the classical method on it instead, ``Solution.info["certificate_failed"]``). The test is the
spectral radius, not SM4's norm ``||M||_2 < 1``: ``rho(M) < 1`` is necessary and sufficient for
``M^k -> 0``, so the instances it refuses cannot converge from a generic start, while the norm
test would also refuse R2N2s that converge after a transient growth (``||M||_2 >= rho(M)``, far
above it for non-normal ``A``); what such an instance costs is bounded by the safeguard's budget
and fallback, which act on every instance anyway. The radius needs only the eigenvalues of ``A``
(``eig(q(A)) = q(eig(A))``), so it is skipped past :data:`CERTIFICATE_MAX_SIZE` unknowns. Nonlinear
and initial-value problems have no certificate.

Example (one classical RK-4 step of ``x' = -x`` is an R2N2 with the tableau's weights):
    >>> import torch, metasolve as ms
    >>> from metasolve.learned.r2n2 import RK4, R2N2
    >>> rk4 = R2N2.from_tableau(RK4)
    >>> rk4.config()["layers"], rk4.stage_weights.tolist()
    (4, [0.5, 0.0, 0.5, 0.0, 0.0, 1.0])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..problems import DiagonalSystem, InitialValueProblem, LinearSystem, NonlinearSystem
from ..solvers.base import IterativeMethod, State
from ..solvers.gmres import GMRES
from ..solvers.newton_krylov import NewtonKrylov, forward_difference
from ..solvers.registry import register_method
from ..tasks.base import TaskFamily
from ..validation import check_choice, check_count, check_positive, check_tensor
from .heads import IdentityHead
from .metasolver import ConstantMetaSolver
from .solver import LearnedSolver

PROBLEM_TYPES = (LinearSystem, NonlinearSystem, InitialValueProblem)
DIFFERENCES = ("none", "forward")


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method as validated data (docs/architecture.md, convention 7).

    ``a`` ``(s, s)`` strictly lower triangular, weights ``b`` ``(s,)`` summing to one, nodes
    ``c`` ``(s,)`` equal to the row sums of ``a`` (the usual consistency condition).
    """

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]

    def __post_init__(self):
        s = len(self.b)
        if s < 1 or len(self.a) != s or any(len(row) != s for row in self.a) or len(self.c) != s:
            raise ValueError(f"tableau {self.name}: a must be {s} x {s} and c have {s} entries "
                             f"to match b")
        for i, row in enumerate(self.a):
            if any(row[j] != 0 for j in range(i, s)):
                raise ValueError(f"tableau {self.name}: a must be strictly lower triangular "
                                 f"(an explicit method); row {i} is {row}")
            if not math.isclose(sum(row), self.c[i], abs_tol=1e-12):
                raise ValueError(f"tableau {self.name}: c[{i}] = {self.c[i]} must equal the "
                                 f"row sum of a ({sum(row)})")
        if not math.isclose(sum(self.b), 1.0, abs_tol=1e-12):
            raise ValueError(f"tableau {self.name}: the weights b must sum to 1, got "
                             f"{sum(self.b)}")

    @property
    def stages(self) -> int:
        return len(self.b)

    def stage_weights(self) -> list[float]:
        """``a``'s strictly lower part, packed row by row: the R2N2's ``theta_{j,l}``."""
        return [self.a[j][l] for j in range(1, self.stages) for l in range(j)]


#: Kutta's third-order method (the paper's RK-3, sec. 4.3).
RK3 = ButcherTableau("RK-3", a=((0, 0, 0), (0.5, 0, 0), (-1, 2, 0)), b=(1 / 6, 2 / 3, 1 / 6),
                     c=(0, 0.5, 1))
#: The classical fourth-order Runge-Kutta method (Figure 1 of the R2N2 paper).
RK4 = ButcherTableau("RK-4", a=((0, 0, 0, 0), (0.5, 0, 0, 0), (0, 0.5, 0, 0), (0, 0, 1, 0)),
                     b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), c=(0, 0.5, 0.5, 1))
#: Euler's method, the explicit Runge-Kutta method of one stage.
EULER = ButcherTableau("Euler", a=((0,),), b=(1,), c=(0,))
#: Heun's second-order method (the explicit trapezoidal rule), two stages.
HEUN = ButcherTableau("Heun", a=((0, 0), (1, 0)), b=(0.5, 0.5), c=(0, 1))
#: The classical explicit Runge-Kutta method of each number of stages: an R2N2's counterpart on
#: initial-value problems (:meth:`R2N2.classical`).
CLASSICAL_TABLEAUS = {1: EULER, 2: HEUN, 3: RK3, 4: RK4}

#: The safeguard checks an R2N2's certificate (:meth:`R2N2.certificate_radius`) on linear systems
#: of at most this many unknowns: it needs the eigenvalues of ``A``, a dense ``O(N^3)``
#: computation per distinct matrix of the batch (per instance when each has its own). Larger
#: systems (diagonal ones aside, whose eigenvalues are given) run without a certificate, under
#: the safeguard's budget and fallback alone.
CERTIFICATE_MAX_SIZE = 64


@dataclass(frozen=True)
class Certificate:
    """The convergence certificate of supplement SM4 for a linear ``f(x) = A x - b``.

    One outer iteration maps the residual ``r_k = A x_k - b`` to ``r_{k+1} = M r_k`` with
    ``M = I + sum_j zeta_j A^j`` (SM4, eq. 14), whatever ``b`` is. ``norm = ||M||_2 < 1``
    guarantees that ``||r_k||`` decreases monotonically to zero for every right-hand side and
    initial guess; ``spectral_radius < 1`` is the sharp condition for eventual convergence (the
    two coincide for symmetric ``A``).

    Attributes:
        coefficients: ``(1, zeta_1, ..., zeta_n)``, the residual polynomial ``q(t)``.
        norm: ``||M||_2`` (largest singular value).
        spectral_radius: ``max |eig(M)|``.
    """

    coefficients: torch.Tensor
    norm: float
    spectral_radius: float

    @property
    def converges_for_every_rhs(self) -> bool:
        """``||M||_2 < 1``: the residual contracts at every outer iteration, for every ``b``."""
        return self.norm < 1.0


def _weights(name: str, value, size: int) -> torch.Tensor | None:
    if value is None:
        return None
    tensor = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    check_tensor(name, tensor)
    if tensor.numel() != size:
        raise ValueError(f"{name} must have {size} entries, got {tensor.numel()}")
    return tensor


@register_method
class R2N2(IterativeMethod):
    """The R2N2 superstructure with ``layers`` function evaluations per outer iteration.

    Args:
        layers: ``n >= 1``, the layers (function evaluations) of one outer iteration.
        output_steps: ``T``, distinct output weights for the first ``T`` outer iterations
            (SM3.3); 1 is the paper's main setting (one ``theta_n`` for all iterations).
        difference: ``"none"`` (eq. 9) or ``"forward"`` (forward-differencing layers, SM1).
        epsilon: the relative forward-difference step: layer ``j`` perturbs ``x_k`` by a vector
            of norm ``epsilon * max(1, ||x_k||)`` along ``d_j`` (SM1 uses about 1e-8; SciPy's
            ``KrylovJacobian`` ``sqrt(machine eps)``, about 1.5e-8).
        stage_weights, output_weights: constant weights used when ``params`` does not give
            them (e.g. a Butcher tableau's); sizes ``n(n-1)/2`` and ``T n``.
    """

    name = "r2n2"
    parameter_names = ("stage_weights", "output_weights")

    @property
    def parameter_shapes(self):
        return {"stage_weights": ("B", self.n_stage_weights),
                "output_weights": ("B", self.n_output_weights)}
    problem_type = PROBLEM_TYPES
    per_instance_state = True

    def __init__(self, layers: int = 3, output_steps: int = 1, difference: str = "none",
                 epsilon: float = 1e-7, stage_weights: Sequence[float] | None = None,
                 output_weights: Sequence[float] | None = None):
        self.layers = check_count("layers", layers, minimum=1)
        self.output_steps = check_count("output_steps", output_steps, minimum=1)
        self.difference = check_choice("difference", difference, DIFFERENCES)
        self.epsilon = check_positive("epsilon", epsilon)
        if stage_weights is None and self.n_stage_weights == 0:
            stage_weights = []  # one layer: nothing inside to weigh
        self.stage_weights = _weights("stage_weights", stage_weights, self.n_stage_weights)
        self.output_weights = _weights("output_weights", output_weights, self.n_output_weights)
        # The certificate check is a way of running the R2N2, not part of it: off here (training
        # and the papers' tables), on in the view :meth:`safeguarded` returns; not in ``config``.
        self.certify = False

    @classmethod
    def from_tableau(cls, tableau: ButcherTableau) -> R2N2:
        """The R2N2 whose one outer iteration is one step of the explicit RK method ``tableau``
        (sec. 3 and Guo et al.'s RK-NN: ``theta_{j,l} = a_{jl}``, ``theta_{n,j} = b_j``)."""
        if not isinstance(tableau, ButcherTableau):
            raise TypeError(f"tableau must be a ButcherTableau, got {type(tableau).__name__}")
        return cls(layers=tableau.stages, stage_weights=tableau.stage_weights(),
                   output_weights=list(tableau.b))

    def classical(self, problem_type: type | None = None) -> IterativeMethod:
        """The classical method this R2N2 is compared with and falls back to on problems of
        ``problem_type``, at the cost of an outer iteration or close to it (the one rule;
        :class:`~metasolve.learned.LearnedSolver` asks it through ``classical_method_for``):

        * :class:`~metasolve.problems.LinearSystem`: restarted GMRES(n)
          (:class:`~metasolve.solvers.GMRES`, ``restart = layers``), which minimises the
          residual over the space ``K_n(A, r_k)`` that one outer iteration steps in (sec. 3.2.1;
          the ``r2n2-linear`` experiment's GMRES(4) for 4 layers). A cycle spends ``n``
          products plus one for its new residual, the R2N2 ``n`` evaluations.
        * :class:`~metasolve.problems.NonlinearSystem`: Newton-Krylov with ``n - 1`` inner
          GMRES steps (at least 1) and the R2N2's difference step ``epsilon``
          (:class:`~metasolve.solvers.NewtonKrylov`; the ``r2n2-chandrasekhar`` experiment's
          NK-GMRES with 2 inner steps for 3 layers): ``n`` evaluations of ``f`` per Newton step,
          as per outer iteration.
        * :class:`~metasolve.problems.InitialValueProblem`: the explicit Runge-Kutta method of
          ``n`` stages (:data:`CLASSICAL_TABLEAUS`: Euler, Heun, Kutta's RK-3, RK-4) as an R2N2
          with the tableau's weights (the ``r2n2-vanderpol`` experiment's RK-3); RK-4 for
          ``n > 4``, which then spends fewer evaluations per step.
        """
        if not isinstance(problem_type, type):
            raise TypeError(f"an R2N2's classical method depends on the problem it solves: give "
                            f"problem_type (LinearSystem, NonlinearSystem or "
                            f"InitialValueProblem), got {problem_type!r}")
        if issubclass(problem_type, LinearSystem):
            return GMRES(restart=self.layers)
        if issubclass(problem_type, NonlinearSystem):
            return NewtonKrylov(inner=max(1, self.layers - 1), epsilon=self.epsilon)
        if issubclass(problem_type, InitialValueProblem):
            return R2N2.from_tableau(CLASSICAL_TABLEAUS[min(self.layers, 4)])
        raise TypeError(f"problem_type must be LinearSystem, NonlinearSystem or "
                        f"InitialValueProblem (or a subclass) for {self.name}, got "
                        f"{problem_type.__name__}")

    def safeguarded(self) -> R2N2:
        """A view of this R2N2 (the same configuration and weights) that checks the convergence
        certificate before it runs, what ``LearnedSolver.solve`` runs by default (module
        docstring, "Safeguarded mode")."""
        view = copy.copy(self)
        view.certify = True
        return view

    @property
    def n_stage_weights(self) -> int:
        return self.layers * (self.layers - 1) // 2

    @property
    def n_output_weights(self) -> int:
        return self.layers * self.output_steps

    @property
    def evaluations_per_iteration(self) -> int:
        """Function evaluations of one outer iteration (the next ``v_0`` included)."""
        return self.layers

    def config(self) -> dict:
        out = {"layers": self.layers, "output_steps": self.output_steps,
               "difference": self.difference, "epsilon": self.epsilon}
        for key in ("stage_weights", "output_weights"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.tolist()
        return out

    def validate(self, problem) -> None:
        if not isinstance(problem, PROBLEM_TYPES):
            raise TypeError(f"problem must be a LinearSystem, NonlinearSystem or "
                            f"InitialValueProblem for {self.name}, got {type(problem).__name__}")

    # --- the task's function and scale -------------------------------------------------------

    @staticmethod
    def function(problem, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``: ``A x - b`` for a linear system (sec. 3.2.1), else the problem's map."""
        if isinstance(problem, LinearSystem):
            return problem.matvec(x) - problem.rhs
        return problem.function(x)

    @staticmethod
    def scale(problem) -> torch.Tensor | float:
        """``h``: the step size of an initial-value problem, 1 for equations."""
        if isinstance(problem, InitialValueProblem):
            return problem.step_size.unsqueeze(1)
        return 1.0

    def zero_guess(self, problem) -> torch.Tensor:
        if isinstance(problem, LinearSystem):
            return torch.zeros_like(problem.rhs)
        return problem.start

    def reference_norm(self, problem) -> torch.Tensor:
        if isinstance(problem, LinearSystem):
            return torch.linalg.vector_norm(problem.rhs, dim=1)
        return problem.reference_norm()

    # --- the iteration -----------------------------------------------------------------------

    def _resolve(self, params: Mapping[str, torch.Tensor], x: torch.Tensor):
        batch = x.shape[0]
        out = []
        for key, size in (("stage_weights", self.n_stage_weights),
                          ("output_weights", self.n_output_weights)):
            value = params.get(key)
            if value is None:
                default = getattr(self, key)
                if default is None and size > 0:
                    raise ValueError(f"{self.name} needs {key} ({size} per instance): give them "
                                     f"in params or to the constructor")
                default = torch.zeros(size, dtype=x.dtype) if default is None else default
                value = default.to(dtype=x.dtype, device=x.device).expand(batch, size)
            elif tuple(value.shape) != (batch, size):
                raise ValueError(f"params[{key!r}] must have shape ({batch}, {size}) for "
                                 f"{self.layers} layers and {self.output_steps} output steps, "
                                 f"got {tuple(value.shape)}")
            out.append(value)
        return out

    def init(self, problem, x0: torch.Tensor, params: Mapping[str, torch.Tensor]) -> State:
        self._resolve(params, x0)  # fail before the first step on a wrong shape
        steps = torch.zeros(x0.shape[0], dtype=torch.int64, device=x0.device)
        state = {"x": x0, "fx": self.function(problem, x0), "k": steps}
        if self.certify:
            radius = self.certificate_radius(problem, params)
            if radius is None:  # no certificate: nothing fails it
                radius = torch.full((x0.shape[0],), math.nan, dtype=torch.float64)
            radius = radius.to(x0.device)
            # Frozen before the first step (Status.BREAKDOWN): the safeguard's fallback runs
            # the classical method on them from the start.
            state["certificate_radius"] = radius
            state["breakdown"] = radius >= 1
        return state

    def step(self, problem, state: State, params: Mapping[str, torch.Tensor]) -> State:
        x, k = state["x"], state["k"]
        stage, output = self._resolve(params, x)
        h = self.scale(problem)
        v = [state["fx"]]
        start = 0
        for j in range(1, self.layers):
            weights = stage[:, start:start + j]
            start += j
            direction = h * sum(weights[:, l:l + 1] * v[l] for l in range(j))
            if self.difference == "forward":
                v.append(self._forward_difference(problem, x, direction, v[0]))
            else:
                v.append(self.function(problem, x + direction))
        if self.output_steps > 1:
            row = k.clamp(max=self.output_steps - 1)
            output = output.reshape(-1, self.output_steps, self.layers)[
                torch.arange(x.shape[0], device=x.device), row]
        x_new = x + h * sum(output[:, j:j + 1] * v[j] for j in range(self.layers))
        checked = {key: state[key] for key in ("certificate_radius", "breakdown") if key in state}
        return {"x": x_new, "fx": self.function(problem, x_new), "k": k + 1, **checked}

    def _forward_difference(self, problem, x: torch.Tensor, direction: torch.Tensor,
                            fx: torch.Tensor) -> torch.Tensor:
        """``J(x) d`` by a forward difference (SM1, eq. 1) whose step is scaled per instance:
        :func:`~metasolve.solvers.forward_difference` (the one Newton-Krylov uses), with
        ``s = eps max(1, ||x||) / ||d||``, SciPy's ``KrylovJacobian`` scaling with 2-norms and
        without its ``1 / max(1, |f|)`` factor, since ``d`` already carries ``f``'s size."""
        return forward_difference(lambda y: self.function(problem, y), x, direction, fx,
                                  self.epsilon)

    def converged(self, problem, state: State, norms: torch.Tensor,
                  threshold: torch.Tensor) -> torch.Tensor:
        """Equations: the residual test. An initial-value problem is done when it has taken
        the steps its reference trajectory covers (its error is a measurement, not a goal)."""
        if isinstance(problem, InitialValueProblem):
            return state["k"] >= problem.steps
        return norms <= threshold

    def residual(self, problem, state: State) -> torch.Tensor:
        if isinstance(problem, InitialValueProblem):
            return problem.error(state["x"], state["k"])
        return torch.linalg.vector_norm(state["fx"], dim=1)

    def report(self, problem, state: State) -> dict:
        """In safeguarded mode: ``certificate_radius`` (per instance, the spectral radius of the
        residual iteration, NaN where no certificate was computed) and ``certificate_failed``
        (the instances that did not run because it is at least 1)."""
        if "certificate_radius" not in state:
            return {}
        return {"certificate_radius": state["certificate_radius"],
                "certificate_failed": state["breakdown"]}

    # --- analysis on linear problems (SM4) -----------------------------------------------------

    def _weights_for_analysis(self, stage_weights, output_weights, output_step: int):
        check_count("output_step", output_step, minimum=-self.output_steps)
        if output_step >= self.output_steps:
            raise ValueError(f"output_step must be in [-{self.output_steps}, "
                             f"{self.output_steps}), got {output_step}")
        stage = self.stage_weights if stage_weights is None else _weights(
            "stage_weights", stage_weights, self.n_stage_weights)
        output = self.output_weights if output_weights is None else _weights(
            "output_weights", output_weights, self.n_output_weights)
        if stage is None or output is None:
            raise ValueError("give stage_weights and output_weights (the method has no "
                             "constant weights)")
        rows = output.reshape(self.output_steps, self.layers)
        return stage, rows[output_step]

    def layer_polynomials(self, stage_weights=None, h: float = 1.0) -> torch.Tensor:
        """``(n, n)``: row ``j`` holds the monomial coefficients of ``p_j`` with
        ``v_j = p_j(A) r_k`` for a linear ``f(x) = A x - b`` (``r_k = f(x_k)``).

        ``p_0 = 1``; ``p_j(t) = 1 + h t sum_l theta_{j,l} p_l(t)`` for plain layers and
        ``h t sum_l theta_{j,l} p_l(t)`` for forward differences (exact on a linear ``f``).
        ``h`` is the step size (1 for equations), a finite positive number.
        """
        h = check_positive("h", h)
        stage = self.stage_weights if stage_weights is None else _weights(
            "stage_weights", stage_weights, self.n_stage_weights)
        if stage is None:
            raise ValueError("give stage_weights (the method has no constant weights)")
        n = self.layers
        polys = torch.zeros(n, n, dtype=torch.float64)
        polys[0, 0] = 1.0
        start = 0
        for j in range(1, n):
            combo = (stage[start:start + j, None] * polys[:j]).sum(dim=0)
            start += j
            polys[j, 1:] = h * combo[:-1]
            if self.difference == "none":
                polys[j, 0] += 1.0
        return polys

    def residual_polynomial(self, stage_weights=None, output_weights=None, h: float = 1.0,
                            output_step: int = -1) -> torch.Tensor:
        """``(n + 1,)``: the coefficients ``(1, zeta_1, ..., zeta_n)`` of
        ``q(t) = 1 + h t sum_j theta_{n,j} p_j(t)``, so ``r_{k+1} = q(A) r_k`` (SM4, eq. 14).
        ``h`` must be a finite positive number; ``output_step`` an int in ``[-T, T)``."""
        h = check_positive("h", h)
        stage, output = self._weights_for_analysis(stage_weights, output_weights, output_step)
        polys = self.layer_polynomials(stage, h)
        q = torch.zeros(self.layers + 1, dtype=torch.float64)
        q[0] = 1.0
        q[1:] = h * (output[:, None] * polys).sum(dim=0)
        return q

    def output_weights_for(self, coefficients, stage_weights=None, h: float = 1.0) -> torch.Tensor:
        """The output weights ``theta_n`` that make the residual polynomial
        ``q(t) = 1 + sum_{i>=1} c_i t^i`` (``coefficients = (c_1, ..., c_n)``), for these stage
        weights: a fixed-coefficient Krylov step, e.g. one GMRES(n) cycle's minimiser for one
        instance (sec. 3.2.1, eq. 13-15). Needs the layer polynomials to span degrees 0..n-1.
        ``h`` must be a finite positive number."""
        h = check_positive("h", h)
        polys = self.layer_polynomials(stage_weights, h)
        target = torch.as_tensor(coefficients, dtype=torch.float64).reshape(-1)
        if target.numel() != self.layers:
            raise ValueError(f"coefficients must have {self.layers} entries (c_1..c_n), got "
                             f"{target.numel()}")
        system = h * polys.T  # column j: coefficients of t^0..t^{n-1} of h p_j
        if torch.linalg.matrix_rank(system) < self.layers:
            raise ValueError("these stage weights give layer polynomials that do not span "
                             "degrees 0..n-1; no output weights reproduce an arbitrary step")
        return torch.linalg.solve(system, target)

    def certificate(self, matrix: torch.Tensor, stage_weights=None, output_weights=None,
                    output_step: int = -1) -> Certificate:
        """SM4: is this R2N2 guaranteed to converge on ``A x = b`` for every ``b``?

        ``matrix`` is ``A`` ``(m, m)``; the weights default to the constructor's (pass a trained
        meta-solver's ``theta``, one instance's row). With iteration-dependent output weights,
        ``output_step`` picks the row (the last, used for all later iterations, by default).
        """
        check_tensor("matrix", matrix, ndim=2)
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}")
        q = self.residual_polynomial(stage_weights, output_weights, 1.0, output_step)
        a = matrix.detach().to(torch.float64)
        power = torch.eye(a.shape[0], dtype=torch.float64)
        iteration = torch.zeros_like(power)
        for coefficient in q:
            iteration = iteration + coefficient * power
            power = power @ a
        norm = float(torch.linalg.matrix_norm(iteration, ord=2))
        radius = float(torch.linalg.eigvals(iteration).abs().max())
        return Certificate(coefficients=q, norm=norm, spectral_radius=radius)

    def certificate_radius(self, problem, params: Mapping[str, torch.Tensor]
                           ) -> torch.Tensor | None:
        """``(B,)`` float64: the spectral radius of each instance's residual iteration matrix
        ``M = q(A)`` (SM4, eq. 14) for the weights in ``params`` (the constructor's where a
        name is absent; with iteration-dependent output weights, the last row, which every
        later iteration uses), the ``spectral_radius`` of :meth:`certificate`.

        Computed from the eigenvalues of ``A`` by the spectral mapping theorem,
        ``eig(q(A)) = q(eig(A))``, so ``rho(M) = max_i |q(lambda_i)|``: one eigenvalue
        computation per distinct matrix (once for a matrix shared by the batch, none for a
        :class:`~metasolve.problems.DiagonalSystem`) and one polynomial per distinct row of
        weights, never the matrix ``M``. Non-finite weights give ``inf``. ``None`` where no
        certificate applies: a problem that is not a linear system, or a dense or sparse ``A``
        with more than :data:`CERTIFICATE_MAX_SIZE` unknowns.
        """
        if not isinstance(problem, LinearSystem):
            return None
        values = _eigenvalues(problem)
        if values is None:
            return None
        stage, output = self._resolve(params, problem.rhs)
        weights = torch.cat([stage, output], dim=1).detach().to("cpu", torch.float64)
        distinct, inverse = torch.unique(weights, dim=0, return_inverse=True)
        finite = torch.isfinite(distinct).all(dim=1)
        split = self.n_stage_weights
        polynomials = torch.stack([
            self.residual_polynomial(row[:split], row[split:], 1.0, -1) if ok
            else torch.zeros(self.layers + 1, dtype=torch.float64)
            for row, ok in zip(distinct, finite.tolist(), strict=True)])
        coefficients = polynomials[inverse].to(values.device, torch.complex128)
        value = coefficients[:, -1:].expand_as(values)
        for j in range(self.layers - 1, -1, -1):  # Horner
            value = value * values + coefficients[:, j:j + 1]
        radius = value.abs().amax(dim=1)
        return torch.where(finite[inverse].to(radius.device), radius,
                           torch.full_like(radius, math.inf))


def _eigenvalues(problem: LinearSystem) -> torch.Tensor | None:
    """``(B, N)`` complex eigenvalues of each instance's ``A`` (once per distinct matrix), or
    ``None`` past :data:`CERTIFICATE_MAX_SIZE` or where the eigenvalue iteration fails."""
    batch, n = problem.batch_size, problem.size
    if isinstance(problem, DiagonalSystem):
        return problem.matrix.detach().to(torch.float64).to(torch.complex128)
    if n > CERTIFICATE_MAX_SIZE:
        return None
    matrix = problem.matrix.detach()
    matrix = (matrix.to_dense() if problem.sparse else matrix).to(torch.float64)
    try:
        if matrix.ndim == 2:
            return torch.linalg.eigvals(matrix).expand(batch, n)
        distinct, inverse = torch.unique(matrix.reshape(batch, -1), dim=0, return_inverse=True)
        return torch.linalg.eigvals(distinct.reshape(-1, n, n))[inverse]
    except RuntimeError:  # LAPACK's eigenvalue iteration did not converge: no certificate
        return None


def r2n2_solver(family: TaskFamily | None, layers: int, *, stage_init=None, output_init=None,
                seed: int = 0, output_steps: int = 1, difference: str = "none") -> LearnedSolver:
    """An R2N2 whose weights are trained as a :class:`ConstantMetaSolver`: one ``theta`` for
    the whole family, as in the R2N2 paper (sec. 3.4). Weights not given start at
    ``N(0, 0.1^2)`` drawn from ``seed``."""
    method = R2N2(layers=layers, output_steps=output_steps, difference=difference)
    generator = torch.Generator().manual_seed(seed)
    n_stage, n_output = method.n_stage_weights, method.n_output_weights
    if stage_init is None:
        stage_init = 0.1 * torch.randn(n_stage, generator=generator, dtype=torch.float64)
    if output_init is None:
        output_init = 0.1 * torch.randn(n_output, generator=generator, dtype=torch.float64)
    heads = {"output_weights": IdentityHead(n_output)}
    init = {"output_weights": output_init}
    if n_stage:
        heads = {"stage_weights": IdentityHead(n_stage), **heads}
        init["stage_weights"] = stage_init
    return LearnedSolver(method, ConstantMetaSolver(heads, init=init), family=family)


def constant_weights(solver: LearnedSolver) -> dict[str, list[float]]:
    """The weights a constant meta-solver predicts (the same for every task), as lists."""
    if not isinstance(solver.metasolver, ConstantMetaSolver):
        raise TypeError(f"constant_weights needs a ConstantMetaSolver, got "
                        f"{type(solver.metasolver).__name__}")
    features = torch.zeros(1, solver.metasolver.in_features or 1, dtype=torch.float64)
    with torch.no_grad():
        params = solver.params(features)
    return {key: value[0].tolist() for key, value in params.items()}


def frozen_r2n2(solver: LearnedSolver) -> R2N2:
    """A trained R2N2 as a plain method with its weights built in: a classical method from
    then on (analysis, certificates, reuse without the meta-solver)."""
    if not isinstance(solver.method, R2N2):
        raise TypeError(f"frozen_r2n2 needs a solver whose method is an R2N2, got "
                        f"{solver.method.name}")
    weights = constant_weights(solver)
    method = solver.method
    return R2N2(layers=method.layers, output_steps=method.output_steps,
                difference=method.difference, epsilon=method.epsilon,
                stage_weights=weights.get("stage_weights", []),
                output_weights=weights["output_weights"])
