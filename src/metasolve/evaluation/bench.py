"""End-to-end wall-clock of solvers on one batch, against the solvers practitioners run: the
machinery of ``metasolve bench`` (:mod:`metasolve.benchmark` builds the cases).

A :class:`BenchCase` is one batch of tasks and its :class:`Contender` solvers, each in one of four
roles (:data:`ROLES`): ``learned`` (the learned method in metasolve, safeguarded, as a user runs
it), ``classical`` (the same method with classical parameters, ``solve_baseline``), ``strong``
(the strongest classical solvers for the family: direct solves, pyamg-CG, the real ``scs``,
SciPy's ``newton_krylov``) and ``deployed`` (the learned part inside a strong solver). Each
contender's ``solve()`` does everything a user would do for the batch (features, inference,
factorisations, the solve) and returns an :class:`Outcome`.

:func:`time_case` runs every contender once (warm-up; that outcome is checked against the
reference answers), then ``repeats`` rounds in which each runs once, in an order rotated from round
to round (interleaved, so that a slow spell of a shared machine falls on all of them), and
keeps each one's median. :func:`case_records` turns that into records (docs/architecture.md,
convention 11): seconds per instance, accuracy, ratios to the classical method and to the fastest
strong solver that solved every instance, and the break-even number of solves that pays back the
training time. :func:`bench_tables` and :func:`bench_figure` render the records.
"""

from __future__ import annotations

import contextlib
import statistics
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..progress import standalone_bar
from ..validation import check_choice, check_count
from .records import record
from .render import LOWER, Table, bar_panel, panels

#: The roles of a contender, in the order tables list them.
ROLES = ("learned", "classical", "strong", "deployed")
ROLE_COLORS = {"learned": "tab:orange", "classical": "tab:blue", "strong": "tab:gray",
               "deployed": "tab:green"}


@dataclass
class Outcome:
    """What one solve of the batch gave: ``x`` ``(B, N)`` answers (``None``: nothing to check
    them by), ``converged`` ``(B,)`` bool, ``iterations`` ``(B,)`` (``None`` or -1 where not
    counted: a direct solve) and ``learned`` ``(B,)`` bool, where the learned part was used
    (``None`` for a contender without one)."""

    x: np.ndarray | None
    converged: np.ndarray
    iterations: np.ndarray | None = None
    learned: np.ndarray | None = None


@dataclass
class Contender:
    """One solver of a case: ``method`` (its short name in the records), ``role`` (one of
    :data:`ROLES`), ``label`` (what it is, for people) and ``solve`` (the whole batch,
    end to end)."""

    method: str
    role: str
    label: str
    solve: Callable[[], Outcome]

    def __post_init__(self):
        check_choice("role", self.role, ROLES)


@dataclass
class BenchCase:
    """One batch of tasks and the contenders that solve it.

    ``experiment`` names the records (an experiment, or ``"model"`` for a user's model),
    ``case`` the batch (sizes, count), ``tolerance`` the stopping rule in words, ``count`` the
    instances; ``reference`` ``(B, N)`` exact answers where known (each outcome's largest
    relative error is reported against them); ``train_seconds`` the model's training time and
    ``train_source`` where it comes from (``None``: not recorded, no break-even);
    ``settings`` more keys for every record (scale, model file)."""

    experiment: str
    case: str
    tolerance: str
    count: int
    contenders: list[Contender]
    reference: np.ndarray | None = None
    train_seconds: float | None = None
    train_source: str = "not recorded"
    settings: dict = field(default_factory=dict)


#: ``threads`` values: a positive count as text (``"1"``), or ``"default"`` (torch's and the BLAS
#: libraries' own choice).
DEFAULT_THREADS = "default"


def check_threads(threads) -> str:
    """``threads`` as ``"default"`` or a positive count in text; a ValueError otherwise."""
    text = str(threads).strip().lower()
    if text == DEFAULT_THREADS:
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"threads must be a positive count or 'default', got {threads!r}")
    return str(count)


@contextlib.contextmanager
def thread_limit(threads: str):
    """Run the body with ``threads`` threads in torch and, where ``threadpoolctl`` is installed,
    in NumPy's and SciPy's BLAS and OpenMP pools; ``"default"`` changes nothing."""
    threads = check_threads(threads)
    if threads == DEFAULT_THREADS:
        yield
        return
    count = int(threads)
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(count)
        with limits:
            yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Timed:
    """A contender's ``outcome`` (from the warm-up) and the ``seconds`` of each timed round."""

    contender: Contender
    outcome: Outcome
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_case(case: BenchCase, repeats: int = 5, threads: str = "1",
              progress: bool = False) -> list[Timed]:
    """Each contender once (warm-up), then ``repeats`` interleaved rounds, the order rotated
    from round to round; under :func:`thread_limit` ``threads``, without autograd."""
    repeats = check_count("repeats", repeats, minimum=1)
    contenders = case.contenders
    seconds: list[list[float]] = [[] for _ in contenders]
    outcomes: list[Outcome | None] = [None] * len(contenders)
    bar = standalone_bar((repeats + 1) * len(contenders),
                         f"bench {case.experiment}: {case.case}") if progress \
        else contextlib.nullcontext()
    with thread_limit(threads), torch.no_grad(), bar as shown:
        for i, contender in enumerate(contenders):
            outcomes[i] = contender.solve()
            if shown is not None:
                shown.advance(contender.method)
        for r in range(repeats):
            for j in range(len(contenders)):
                i = (j + r) % len(contenders)
                start = time.perf_counter()
                contenders[i].solve()
                seconds[i].append(time.perf_counter() - start)
                if shown is not None:
                    shown.advance(f"round {r + 1}/{repeats}")
    return [Timed(c, o, s) for c, o, s in zip(contenders, outcomes, seconds, strict=True)]


def relative_errors(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(B,)`` ``||x_i - x*_i|| / ||x*_i||`` (infinite where ``x`` is not finite)."""
    x, reference = np.asarray(x, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    width = min(x.shape[1], reference.shape[1])
    error = np.linalg.norm(x[:, :width] - reference[:, :width], axis=1)
    scale = np.maximum(np.linalg.norm(reference, axis=1), np.finfo(np.float64).tiny)
    out = error / scale
    return np.where(np.isfinite(out), out, np.inf)


def strongest(timed: Sequence[Timed]) -> Timed | None:
    """The fastest ``strong`` contender that solved every instance, else the fastest strong
    one; ``None`` if there is none."""
    strong = [t for t in timed if t.contender.role == "strong"]
    solved = [t for t in strong if bool(np.all(t.outcome.converged))]
    pool = solved or strong
    return min(pool, key=lambda t: t.median) if pool else None


def break_even(train_seconds: float, learned: float, other: float) -> float:
    """Solves (per instance) after which ``train_seconds`` are paid back by solving in
    ``learned`` instead of ``other`` seconds each; ``inf`` when the learned one is not faster."""
    saved = other - learned
    return train_seconds / saved if saved > 0 else float("inf")


def case_records(case: BenchCase, timed: Sequence[Timed], repeats: int,
                 threads: str) -> list[dict]:
    """The records of one timed case (see the module docstring)."""
    best = strongest(timed)
    classical = next((t for t in timed if t.contender.role == "classical"), None)
    where = {"bench": True, "case": case.case, "tolerance": case.tolerance, "count": case.count,
             "repeats": repeats, "threads": threads,
             "strongest": None if best is None else best.contender.method, **case.settings}
    records = []
    if case.train_seconds is not None:
        records.append(record(case.experiment, "training", "train_seconds", case.train_seconds,
                              role="training", label="training (once)",
                              train_source=case.train_source, **where))
    for t in timed:
        c, o = t.contender, t.outcome
        keys = {"role": c.role, "label": c.label, **where}
        per = t.median / case.count
        spread = (max(t.seconds) - min(t.seconds)) / (2 * t.median) if t.median > 0 else 0.0
        records += [record(case.experiment, c.method, "seconds_per_instance", per, **keys),
                    record(case.experiment, c.method, "seconds", t.median, **keys),
                    record(case.experiment, c.method, "seconds_spread", spread, **keys),
                    record(case.experiment, c.method, "converged_fraction",
                           float(np.mean(o.converged)), **keys)]
        if o.iterations is not None and np.any(np.asarray(o.iterations) >= 0):
            its = np.asarray(o.iterations, dtype=np.float64)
            records.append(record(case.experiment, c.method, "mean_iterations",
                                  float(its[its >= 0].mean()), **keys))
        if o.x is not None and case.reference is not None:
            converged = np.asarray(o.converged, dtype=bool)
            errors = relative_errors(o.x, case.reference)[converged]
            records.append(record(case.experiment, c.method, "max_relative_error",
                                  float(errors.max()) if errors.size else float("nan"),
                                  **keys))
        if o.learned is not None:
            records.append(record(case.experiment, c.method, "learned_fraction",
                                  float(np.mean(o.learned)), **keys))
        for name, other in (("classical", classical), ("strongest", best)):
            if other is None:
                continue
            records.append(record(case.experiment, c.method, f"ratio_to_{name}",
                                  t.median / other.median, **keys))
            if c.role in ("learned", "deployed") and case.train_seconds is not None:
                # A solve that used no learned part cannot pay its training back, whatever the
                # noise of its time says.
                unused = o.learned is not None and not np.any(o.learned)
                solves = float("inf") if unused else break_even(
                    case.train_seconds, per, other.median / case.count)
                records.append(record(case.experiment, c.method, f"break_even_solves_vs_{name}",
                                      solves, pays_back=bool(np.isfinite(solves)), **keys))
    return records


def split_bench_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """``(other records, bench records)``: the latter carry ``bench: True``."""
    return ([r for r in records if not r.get("bench")], [r for r in records if r.get("bench")])


def _find(records, case, method, metric, threads):
    for r in records:
        if (r.get("case") == case and r["method"] == method and r["metric"] == metric
                and r.get("threads") == threads):
            return r
    return None


def format_seconds_short(seconds: float | None) -> str:
    """Three significant digits and a unit: ``"12.4 us"``, ``"3.1 ms"``, ``"1.2 s"`` (``"-"``
    for ``None``).

    >>> format_seconds_short(1.24e-5), format_seconds_short(3.1e-3), format_seconds_short(1.2)
    ('12.4 us', '3.1 ms', '1.2 s')
    """
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _ratio(r) -> str:
    return "-" if r is None or r["value"] is None else f"{r['value']:.3g}"


def _break_even(r) -> str:
    if r is None:
        return "-"
    if r["value"] is None:
        return "never"
    return f"{r['value']:.3g}"


def bench_cases(records: list[dict]) -> list[tuple[str, str, str]]:
    """``(experiment, case, threads)`` of every timed case in ``records``, in order."""
    seen = []
    for r in records:
        key = (r["experiment"], r.get("case"), r.get("threads"))
        if r["metric"] == "seconds_per_instance" and key not in seen:
            seen.append(key)
    return seen


def bench_tables(records: list[dict]) -> list[Table]:
    """One table per timed case: each contender's median seconds per instance and the spread of
    the rounds, converged share,
    mean iterations, largest relative error of the converged instances, use of the learned part,
    the ratios to the classical method and to the strongest classical solver, and the break-even
    solves."""
    tables = []
    head = ["solver", "role", "per instance", "spread", "converged", "mean iterations",
            "max rel. error (converged)", "learned part used", "/ classical", "/ strongest",
            "break-even solves vs classical", "vs strongest"]
    for experiment, case, threads in bench_cases(records):
        rows, caption_record = [], None
        ours = [r for r in records if r["experiment"] == experiment and r.get("case") == case
                and r.get("threads") == threads and r["metric"] == "seconds_per_instance"]
        ours.sort(key=lambda r: ROLES.index(r["role"]))
        for r in ours:
            caption_record = r
            m = r["method"]

            def get(metric, m=m, case=case, threads=threads):
                return _find(records, case, m, metric, threads)

            conv, its = get("converged_fraction"), get("mean_iterations")
            err, used = get("max_relative_error"), get("learned_fraction")
            spread = get("seconds_spread")
            rows.append([r["label"], r["role"], format_seconds_short(r["value"]),
                         "-" if spread is None or spread["value"] is None
                         else f"±{spread['value']:.0%}",
                         "-" if conv is None or conv["value"] is None else f"{conv['value']:.0%}",
                         "-" if its is None or its["value"] is None else f"{its['value']:.1f}",
                         "-" if err is None or err["value"] is None else f"{err['value']:.1e}",
                         "-" if used is None or used["value"] is None else f"{used['value']:.0%}",
                         _ratio(get("ratio_to_classical")), _ratio(get("ratio_to_strongest")),
                         _break_even(get("break_even_solves_vs_classical")),
                         _break_even(get("break_even_solves_vs_strongest"))])
        train = _find(records, case, "training", "train_seconds", threads)
        r = caption_record
        caption = (f"{r['count']} instances to {r['tolerance']}; median of {r['repeats']} "
                   f"interleaved rounds (spread: half the range of the rounds over the median), "
                   f"{threads} thread(s); strongest classical: "
                   f"{r['strongest']}; training: "
                   + ("not recorded" if train is None else
                      f"{train['value']:.0f} s ({train['train_source']})"))
        tables.append(Table(f"{experiment}: {case}", head, rows, caption=caption))
    return tables


def bench_figure(records: list[dict]):
    """One panel per timed case: median seconds per instance of each contender (log scale),
    coloured by role; ``None`` without timed cases."""
    from matplotlib.ticker import NullFormatter

    cases = bench_cases(records)
    if not cases:
        return None
    fig, axes = panels(len(cases), columns=2, size=(6.4, 4.2),
                       title="metasolve bench: end-to-end seconds per instance")
    for ax, (experiment, case, threads) in zip(axes, cases, strict=True):
        ours = [r for r in records if r["experiment"] == experiment and r.get("case") == case
                and r.get("threads") == threads and r["metric"] == "seconds_per_instance"]
        ours.sort(key=lambda r: ROLES.index(r["role"]))
        bar_panel(ax, [r["method"] for r in ours], [r["value"] for r in ours],
                  color=[ROLE_COLORS[r["role"]] for r in ours], log=True,
                  xlabel="seconds per instance (median)", ylabel="solver",
                  title=textwrap.fill(f"{experiment}: {case} ({threads} thread(s))", 55),
                  better=LOWER,
                  label="learned: orange, classical: blue, strong: gray, deployed: green")
        ax.xaxis.set_minor_formatter(NullFormatter())  # no crowded labels on a short log axis
    return fig
