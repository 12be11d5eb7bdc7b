"""The solver interface and the one driver loop every method runs in.

A method (docs/architecture.md, convention 2) implements three things on a batch:

* ``init(problem, x0, params) -> state``: the state before iteration 0 (a dict of tensors, each
  with the batch as leading dimension; ``state["x"]`` is the iterate);
* ``step(problem, state, params) -> state``: one iteration, ``phi`` in the GBMS paper (sec. 2.1);
* ``residual(problem, state) -> (B,)``: the norm the default stopping test reads.

and may override ``converged`` (a stopping test other than one norm against a threshold, e.g.
primal and dual residuals together), ``reference_norm`` and ``zero_guess``. A state entry that is
not per-instance (a matrix shared by the batch) must be passed on unchanged (the same object);
every other entry has the batch as leading dimension. A method whose state entries are *all*
per-instance sets ``per_instance_state = True``; the driver may then step only the instances still
running (a gathered sub-batch of the problem, state and parameters), which makes a long tail of
slow instances cheap. A method signals a per-instance failure
(a non-positive pivot, a zero denominator) by setting ``state["breakdown"]``, a ``(B,)`` bool:
those instances are frozen and end with ``Status.BREAKDOWN``.

:func:`run` owns the loop, the stopping test, masking of finished instances, the history and the
timing. The method's parameters ``theta`` (GBMS paper, sec. 2.1) arrive in ``params``: a dict of
per-instance tensors produced by a meta-solver ``Psi`` or given by hand.

A *problem* is any object with ``batch_size``, ``size`` (unknowns per instance, the scale of the
default ``maxiter``), ``index(idx)`` (a sub-batch, for minibatches) and
``check_batch(name, x)`` (validates an initial guess); ``solution`` (exact answers) enables the
error monitor. :class:`~metasolve.problems.LinearSystem` is one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from ..solution import ConvergenceError, Solution, SolutionJoin, Status
from ..validation import (
    check_choice,
    check_count,
    check_device,
    check_instance,
    check_instance_counts,
    check_nonnegative,
    check_params,
)

State = dict[str, torch.Tensor]


def batch_fastest(t: torch.Tensor) -> torch.Tensor:
    """``t`` ``(B, L)`` held with the batch as the fastest-varying dimension (``t.T`` is a
    contiguous ``(L, B)``): a copy unless it is held so already. Methods whose products read
    the batch as columns hold their vectors so (SCS; CG on a matrix SciPy applies); the driver
    hands ``solution.x`` back contiguous."""
    return t if t.T.is_contiguous() else t.T.contiguous().T


#: Products held at once by :func:`batched_dot` on a large batch: its temporary stays a few
#: MiB instead of a whole vector of the batch (one vector less at a method's peak memory).
DOT_CHUNK_ELEMENTS = 2 ** 18


def batched_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inner products of matching rows: ``(B, N), (B, N) -> (B,)``; on more than
    :data:`DOT_CHUNK_ELEMENTS` entries, summed over slices of the columns."""
    batch, size = a.shape[0], a.shape[-1]
    if batch * size <= DOT_CHUNK_ELEMENTS:
        return (a * b).sum(dim=1)
    width = max(1, DOT_CHUNK_ELEMENTS // max(batch, 1))
    total = (a[:, :width] * b[:, :width]).sum(dim=1)
    for start in range(width, size, width):
        total = total + (a[:, start:start + width] * b[:, start:start + width]).sum(dim=1)
    return total


def safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, and 0 where ``den`` is 0 (an exactly solved instance has ``r = 0``)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)),
                       torch.zeros_like(num))


class IterativeMethod:
    """Base class of a batched, differentiable iterative method.

    Subclasses set ``name`` and ``parameter_names`` (the names of the ``theta`` entries they read
    from ``params`` besides ``x0``) and implement ``init``, ``step`` and ``residual``.
    """

    name: ClassVar[str] = ""
    parameter_names: ClassVar[tuple[str, ...]] = ()
    #: Parameters that only set the starting point, like ``x0`` (the safeguard of a learned
    #: solve tests them by the starting norm, :mod:`metasolve.learned.safeguard`).
    guess_parameters: ClassVar[tuple[str, ...]] = ()
    #: The shape of each entry of ``parameter_names``, checked by :func:`run` before ``init``:
    #: a word of :data:`metasolve.validation.PARAMETER_SHAPES` (``"instance"``: ``(B,)`` or
    #: ``(B, 1)``; ``"vector"``: ``(B, N)``; ``"steps"``: ``(B, K)``, any ``K >= 1``) or a tuple
    #: of sizes with ``"B"`` for the batch and ``"N"`` for the unknowns. A method whose shapes
    #: depend on its constructor arguments makes this a property.
    parameter_shapes: ClassVar[Mapping[str, Any]] = {}
    problem_type: ClassVar[type] = object
    #: ``residual`` reads a residual the iteration updates by a recurrence
    #: (``r_{k+1} = r_k - alpha A p_k``), not one computed from the iterate. In floating point
    #: the two drift apart, so the driver confirms every stop on ``b - A x`` and, where that
    #: fails, calls :meth:`replace_residual` (:func:`run`, "True residuals").
    recurrence_residual: ClassVar[bool] = False
    #: Every state entry has the batch as leading dimension (none is shared), so the driver may
    #: step a gathered sub-batch of the running instances.
    per_instance_state: ClassVar[bool] = False

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (stored in artifacts)."""
        return {}

    def validate(self, problem) -> None:
        """Check method-specific requirements on ``problem`` (square, SPD, ...)."""
        if not isinstance(problem, self.problem_type):
            raise TypeError(f"problem must be a {self.problem_type.__name__} for "
                            f"{self.name}, got {type(problem).__name__}")

    def init(self, problem, x0: torch.Tensor, params: Mapping[str, torch.Tensor]) -> State:
        return {"x": x0}

    def step(self, problem, state: State, params: Mapping[str, torch.Tensor]) -> State:
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def step_in_place(self, problem, state: State,
                      params: Mapping[str, torch.Tensor]) -> State:
        """:meth:`step`, allowed to overwrite the state's tensors (fused in-place vector
        updates: no fresh batch-sized buffers, whose first touch costs page faults). The
        driver calls it instead of ``step`` only while every instance is running and nothing
        needs a gradient, and never hands it the caller's ``x0`` as the iterate. The default
        is :meth:`step`."""
        return self.step(problem, state, params)

    def residual(self, problem, state: State) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement residual()")

    def replace_residual(self, problem, state: State, params: Mapping[str, torch.Tensor],
                         residual: torch.Tensor) -> State:
        """The state with its recurrence residual replaced by ``residual = b - A x`` (residual
        replacement, van der Vorst and Ye, SIAM J. Sci. Comput. 22, 2000), and whatever the next
        step derives from the residual made consistent with it. Only methods with
        ``recurrence_residual = True`` need it; the driver keeps the result only for the
        instances whose confirmation failed."""
        raise NotImplementedError(f"{type(self).__name__} declares recurrence_residual and must "
                                  f"implement replace_residual()")

    def reference_norm(self, problem) -> torch.Tensor:
        """``||b||``: what ``rtol`` multiplies under the residual monitor."""
        return torch.linalg.vector_norm(problem.rhs, dim=1)

    def zero_guess(self, problem) -> torch.Tensor:
        """The initial guess when none is given (``Psi_base`` of the GBMS paper)."""
        return torch.zeros_like(problem.rhs)

    def converged(self, problem, state: State, norms: torch.Tensor,
                  threshold: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: which instances meet the stopping test. Default: the monitored norm
        is at most its threshold ``max(rtol * reference, atol)``."""
        return norms <= threshold

    def report(self, problem, state: State) -> dict[str, Any]:
        """Entries the method adds to ``Solution.info`` from its final state (per-instance
        counts of what it decided, such as rejected accelerated steps). Default: none."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


MONITORS = ("residual", "error")

#: An instance whose recurrence residual once passed the test but whose true residual did not
#: is checked on its true residual at least every this many iterations (one product ``A x``),
#: so a recurrence that cannot pass again does not run on to ``maxiter`` unseen.
CONFIRM_EVERY = 10
#: Consecutive confirmations without a new smallest true residual after which an instance stops
#: with ``Status.ACCURACY_LIMIT``.
FLOOR_PATIENCE = 4
#: A run that records an autograd graph over iterates of more than this many bytes in total
#: (iterations times the iterate's size, a lower bound on the graph's memory), without
#: ``fixed_iterations`` or ``truncate``, warns once per call site (:class:`GraphMemoryWarning`).
#: Training runs a fixed number of iterations or a capped surrogate (a few hundred iterations
#: of small batches) and stays far below it.
GRAPH_WARNING_BYTES = 64 * 2 ** 20


class GraphMemoryWarning(UserWarning):
    """A solve under autograd kept a large graph: every iteration's tensors stay alive for the
    backward pass. Solve under ``torch.no_grad()``, or pass ``truncate=T`` or
    ``fixed_iterations=m`` if the gradient is wanted."""


def _monitor(method: IterativeMethod, problem, state: State, monitor: str) -> torch.Tensor:
    if monitor == "residual":
        return method.residual(problem, state)
    return torch.linalg.vector_norm((state["x"] - problem.solution).flatten(1), dim=1)


def _true_residual(problem, wide, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b - A x, ||b - A x||)``: the residual in the problem's dtype (what a replacement
    continues with) and its norm from ``wide``, the same systems in float64, detached (what the
    stopping test reads: in float32 the rounding of ``b - A x`` itself is of the order of the
    tolerances asked for, and a test on it would accept iterates whose exact residual is
    larger)."""
    residual = problem.residual(x)
    if wide is problem:
        return residual, torch.linalg.vector_norm(residual.detach(), dim=1)
    exact = wide.residual(x.detach().to(wide.dtype))
    return residual, torch.linalg.vector_norm(exact, dim=1)


def default_maxiter(problem) -> int:
    """The iteration cap of :func:`run` when none is given: ten times the unknowns."""
    return 10 * problem.size


def run(method: IterativeMethod, problem, *, params: Mapping[str, torch.Tensor] | None = None,
        x0: torch.Tensor | None = None, rtol: float = 1e-5, atol: float = 0.0,
        maxiter: int | torch.Tensor | None = None, fixed_iterations: int | None = None,
        monitor: str = "residual", callback: Callable | None = None,
        give_up: Callable | None = None, truncate: int | None = None,
        divergence_factor: float = 1e8, stagnation_window: int | None = None, throw: bool = False,
        device=None, history: bool = True, chunk_size: int | None = None) -> Solution:
    """Run ``method`` on a batch of problems; the one driver loop of metasolve.

    Stopping (SciPy's vocabulary, docs/architecture.md, convention 4): instance ``i`` converges
    at the first ``k`` with ``||r_k|| <= max(rtol * ||b||, atol)``. With ``monitor="error"`` the
    error ``||x_k - x*||`` against ``problem.solution`` and ``||x*||`` are used instead (the
    criterion of the GBMS paper's Poisson example, sec. 2.2.1). Finished instances are frozen by
    a mask, so their counts are exact; the loop ends when all have stopped or after ``maxiter``
    iterations.

    With ``fixed_iterations=m`` every instance takes exactly ``m`` iterations (``Phi_m`` of the
    GBMS paper); the status then says whether the tolerance holds at the end (on the monitored
    norm as it is, without the confirmation below: ``Phi_m`` must not depend on it).

    True residuals: a method whose monitored norm is a recurrence-updated residual
    (``method.recurrence_residual``: CG, Chebyshev iteration, the polynomial recurrence, the
    Chebyshev expansion) reaches the test with a residual that has drifted from ``b - A x`` by
    rounding, by far more than the tolerance on ill-conditioned systems. So when an instance's
    recurrence residual passes, the driver computes its true residual (one product, float64
    for a float32 problem) and stops it as ``CONVERGED`` only if that passes too. Otherwise the
    recurrence residual is replaced by the true one (``method.replace_residual``) and the
    instance goes on; from then on its true residual is also checked every
    :data:`CONFIRM_EVERY` iterations, and after :data:`FLOOR_PATIENCE` checks in a row without
    a new smallest true residual it stops with ``Status.ACCURACY_LIMIT``: the tolerance is
    below what the method attains in this precision. Well-conditioned solves pass the first
    confirmation and take the iterations they always took; ill-conditioned ones may take a few
    more. ``info["confirmations"]`` counts the extra products.

    Args:
        params: the method's parameters ``theta``, per instance, a mapping from the names in
            ``method.parameter_names`` to tensors of the shapes in ``method.parameter_shapes``
            (checked here); ``params["x0"]`` is an initial guess (same as ``x0``).
        truncate: if set, gradients flow through at most that many consecutive iterations
            (truncated backpropagation); ``None`` is full unrolling. Autograd itself is the
            caller's choice (``torch.no_grad()`` for none); a run that keeps a graph over more
            than :data:`GRAPH_WARNING_BYTES` of iterates without ``fixed_iterations`` or
            ``truncate`` warns (:class:`GraphMemoryWarning`).
        divergence_factor: an instance whose monitored norm exceeds this factor times the larger
            of its initial value and its reference norm, or becomes non-finite, stops with
            ``Status.DIVERGED``.
        stagnation_window: if set, an instance whose monitored norm has not reached a new
            minimum for that many iterations stops with ``Status.STAGNATED``. Off by default,
            so existing results do not change; a value of a few hundred is permissive.
        maxiter: the iteration cap, default ``10 * problem.size``; or one cap per instance, an
            integer tensor of shape ``(B,)`` (the safeguard's fallback continues each instance
            with what is left of the caller's cap).
        callback: ``callback(k, state, norms)`` after each iteration.
        give_up: a budget that depends on the progress so far:
            ``give_up(k, norms, start, threshold, reference)`` after iteration ``k`` (1, 2, ...),
            with the monitored norms now and at the start, the stopping threshold and the
            reference norm (each ``(B,)``, detached), returns a ``(B,)`` bool mask of the
            instances to stop now. They end with ``Status.MAX_ITERATIONS``, as a cap would stop
            them, and ``info["given_up"]`` marks them (the safeguard's rate test hands them to
            the classical method, :mod:`metasolve.learned.safeguard`).
        throw: raise :class:`ConvergenceError` if any instance did not converge.
        device: where the solve runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
            :class:`torch.device`): the problem, ``params`` and ``x0`` are moved there for it
            and the solution's tensors lie there. ``None`` (default): where the problem's data
            lie. A method with weights of its own must be there already
            (``method.to(device)``; :meth:`~metasolve.LearnedSolver.solve` moves it). A
            malformed or unavailable device is a ``ValueError`` naming ``device``.
        history: keep the monitored norm of every iteration (``Solution.residual_history``,
            ``(K + 1, B)``, default). ``False`` keeps the first and the last only (``(2, B)``;
            ``Solution.iterations_to`` then refuses): a long solve of many instances otherwise
            holds ``K B`` norms.
        chunk_size: solve the batch ``chunk_size`` instances at a time and join the results
            (:meth:`Solution.concatenate`), so that the iteration's temporaries stay those of
            one chunk; with ``history=False`` the memory of a large batch is then its problems,
            iterates and a few numbers per instance. Each instance follows the same iteration
            as in one batch, to round-off: a product over a chunk may round differently from
            one over the whole batch, which near a method's attainable accuracy (in float32)
            can change an instance's count. ``callback`` and ``give_up`` are called per chunk,
            with that chunk's instances.

    Returns:
        A :class:`~metasolve.solution.Solution`; ``info["params"]`` holds the ``params`` it ran
        with (still attached to autograd), for losses that score the parameters themselves
        (the GBMS paper's penalty on a failed factorization, sec. 4.2). ``solution.x`` is a
        tensor of its own, never the caller's ``x0``.
    """
    check_instance("method", method, IterativeMethod)
    if not isinstance(history, bool):
        raise TypeError(f"history must be True or False, got {type(history).__name__}")
    check_count("chunk_size", chunk_size, minimum=1, allow_none=True)
    if chunk_size is not None and problem.batch_size > chunk_size:
        return _run_in_chunks(method, problem, chunk_size, params=params, x0=x0, rtol=rtol,
                              atol=atol, maxiter=maxiter, fixed_iterations=fixed_iterations,
                              monitor=monitor, callback=callback, give_up=give_up,
                              truncate=truncate, divergence_factor=divergence_factor,
                              stagnation_window=stagnation_window, throw=throw, device=device,
                              history=history)
    if device is not None:
        problem, params, x0 = _on_device(check_device("device", device), method, problem,
                                         params, x0)
    method.validate(problem)
    rtol = check_nonnegative("rtol", rtol)
    atol = check_nonnegative("atol", atol)
    check_choice("monitor", monitor, MONITORS)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    if give_up is not None and not callable(give_up):
        raise TypeError(f"give_up must be callable, got {type(give_up).__name__}")
    check_count("fixed_iterations", fixed_iterations, allow_none=True)
    check_count("truncate", truncate, minimum=1, allow_none=True)
    check_count("stagnation_window", stagnation_window, minimum=1, allow_none=True)
    if check_nonnegative("divergence_factor", divergence_factor) < 1:
        raise ValueError(f"divergence_factor must be >= 1, got {divergence_factor}")
    caps = None  # per-instance caps, where maxiter is a tensor
    if isinstance(maxiter, torch.Tensor):
        if fixed_iterations is not None:
            raise ValueError("give either a per-instance maxiter or fixed_iterations, not both")
        caps = check_instance_counts("maxiter", maxiter, problem.batch_size)
        maxiter = int(caps.max()) if len(caps) else 0
    if fixed_iterations is not None:
        if maxiter is not None and maxiter != fixed_iterations:
            raise ValueError(f"give either maxiter ({maxiter}) or fixed_iterations "
                             f"({fixed_iterations}), not both")
        maxiter = fixed_iterations
    elif maxiter is None:
        maxiter = default_maxiter(problem)
    check_count("maxiter", maxiter)
    if monitor == "error" and getattr(problem, "solution", None) is None:
        raise ValueError("monitor='error' needs problem.solution (the exact solutions)")

    # A parameter without a declared shape (a user's method written before parameter_shapes)
    # is only checked for its batch, dtype and finiteness, as it always was.
    shapes = method.parameter_shapes
    params = check_params(params, {name: shapes.get(name) for name in method.parameter_names},
                          batch=problem.batch_size, size=problem.size, dtype=problem.dtype,
                          owner=method.name)
    if x0 is not None and "x0" in params:
        raise ValueError("give the initial guess either as x0 or as params['x0'], not both")
    theta = dict(params)
    given = params.pop("x0", x0)
    x0 = method.zero_guess(problem) if given is None else problem.check_batch("x0", given)

    start = time.perf_counter()
    state = method.init(problem, x0, params)
    # Remember where x0 lives, not x0 itself: a zero guess made here is then freed once the
    # iterate moves on (one vector of the batch less while iterating).
    x0_storage = _storage(x0)
    if x0_storage is not None:
        x0 = None
    # In-place steps (IterativeMethod.step_in_place) while nothing needs a gradient; they
    # never overwrite the caller's x0.
    in_place = not (torch.is_grad_enabled() and any(
        isinstance(value, torch.Tensor) and value.requires_grad
        for value in (*state.values(), *params.values())))
    if in_place and (_storage(state["x"]) == x0_storage if x0 is None
                     else _shares_memory(state["x"], x0)):
        state["x"] = state["x"].clone()
    if method.per_instance_state:
        shared = sorted(key for key, value in state.items()
                        if not isinstance(value, torch.Tensor)
                        or value.shape[:1] != (problem.batch_size,))
        if shared:
            raise ValueError(f"{method.name} declares per_instance_state, but its state entries "
                             f"{shared} do not have the batch ({problem.batch_size}) as leading "
                             f"dimension")
    norms = _monitor(method, problem, state, monitor)
    if monitor == "error":
        reference = torch.linalg.vector_norm(problem.solution.flatten(1), dim=1)
    else:
        reference = method.reference_norm(problem)
    reference = reference.detach()
    threshold = torch.clamp(rtol * reference, min=atol)
    batch = norms.shape[0]
    initial = norms.detach()

    # Each instance stops at the first iterate that passes the stopping test, breaks down, or
    # leaves the divergence bound (NaN compares false, so it leaves it too); it is frozen from
    # then on, and its final state tells the statuses apart.
    # Measured against the larger of the start and the reference norm: a start that is exact
    # (an integrator's error at step 0 is zero) must not make every later iterate "diverged".
    limit = divergence_factor * torch.maximum(initial, reference).clamp_min(
        torch.finfo(initial.dtype).tiny)
    device = initial.device
    iterations = torch.zeros(batch, dtype=torch.int64, device=device)
    recorded = [norms]  # the monitored norms before each iteration (the first only, without
    # history)
    steps = 0
    no_breakdown = torch.zeros(batch, dtype=torch.bool, device=device)
    testing = fixed_iterations is None  # Phi_m runs all m iterations; only a breakdown stops it
    checks = _StopChecks(method, problem, params, threshold, batch, device,
                         confirm=testing and monitor == "residual"
                         and method.recurrence_residual,
                         window=stagnation_window if testing else None)

    def still_running(k, state, norms, active):
        # The instances that may go on (None: all of them), in as few tensor operations as
        # the options allow: at a batch of one the loop's bookkeeping costs as much as a
        # small problem's iteration (benchmarks/driver_overhead.py).
        broken = state.get("breakdown")
        running = None if broken is None else ~broken
        if testing:
            value = norms.detach() if norms.requires_grad else norms
            passed = method.converged(problem, state, value, threshold)
            if checks.needed:
                state, norms, passed = checks.update(
                    k, state, norms, passed, active if running is None else active & running)
                passed = passed | checks.stopped
            # Inside the divergence bound (NaN compares false) and not passed.
            going = (value <= limit) & ~passed
            running = going if running is None else running & going
        return state, norms, running

    active = torch.ones(batch, dtype=torch.bool, device=device)
    state, norms, running = still_running(0, state, norms, active)
    if running is not None:
        active = running
    if caps is not None:
        caps = caps.to(device)
        active = active & (caps > 0)
    recorded[0] = norms
    start_norms = norms.detach()
    given_up = torch.zeros(batch, dtype=torch.bool, device=device)
    for k in range(maxiter):
        n_active = int(active.sum())
        if n_active == 0:
            break
        if truncate is not None and k % truncate == 0 and k > 0:
            state = {key: value.detach() for key, value in state.items()}
        if method.per_instance_state and n_active <= SUBSET_FRACTION * batch:
            state, norms = _subset_step(method, problem, state, params, active, norms, monitor)
        else:
            every = n_active == batch
            if every and in_place:
                stepped = method.step_in_place(problem, state, params)
            else:
                stepped = method.step(problem, state, params)
            state = _masked_update(active, stepped, state, batch, every=every)
            stepped_norms = _monitor(method, problem, state, monitor)
            norms = stepped_norms if every else torch.where(active, stepped_norms, norms)
        iterations += active
        state, norms, running = still_running(k + 1, state, norms, active)
        if running is not None:
            active = active & running
        if caps is not None:
            active = active & (iterations < caps)
        if give_up is not None:
            stop = give_up(k + 1, norms.detach(), start_norms, threshold, reference).to(
                device) & active
            given_up |= stop
            active = active & ~stop
        steps += 1
        if history:
            recorded.append(norms)
        if callback is not None:
            callback(k, state, norms)

    final = norms.detach()
    status = torch.full((batch,), int(Status.MAX_ITERATIONS), dtype=torch.int64, device=device)
    if checks.confirm:
        status[checks.confirmed] = int(Status.CONVERGED)
    else:
        status[method.converged(problem, state, final, threshold)] = int(Status.CONVERGED)
    status[checks.stagnated] = int(Status.STAGNATED)
    status[checks.floor] = int(Status.ACCURACY_LIMIT)
    status[~(final <= limit) | ~torch.isfinite(final)] = int(Status.DIVERGED)
    status[state.get("breakdown", no_breakdown)] = int(Status.BREAKDOWN)

    x = state["x"]
    if _storage(x) == x0_storage if x0 is None else _shares_memory(x, x0):
        x = x.clone()  # no step was taken: never hand the caller's own x0 back
    # A method may iterate in another memory layout (SCS holds the batch fastest); the
    # caller gets rows, as the problem's vectors are.
    x = x.contiguous()
    if (torch.is_grad_enabled() and x.requires_grad and fixed_iterations is None
            and truncate is None
            and steps * x.numel() * x.element_size() > GRAPH_WARNING_BYTES):
        warnings.warn(f"{method.name}: this solve kept the autograd graph of {steps} "
                      f"iterations (at least {steps * x.numel() * x.element_size() / 2**20:.0f} "
                      f"MiB of iterates) for a backward pass; solve under torch.no_grad() if no "
                      f"gradient is wanted, or pass truncate=T or fixed_iterations=m",
                      GraphMemoryWarning, stacklevel=2)
    if monitor == "error":
        history_norm = "error"
    else:
        history_norm = "recurrence" if method.recurrence_residual else "residual"
    if not history:
        recorded.append(norms)
    solution = Solution(x=x, status=status, iterations=iterations,
                        residual_history=torch.stack(recorded), reference_norm=reference,
                        threshold=threshold, wall_time=time.perf_counter() - start,
                        info={"method": method.name, "monitor": monitor, "rtol": rtol,
                              "atol": atol, "maxiter": maxiter if caps is None else caps,
                              "params": theta,
                              "history_norm": history_norm, "history": history,
                              "confirmations": checks.confirmations,
                              **({} if give_up is None else {"given_up": given_up}),
                              **method.report(problem, state)})
    if throw and not bool(solution.converged.all()):
        raise ConvergenceError(f"{method.name}: {solution.summary()}", solution)
    return solution


def chunk_rows(value, batch: int, part: slice):
    """The rows ``part`` of a per-instance ``value`` (a tensor with the ``batch`` as leading
    dimension) for one chunk of a chunked solve; anything else (a parameter shared by the
    batch, an integer cap) goes to every chunk as it is."""
    if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch:
        return value[part]
    return value


def _run_in_chunks(method: IterativeMethod, problem, chunk_size: int, *, params, x0, maxiter,
                   **options) -> Solution:
    """:func:`run` on consecutive slices of ``chunk_size`` instances of ``problem`` (with the
    matching rows of ``params``, ``x0`` and a per-instance ``maxiter``), each written into one
    :class:`Solution` as it finishes (:class:`~metasolve.solution.SolutionJoin`). ``throw``
    asks about the whole batch, after the last chunk."""
    throw = options.pop("throw")
    batch = problem.batch_size
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of parameter names to tensors, got "
                        f"{type(params).__name__}")

    join = SolutionJoin(batch)
    for begin in range(0, batch, chunk_size):
        part = slice(begin, min(begin + chunk_size, batch))
        join.add(run(method, problem.index(part),
                     params=None if params is None else {
                         k: chunk_rows(v, batch, part) for k, v in params.items()},
                     x0=chunk_rows(x0, batch, part), maxiter=chunk_rows(maxiter, batch, part),
                     **options))
    solution = join.result()
    if throw and not bool(solution.converged.all()):
        raise ConvergenceError(f"{method.name}: {solution.summary()}", solution)
    return solution


def _on_device(device: torch.device, method: IterativeMethod, problem, params, x0):
    """``(problem, params, x0)`` moved to ``device`` for :func:`run`; a method whose own
    weights lie elsewhere is refused (moving them is its owner's decision)."""
    if isinstance(method, torch.nn.Module):
        for name, tensor in [*method.named_parameters(), *method.named_buffers()]:
            if tensor.device != device:
                raise ValueError(f"device={str(device)!r}: the weights of method {method.name} "
                                 f"lie on {tensor.device} ({name}); move them first "
                                 "(method.to(device)) or solve through "
                                 "LearnedSolver.solve(tasks, device=...)")
    mover = getattr(problem, "to", None)
    if not callable(mover):
        raise TypeError(f"device: a {type(problem).__name__} has no to(device); subclass "
                        "metasolve.Problem or solve it where its data lie (device=None)")
    problem = mover(device)
    if params is not None:
        params = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                  for k, v in params.items()}
    if isinstance(x0, torch.Tensor):
        x0 = x0.to(device)
    return problem, params, x0


def _storage(a: torch.Tensor) -> int | None:
    """The address of ``a``'s storage (``None`` for tensors without one, such as torch.func
    wrappers)."""
    try:
        return a.untyped_storage().data_ptr()
    except (NotImplementedError, RuntimeError):
        return None


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    mine = _storage(a)
    return mine is not None and mine == _storage(b)


class _StopChecks:
    """The driver's stopping checks beyond one norm against one threshold: confirmation of a
    recurrence residual on the true residual (with replacement and the accuracy limit) and the
    optional stagnation test. Per-instance bookkeeping only; :func:`run` documents the rules."""

    def __init__(self, method, problem, params, threshold, batch, device, confirm, window):
        self.method, self.problem, self.params = method, problem, params
        self.threshold, self.confirm, self.window = threshold, confirm, window
        self.wide = None
        if confirm:
            self.wide = problem if problem.dtype == torch.float64 else problem.widened()
        zeros = torch.zeros(batch, dtype=torch.int64, device=device)
        self.confirmations = zeros.clone()
        self.confirmed = torch.zeros(batch, dtype=torch.bool, device=device)
        self.floor = self.confirmed.clone()
        self.stagnated = self.confirmed.clone()
        self.best_true = torch.full((batch,), float("inf"), dtype=torch.float64, device=device)
        self.strikes = zeros.clone()
        self.since = zeros - 1  # iterations since a failed confirmation; -1: none yet
        self.best = None
        self.best_at = zeros.clone()

    @property
    def needed(self) -> bool:
        """Whether any check is on (otherwise :meth:`update` changes nothing)."""
        return self.confirm or self.window is not None

    @property
    def stopped(self) -> torch.Tensor:
        return self.floor | self.stagnated

    def update(self, k, state, norms, passed, active):
        if self.window is not None:
            value = norms.detach()
            if self.best is None:
                self.best = value.clone()
            improved = value < self.best
            self.best = torch.where(improved, value, self.best)
            self.best_at = torch.where(improved, torch.full_like(self.best_at, k), self.best_at)
            self.stagnated |= active & ~passed & (k - self.best_at >= self.window)
        if not self.confirm:
            return state, norms, passed
        self.since = torch.where(self.since >= 0, self.since + 1, self.since)
        check = active & (passed | (self.since >= CONFIRM_EVERY))
        if not bool(check.any()):
            return state, norms, passed & active  # all False: no running instance passed
        idx = check.nonzero().squeeze(1)
        residual, true = _true_residual(self.problem.index(idx), self.wide.index(idx),
                                        state["x"][idx])
        self.confirmations[idx] += 1
        ok = true <= self.threshold[idx].to(true.dtype)
        improved = true < self.best_true[idx]
        self.strikes[idx] = torch.where(improved, torch.zeros_like(self.strikes[idx]),
                                        self.strikes[idx] + 1)
        self.best_true[idx] = torch.minimum(self.best_true[idx], true)
        self.since[idx[~ok]] = 0
        self.confirmed[idx[ok]] = True
        self.floor[idx[~ok & (self.strikes[idx] >= FLOOR_PATIENCE)]] = True
        confirmed = passed.clone()
        confirmed[idx] = ok
        lying = idx[~ok & passed[idx]]  # the recurrence passed, the true residual did not
        if lying.numel():
            full = torch.zeros_like(state["x"]).index_put((idx,), residual)
            replaced = self.method.replace_residual(self.problem, state, self.params, full)
            mask = torch.zeros_like(passed)
            mask[lying] = True
            state = _masked_update(mask, replaced, state, passed.shape[0])
            norms = torch.where(mask, self.method.residual(self.problem, state), norms)
        return state, norms, confirmed & active


#: Step a gathered sub-batch once at most this fraction of the instances is still running; the
#: gather and scatter cost less than stepping the frozen majority.
SUBSET_FRACTION = 0.5


def _subset_step(method: IterativeMethod, problem, state: State, params, active: torch.Tensor,
                 norms: torch.Tensor, monitor: str) -> tuple[State, torch.Tensor]:
    """One step of the running instances only; frozen ones keep their state and norms.

    Equivalent to the masked full step (the same per-instance arithmetic), and differentiable:
    the scatter is the out-of-place ``index_put``.
    """
    idx = active.nonzero().squeeze(1)
    sub_problem = problem.index(idx)
    sub_state = {key: value[idx] for key, value in state.items()}
    sub_params = {key: value[idx] for key, value in params.items()}
    stepped = method.step(sub_problem, sub_state, sub_params)
    if set(stepped) != set(state):
        raise ValueError(f"{method.name}.step returned state entries {sorted(stepped)}, "
                         f"init gave {sorted(state)}: the entries must stay the same")
    new_state = {}
    for key, value in stepped.items():
        if value.shape != sub_state[key].shape:
            raise ValueError(f"state entry {key!r} changed from {tuple(sub_state[key].shape)} "
                             f"to {tuple(value.shape)}")
        new_state[key] = state[key].index_put((idx,), value)
    sub_norms = _monitor(method, sub_problem, stepped, monitor)
    return new_state, norms.index_put((idx,), sub_norms)


def _masked_update(active: torch.Tensor, new: State, old: State, batch: int,
                   every: bool = False) -> State:
    """Take the new state only where the instance is still active (docs/architecture.md,
    convention 1). ``every``: all instances are active, so the new state is taken as it is
    (the same values and gradients, without a masked copy of every entry)."""
    out = {}
    for key, value in new.items():
        prev = old.get(key)
        if value is prev:  # shared, unchanged data (a matrix, a factorization)
            out[key] = value
            continue
        if prev is None or value.shape[:1] != (batch,) or prev.shape != value.shape:
            raise ValueError(f"state entry {key!r} changed from "
                             f"{None if prev is None else tuple(prev.shape)} to "
                             f"{tuple(value.shape)}: entries must keep one shape with the batch "
                             f"({batch}) as leading dimension, or be passed on unchanged")
        if every:
            out[key] = value
            continue
        mask = active.reshape((-1,) + (1,) * (value.ndim - 1))
        out[key] = torch.where(mask, value, prev)
    return out
