"""The result of a batched iterative solve: :class:`Solution` and its :class:`Status` codes.

Not converging is a status, not an exception (docs/architecture.md, convention 3). Callers who
prefer an exception pass ``throw=True`` to :func:`metasolve.run`, which raises
:class:`ConvergenceError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch


class Status(enum.IntEnum):
    """Per-instance outcome of an iterative solve.

    The integer codes are stable (``Solution.status`` holds them, and records may store them);
    new statuses are added after the existing ones. ``STAGNATED`` is only given when the caller
    asks for the stagnation test (``run(..., stagnation_window=W)``); ``ACCURACY_LIMIT`` is the
    outcome of a method whose stopping norm is a recurrence-updated residual when that residual
    meets the tolerance but the true residual ``b - A x`` cannot be brought below it (the
    attainable accuracy of the recurrence in finite precision, see :func:`metasolve.run`).
    ``str(status)`` is the lower-case name (``"converged"``), the word :meth:`Solution.summary`
    uses; ``status.message`` says in one line what happened.

    Example:
        >>> str(Status.MAX_ITERATIONS), int(Status.MAX_ITERATIONS)
        ('max_iterations', 1)
        >>> print(Status(2).message)
        diverged: the monitored norm grew past divergence_factor times its start, or is not finite
    """

    CONVERGED = 0
    MAX_ITERATIONS = 1
    DIVERGED = 2
    BREAKDOWN = 3
    STAGNATED = 4
    ACCURACY_LIMIT = 5

    def __str__(self) -> str:
        return self.name.lower()

    def __format__(self, spec: str) -> str:
        # f"{status}" reads like str(status); an IntEnum would format as its integer.
        return format(str(self), spec)

    @property
    def message(self) -> str:
        """One line saying what the status means."""
        return f"{self}: {_MESSAGES[self]}"


_MESSAGES = {
    Status.CONVERGED: "the monitored norm reached max(rtol * reference_norm, atol) (for a "
                      "recurrence-updated residual, confirmed on the true residual b - A x)",
    Status.MAX_ITERATIONS: "stopped after maxiter iterations without reaching the tolerance",
    Status.DIVERGED: "the monitored norm grew past divergence_factor times its start, "
                     "or is not finite",
    Status.BREAKDOWN: "the method broke down (a zero denominator or a non-positive pivot)",
    Status.STAGNATED: "the monitored norm made no new minimum over stagnation_window iterations",
    Status.ACCURACY_LIMIT: "the recurrence residual met the tolerance but the true residual "
                           "b - A x stayed above it: the tolerance is below the attainable "
                           "accuracy in this precision",
}


class ConvergenceError(RuntimeError):
    """Raised by ``run(..., throw=True)`` when some instance did not converge."""

    def __init__(self, message: str, solution: Solution):
        super().__init__(message)
        self.solution = solution


@dataclass
class Solution:
    """Outcome of a batched solve; every per-instance field has the batch as leading dimension.

    Attributes:
        x: final iterates, shape ``(B, ...)``. Differentiable when the solve ran with autograd on.
        status: ``(B,)`` int64 tensor of :class:`Status` codes.
        iterations: ``(B,)`` int64 tensor, iterations each instance took before it stopped.
        residual_history: ``(K + 1, B)`` monitored norm before iteration 0..K, where K is the
            number of driver iterations. A stopped instance is frozen, so its entries repeat.
            A solve with ``history=False`` (``info["history"]``) keeps ``(2, B)``: the first
            and the last.
            Which norm it is: ``info["history_norm"]``, one of ``"residual"`` (the method's
            residual computed from the iterate, e.g. ``||b - A x||``), ``"recurrence"`` (a
            residual the method updates by a recurrence, ``r_{k+1} = r_k - alpha A p_k``: equal
            to ``b - A x`` in exact arithmetic, drifting from it in floating point; where a
            confirmation found them apart, the entry holds the true norm, which then replaces
            the recurrence's) or ``"error"`` (``||x - x*||``, ``monitor="error"``).
            ``info["confirmations"]`` (``(B,)``) counts the true residuals the driver computed
            per instance to confirm a recurrence residual (one product ``A x`` each).
        reference_norm: ``(B,)`` the norm the relative tolerance multiplies (``||b||`` for the
            residual monitor, ``||x*||`` for the error monitor).
        threshold: ``(B,)`` ``max(rtol * reference_norm, atol)``, the stopping threshold.
        wall_time: seconds spent in the driver loop.
        fallback: ``(B,)`` bool, for a safeguarded learned solve: the instances the learned
            parameters left unconverged, which the classical method then solved, and, for a
            method guarded inside its iteration (neural SCS), those where a learned step was
            refused for the plain one (``info["rejected_steps"]``;
            :mod:`metasolve.learned.safeguard`); ``None`` for any other solve.
        out_of_distribution: ``(B,)`` bool, for a learned solve whose solver knows its training
            features: the instances whose features lie outside them; ``None`` otherwise.
    """

    x: torch.Tensor
    status: torch.Tensor
    iterations: torch.Tensor
    residual_history: torch.Tensor
    reference_norm: torch.Tensor
    threshold: torch.Tensor
    wall_time: float
    info: dict = field(default_factory=dict)
    fallback: torch.Tensor | None = None
    out_of_distribution: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.status.shape[0])

    @property
    def converged(self) -> torch.Tensor:
        """``(B,)`` bool mask of the instances that reached the tolerance."""
        return self.status == Status.CONVERGED

    @property
    def residual(self) -> torch.Tensor:
        """``(B,)`` final monitored norm."""
        return self.residual_history[-1]

    @property
    def relative_history(self) -> torch.Tensor:
        """``(K + 1, B)`` monitored norm divided by the reference norm."""
        return self.residual_history / self.reference_norm.clamp_min(torch.finfo(
            self.reference_norm.dtype).tiny)

    def iterations_to(self, rtol: float) -> torch.Tensor:
        """Iterations each instance needed to reach ``||.|| <= rtol * reference_norm``.

        Read off the recorded history, so one solve to the smallest tolerance answers every
        larger one. Instances that never reached it get -1. A solve that kept no history
        (``history=False``) cannot answer: ``ValueError``.
        """
        if self.info.get("history", True) is False:
            raise ValueError("iterations_to needs the residual history, and this solve kept "
                             "none (history=False): solve with history=True")
        reached = self.relative_history.detach() <= rtol
        first = torch.argmax(reached.to(torch.int8), dim=0)
        return torch.where(reached.any(dim=0), first, torch.full_like(first, -1))

    def status_names(self) -> list[str]:
        """The status of each instance as its name (``str`` of :class:`Status`), e.g.
        ``["converged", "max_iterations"]``."""
        return [str(Status(int(code))) for code in self.status.tolist()]

    def summary(self) -> str:
        counts = {str(s): int((self.status == s).sum()) for s in Status}
        parts = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
        flags = "".join(f", {name}={int(mask.sum())}" for name, mask in (
            ("fallback", self.fallback), ("out_of_distribution", self.out_of_distribution))
            if mask is not None)
        return (f"Solution(batch={self.batch_size}, {parts}, "
                f"mean_iterations={self.iterations.double().mean().item():.2f}{flags})")

    __repr__ = summary

    @classmethod
    def concatenate(cls, parts: list[Solution]) -> Solution:
        """One solution of the instances of ``parts`` in order (solves of consecutive slices of
        one batch, ``run(..., chunk_size=...)``). Histories of different lengths are extended
        by repeating their last row, as the driver freezes a stopped instance; wall times and
        the ``info`` entries ending in ``_time`` add up (a part without one adds nothing); the
        parts must agree on ``history``; an ``info`` entry with the batch as
        leading dimension (per instance) is joined, one that is the same in every part is kept,
        and one that differs otherwise becomes the list of the parts' values."""
        if not isinstance(parts, (list, tuple)) or not parts:
            raise ValueError("parts must be a non-empty list of Solutions")
        join = SolutionJoin(sum(_check_part(part).batch_size for part in parts))
        for part in parts:
            join.add(part)
        return join.result()


def _check_part(part) -> Solution:
    if not isinstance(part, Solution):
        raise TypeError(f"parts must be Solutions, got {type(part).__name__}")
    return part


#: The per-instance fields of a Solution besides ``x`` (``None`` in a solve without them).
_PER_INSTANCE = ("status", "iterations", "reference_norm", "threshold", "fallback",
                 "out_of_distribution")


class SolutionJoin:
    """:meth:`Solution.concatenate` one part at a time, for the chunked solves: each part's
    per-instance tensors are copied into the joined ones, allocated for all ``total``
    instances when the first part arrives, so that a chunked solve holds its result and one
    chunk, never every chunk and their join besides. Rules: :meth:`Solution.concatenate`."""

    def __init__(self, total: int):
        self.total, self.offset = total, 0
        self.fields: dict[str, torch.Tensor | None] = {}
        self.histories: list[torch.Tensor] = []
        self.info: dict = {}  # path -> tensor (per instance, joined) or list of part values
        self.sizes: list[int] = []
        self.wall_time = 0.0
        self.kept_history = True

    def _buffer(self, value: torch.Tensor) -> torch.Tensor:
        return torch.empty((self.total, *value.shape[1:]), dtype=value.dtype,
                           device=value.device)

    def add(self, part: Solution) -> None:
        size = _check_part(part).batch_size
        if self.offset + size > self.total:
            raise ValueError(f"the parts hold more than the {self.total} instances announced")
        kept = part.info.get("history", True) is not False
        if self.sizes and kept != self.kept_history:
            raise ValueError("parts must all keep their history or all not (history=False)")
        self.kept_history = kept
        rows = slice(self.offset, self.offset + size)
        for name in ("x", *_PER_INSTANCE):
            value = getattr(part, name)
            if not self.sizes:
                self.fields[name] = None if value is None else self._buffer(value)
            if (value is None) != (self.fields[name] is None):
                raise ValueError(f"parts disagree on whether they have {name}")
            if value is not None:
                self.fields[name][rows] = value
        self.histories.append(part.residual_history)
        seen: set = set()
        self._add_info((), part.info, size, rows, seen)
        for path, held in self.info.items():  # entries this part does not have
            if path not in seen:
                if isinstance(held, torch.Tensor):
                    held = self.info[path] = list(self._pieces(held))
                held.append(None)
        self.sizes.append(size)
        self.offset += size
        self.wall_time += part.wall_time

    def _add_info(self, path: tuple, info: dict, size: int, rows: slice, seen: set) -> None:
        for key, value in info.items():
            here = (*path, key)
            if isinstance(value, dict) and value:
                self._add_info(here, value, size, rows, seen)
                continue
            seen.add(here)
            per_instance = isinstance(value, torch.Tensor) and value.ndim > 0 \
                and value.shape[0] == size
            if here not in self.info:
                if not self.sizes and per_instance:
                    self.info[here] = self._buffer(value)
                    self.info[here][rows] = value
                else:
                    self.info[here] = [None] * len(self.sizes) + [value]
                continue
            held = self.info[here]
            if isinstance(held, torch.Tensor):
                if per_instance and value.shape[1:] == held.shape[1:]:
                    held[rows] = value
                    continue
                # Not per instance after all: the earlier parts' rows become their values.
                held = self.info[here] = list(self._pieces(held))
            held.append(value)

    def _pieces(self, joined: torch.Tensor):
        begin = 0
        for size in self.sizes:
            yield joined[begin:begin + size]
            begin += size

    def result(self) -> Solution:
        if self.offset != self.total:
            raise ValueError(f"the parts hold {self.offset} instances, {self.total} announced")
        length = max(h.shape[0] for h in self.histories)
        history = torch.cat([torch.cat([h, h[-1:].expand(length - h.shape[0], -1)])
                             for h in self.histories], dim=1)
        info: dict = {}
        for path, held in self.info.items():
            target = info
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = held if isinstance(held, torch.Tensor) else \
                _joined_value(path[-1], held)
        fields = self.fields
        return Solution(x=fields["x"], status=fields["status"],
                        iterations=fields["iterations"], residual_history=history,
                        reference_norm=fields["reference_norm"],
                        threshold=fields["threshold"], wall_time=self.wall_time, info=info,
                        fallback=fields["fallback"],
                        out_of_distribution=fields["out_of_distribution"])


def _joined_value(key: str, values: list):
    """The joined value of an ``info`` entry that is not per instance (rules:
    :meth:`Solution.concatenate`)."""
    numbers = [v for v in values if v is not None]
    if key.endswith("_time") and numbers and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return sum(numbers)  # a part without the entry spent no time on it
    first = values[0]
    return first if all(_same(v, first) for v in values) else values


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and bool(torch.equal(a, b)))
    try:
        return bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # a comparison without one answer
        return False
