"""Learned initial guesses for Jacobi on the 1D Poisson equation: the GBMS paper's Table 3
(sections 2.2.1 and 3.1.2, Appendix C.1).

* Task: ``-u'' = f`` with ``N = 16``, ``f`` from ``p P1 + (1 - p) P2``, ``p in {0, 0.01}``
  (:class:`~metasolve.tasks.poisson1d.Poisson1DFamily`).
* Solver ``Phi``: Jacobi, stopped on the relative error ``||u^(k) - u|| / ||u|| <= eps``.
* ``Psi_base``: the zero initial guess. ``Psi_nn``: 16 -> 15 -> 15 -> 16, SiLU, whose outputs are
  the sine-basis coefficients of ``u^(0)``.
* Losses: ``L_m`` (squared relative error after ``m`` iterations) for ``m in {0, 1, 5, 25, 125}``
  and the surrogate ``L~_eps`` for ``eps in {1e-2, 1e-4, 1e-6, 1e-8}``.

Where we depart from Appendix C.1, and why:

* ``N(0, s)`` in eqs. (43)-(44) is read as a standard deviation ``s`` (see the family's docstring;
  the ``Psi_base`` row decides it).
* Features are ``h^2 f`` (unit scale) rather than ``f`` (scale ``1/h^2``).
* The last layer starts at zero, so training starts from ``Psi_base``: with random outputs, the
  untrained guess has error in the slowest Jacobi modes and costs the iteration cap.
* The optimizer is ours. The full and quick scales train with Levenberg-Marquardt on an IRLS
  Gauss-Newton model of the same losses (:meth:`~metasolve.training.Trainer.refine_gauss_newton`,
  from the zero guess, ``Settings.gauss_newton.iterations`` iterations on the whole training
  set). To save iterations a guess needs about 1e-5 relative accuracy in the slowest Jacobi
  modes, which Adam, moving every weight by about its learning rate, does not reach in any
  budget we could run (the ``adam`` scale's learned rows match the zero guess).
* The ``adam`` scale is Appendix C.1's optimizer (Adam, betas (0.999, 0.999), batch 256,
  learning rate cut by 1/5 after 100 epochs without validation improvement) with two changes.
  It starts at learning rate 2e-3 instead of 0.01: with 0.01 our runs spent their first ~350
  epochs on a plateau that ends in the first cut to 2e-3. It trains 300 epochs instead of 2500
  (about 25 minutes on 2 cores; ``reproduce --scale adam --epochs 2500`` runs the paper's
  length, many hours here). The optimizer, epochs or iterations are in every record.
* With Gauss-Newton, the ``L~_eps`` rows of one ``p`` are trained in order of decreasing
  ``eps``, each starting from the previous row's weights (continuation in the tolerance; the
  first from the zero guess), for ``Settings.surrogate_iterations`` iterations each. From the
  zero guess the surrogate's steps slow down long before its minimum: its IRLS weights sit on
  the few iterations where ``L_k`` crosses ``eps``, so each step sees only the slowest modes
  of the moment, and at ``eps = 1e-6`` 40 (80) steps ended at 52.20 (46.69) mean test
  iterations at ``p = 0``. Started from 40 steps of ``eps = 1e-4``, whose crossing comes early
  and sees every mode, the same loss reaches 39.62 in 80 steps and 31.10 in 160
  (``benchmarks/poisson_continuation.py``; ``Settings.continuation = False`` trains every row
  from the zero guess).
* ``L~_eps`` is trained with the cap ``m = TRAIN_CAP = 300`` iterations (``Phi_{eps,m}``, sec.
  3.2; the paper does not state its ``m``): about twice the zero guess's mean at ``eps = 1e-6``
  and above the zero guess's count of every ``P2`` task at ``1e-8`` (at most 252 in 20,000
  draws). The ``P1`` tasks of ``p = 0.01`` need 368 or more at ``eps <= 1e-4`` (median 769 at
  ``1e-6``), and no guess we trained does much better on them (the six in the test set: 744.7
  mean at ``1e-6`` from the zero guess, 732.5 from the full run's ``eps = 1e-6`` model, 714.5
  from its ``L_m``, ``m = 25`` one), so they run to the cap, where their terms are saturated
  and carry almost no gradient; with ``m = 1000`` they tripled the training time and changed
  nothing (``p = 0.01``, ``eps = 1e-6`` from the zero guess, 40 steps: 62.10 mean test
  iterations with ``m = 1000``, 63.08 with ``m = 300``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..catalog import CATALOG
from ..evaluation.metrics import compare_wall_clock
from ..evaluation.protocols import iteration_records, loss_cell
from ..evaluation.records import record
from ..evaluation.render import LOWER, Table, bar_panel, histogram_panel, panels
from ..evaluation.shifts import ShiftedSet
from ..learned import BasisHead, LearnedSolver, NetworkMetaSolver
from ..problems import LinearSystem
from ..solvers import Jacobi, run
from ..tasks import Poisson1DFamily, TaskBatch, make_splits, sine_basis
from ..training import (
    FixedIterationLoss,
    GaussNewtonConfig,
    IterationSurrogateLoss,
    Trainer,
    TrainingConfig,
)
from ..validation import check_choice, check_count
from .common import job_settings

NAME = "poisson-jacobi"
TITLE = CATALOG[NAME].title
TEST_EPS = (1e-2, 1e-4, 1e-6, 1e-8)
TEST_CAP = 20000
TRAIN_CAP = 300

# Table 3 of the GBMS paper: mean iterations to test tolerance 1e-2, 1e-4, 1e-6, 1e-8.
# Keys: (p, row) where row is "base", ("L_m", m) or ("L_eps", eps).
PAPER_TABLE3: dict[tuple, tuple[float, float, float, float]] = {
    (0.0, "base"): (28.17, 92.54, 158.41, 224.28),
    (0.0, ("L_m", 0)): (0.00, 17.52, 168.80, 436.95),
    (0.0, ("L_m", 1)): (0.00, 20.07, 148.26, 403.22),
    (0.0, ("L_m", 5)): (1.00, 13.82, 135.43, 397.97),
    (0.0, ("L_m", 25)): (6.26, 16.31, 37.71, 172.02),
    (0.0, ("L_m", 125)): (23.42, 83.28, 148.73, 214.59),
    (0.0, ("L_eps", 1e-2)): (0.01, 40.31, 223.15, 491.30),
    (0.0, ("L_eps", 1e-4)): (3.93, 9.76, 48.61, 178.15),
    (0.0, ("L_eps", 1e-6)): (6.20, 15.79, 32.00, 83.43),
    (0.0, ("L_eps", 1e-8)): (11.12, 32.05, 57.62, 86.70),
    (0.01, "base"): (30.15, 96.52, 164.41, 232.30),
    (0.01, ("L_m", 0)): (2.11, 183.28, 451.24, 719.40),
    (0.01, ("L_m", 1)): (1.90, 178.61, 446.51, 714.67),
    (0.01, ("L_m", 5)): (1.18, 34.47, 286.43, 554.55),
    (0.01, ("L_m", 25)): (7.11, 20.22, 121.24, 379.51),
    (0.01, ("L_m", 125)): (20.96, 80.44, 151.39, 353.35),
    (0.01, ("L_eps", 1e-2)): (0.25, 185.93, 453.84, 721.99),
    (0.01, ("L_eps", 1e-4)): (5.34, 13.69, 176.77, 444.71),
    (0.01, ("L_eps", 1e-6)): (7.94, 19.79, 36.11, 166.30),
    (0.01, ("L_eps", 1e-8)): (13.39, 37.44, 66.16, 97.97),
}

ALL_ROWS = (("L_m", 0), ("L_m", 1), ("L_m", 5), ("L_m", 25), ("L_m", 125),
            ("L_eps", 1e-2), ("L_eps", 1e-4), ("L_eps", 1e-6), ("L_eps", 1e-8))


@dataclass(frozen=True)
class Settings:
    """One scale of the experiment (full, quick, smoke)."""

    ps: tuple[float, ...]
    rows: tuple[tuple, ...]
    n_train: int
    n_validation: int
    n_test: int
    training: TrainingConfig
    optimizer: str = "gauss-newton"  # or "adam": Appendix C.1's optimizer and schedule
    gauss_newton: GaussNewtonConfig = field(
        default_factory=lambda: GaussNewtonConfig(iterations=40))
    surrogate_iterations: int = 160  # Gauss-Newton iterations of each L~_eps row
    continuation: bool = True  # L~_eps rows from the previous (larger eps) row's weights
    seed: int = 0
    wall_clock_repeats: int = 5
    large_sample: int = 100_000  # tasks for the large-sample Psi_base estimate (0: skip)

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, ("adam", "gauss-newton"))
        check_count("surrogate_iterations", self.surrogate_iterations, minimum=1)


FULL = Settings(ps=(0.0, 0.01), rows=ALL_ROWS, n_train=1000, n_validation=1000, n_test=1000,
                training=TrainingConfig(epochs=300, batch_size=256, lr=2e-3,
                                        betas=(0.999, 0.999), plateau_patience=100))
# Quick: p = 0 only, so that the L~_eps training (the slow one) runs on one worker while the
# baseline and the L_m training share the other, in under 3 minutes on 2 cores.
QUICK = replace(FULL, ps=(0.0,), rows=(("L_m", 25), ("L_eps", 1e-4), ("L_eps", 1e-6)),
                gauss_newton=GaussNewtonConfig(iterations=20), surrogate_iterations=30,
                wall_clock_repeats=3, large_sample=20_000)
SMOKE = replace(FULL, ps=(0.01,), rows=(("L_m", 5), ("L_eps", 1e-2), ("L_eps", 1e-4)),
                n_train=64, n_validation=32, n_test=32,
                training=replace(FULL.training, epochs=2),
                gauss_newton=GaussNewtonConfig(iterations=2), surrogate_iterations=2,
                wall_clock_repeats=1, large_sample=0)
ADAM = replace(FULL, optimizer="adam")
SCALES = {"full": FULL, "quick": QUICK, "smoke": SMOKE, "adam": ADAM}


def row_label(row) -> str:
    if row == "base":
        return "Psi_base"
    if row == "base-large":
        return "Psi_base, large sample (± s.e.)"
    kind, value = row
    return f"Psi_nn, m={value}" if kind == "L_m" else f"Psi_nn, eps={value:g}"


def make_loss(row):
    kind, value = row
    if kind == "L_m":
        return FixedIterationLoss(value)
    return IterationSurrogateLoss(value, maxiter=TRAIN_CAP, gain=1.0)


def make_solver(family: Poisson1DFamily) -> LearnedSolver:
    """``Psi_nn`` of Appendix C.1 with Jacobi, stopping on the relative error."""
    metasolver = NetworkMetaSolver(family.n, {"x0": BasisHead(sine_basis(family.n))},
                                   hidden=(15, 15), activation="silu", zero_init=True)
    return LearnedSolver(Jacobi(), metasolver, family=family, monitor="error")


def _cell_settings(p, row) -> dict:
    return {"p": p, **(loss_cell(None) if row == "base" else loss_cell(*row))}


def _iteration_records(p, row, method, solution, extra=None) -> tuple[list[dict], dict]:
    records, counts = [], {}
    paper = PAPER_TABLE3.get((p, row))
    for j, eps in enumerate(TEST_EPS):
        iters = solution.iterations_to(eps)
        cell = {**_cell_settings(p, row), "test_eps": eps, **(extra or {})}
        records += iteration_records(NAME, method, iters, TEST_CAP, cell,
                                     paper={"mean": None if paper is None else paper[j]})
        counts[eps] = iters.tolist()
    return records, counts


def _large_sample_baseline(family: Poisson1DFamily, settings: Settings) -> list[dict]:
    """``Psi_base`` on ``settings.large_sample`` fresh tasks, with each mean's standard error.

    With ``p = 0.01`` about ten of the 1000 test tasks come from ``P1`` and each needs hundreds
    of iterations more than the rest, so the 1000-task mean moves by a few iterations from one
    draw to the next; this estimate tells a misread distribution from sampling noise.
    """
    counts = {eps: [] for eps in TEST_EPS}
    for chunk in range(settings.large_sample // 10_000):
        tasks = family.sample(10_000, seed=10_000 + 100 * settings.seed + chunk)
        solution = run(Jacobi(), tasks.problem, rtol=min(TEST_EPS), maxiter=TEST_CAP,
                       monitor="error")
        for eps in TEST_EPS:
            counts[eps].append(solution.iterations_to(eps))
    records = []
    if not counts[TEST_EPS[0]]:
        return records
    for j, eps in enumerate(TEST_EPS):
        iters = torch.cat(counts[eps]).double()
        cell = {**_cell_settings(family.p, "base"), "test_eps": eps, "n_tasks": len(iters)}
        paper = PAPER_TABLE3[(family.p, "base")][j]
        records.append(record(NAME, "baseline", "mean_iterations_large_sample",
                              float(iters.mean()), paper, **cell))
        records.append(record(NAME, "baseline", "standard_error_large_sample",
                              float(iters.std() / len(iters) ** 0.5), **cell))
    return records


def run_cell(job: dict) -> dict:
    """Train (or, for the baseline row, just evaluate) the cells ``job["rows"]`` of Table 3 at
    ``job["p"]``, in order, each from the previous one's weights (one row, or a continuation
    chain of ``L~_eps`` rows); a worker job."""
    settings: Settings = job_settings(job)
    p, rows = job["p"], job["rows"]
    out = Path(job["out_dir"])
    family = Poisson1DFamily(n=16, p=p)
    splits = make_splits(family, settings.n_train, settings.n_validation, settings.n_test,
                         seed=settings.seed)
    test = splits.test

    if rows == ["base"]:
        with torch.no_grad():
            solution = run(Jacobi(), test.problem, rtol=min(TEST_EPS), maxiter=TEST_CAP,
                           monitor="error")
            records, counts = _iteration_records(p, "base", "baseline", solution)
            records += _large_sample_baseline(family, settings)
        return {"records": records, "cells": [{"p": p, "row": "base", "counts": counts}],
                "label": f"p={p:g} {row_label('base')}"}

    torch.manual_seed(settings.seed)
    solver = make_solver(family)
    records, cells, previous = [], [], None
    for row in rows:
        train_extra = _train_row(solver, row, splits, settings, job, warm_start=previous)
        tag = _tag(p, row)
        solver.settings.update({"experiment": NAME, "row": list(row), "p": p,
                                "scale": job.get("scale")})
        solver.save(out / "models" / f"{tag}.safetensors")
        row_records, counts = _evaluate_row(solver, p, row, test, settings, train_extra)
        records += row_records
        cells.append({"p": p, "row": row, "counts": counts})
        previous = row
    return {"records": records, "cells": cells,
            "label": f"p={p:g} " + ", ".join(row_label(row) for row in rows)}


def _tag(p, row) -> str:
    return f"p{p:g}-{row[0]}-{row[1]:g}"


def _train_row(solver: LearnedSolver, row, splits, settings: Settings, job: dict,
               warm_start=None) -> dict:
    """Train ``solver`` (from its current weights: ``warm_start``'s row, or the zero guess) on
    ``row``'s loss; the record fields that say how."""
    out = Path(job["out_dir"])
    tag = _tag(job["p"], row)
    trainer = Trainer(solver, make_loss(row), settings.training,
                      checkpoint=out / "checkpoints" / f"{tag}.safetensors",
                      progress=job.get("progress", False), same_start=warm_start is not None)
    if settings.optimizer == "adam":
        history = trainer.fit(splits.train, splits.validation)
        return {"optimizer": "adam", "epochs": settings.training.epochs,
                "lr": settings.training.lr, "best_epoch": history.best_epoch}
    iterations = (settings.surrogate_iterations if row[0] == "L_eps"
                  else settings.gauss_newton.iterations)
    if job.get("epochs") is not None:  # reproduce --epochs: Gauss-Newton iterations here
        iterations = job["epochs"]
    config = replace(settings.gauss_newton, iterations=iterations)
    history = trainer.refine_gauss_newton(
        splits.train, splits.validation, config,
        checkpoint=out / "checkpoints" / f"{tag}-gauss-newton.safetensors")
    return {"optimizer": "gauss-newton", "iterations": iterations,
            "best_iteration": history.best_iteration,
            "warm_start_eps": None if warm_start is None else warm_start[1]}


def _evaluate_row(solver: LearnedSolver, p, row, test, settings: Settings,
                  train_extra: dict) -> tuple[list[dict], dict]:
    """Iterations to every test tolerance and the wall-clock ratio at 1e-6 against the zero
    guess, in one run."""
    with torch.no_grad():
        solution = solver.solve(test, rtol=min(TEST_EPS), maxiter=TEST_CAP, safeguard=False)
        records, counts = _iteration_records(p, row, "learned", solution, train_extra)
        clock = compare_wall_clock(
            lambda: run(Jacobi(), test.problem, rtol=TEST_EPS[2], maxiter=TEST_CAP,
                        monitor="error"),
            lambda: solver.solve(test, rtol=TEST_EPS[2], maxiter=TEST_CAP, safeguard=False),
            repeats=settings.wall_clock_repeats)
    cell = {**_cell_settings(p, row), "test_eps": TEST_EPS[2], **train_extra}
    records.append(record(NAME, "learned", "wall_time_ratio", clock.ratio, **cell))
    records.append(record(NAME, "learned", "wall_time_seconds", clock.learned_seconds, **cell))
    records.append(record(NAME, "baseline", "wall_time_seconds", clock.baseline_seconds, **cell))
    return records, counts


def _cost(rows) -> float:
    """Rough training cost of a job's rows, in unrolled iterations per step."""
    return sum(0.0 if row == "base" else float(row[1]) if row[0] == "L_m"
               else 40.0 * -math.log10(row[1]) for row in rows)


def cells(settings: Settings) -> list[dict]:
    """One job per cell, except that with Gauss-Newton and ``continuation`` the ``L~_eps`` rows
    of each ``p`` are one job, trained in order of decreasing ``eps``."""
    chained = settings.optimizer == "gauss-newton" and settings.continuation
    surrogate = sorted((r for r in settings.rows if r[0] == "L_eps"), key=lambda r: -r[1])
    groups = []
    for p in settings.ps:
        groups.append((p, ["base"]))
        for row in settings.rows:
            if not (chained and row[0] == "L_eps"):
                groups.append((p, [row]))
        if chained and surrogate:
            groups.append((p, surrogate))
    # The slowest jobs first, so a pool of workers stays busy to the end.
    groups.sort(key=lambda group: -_cost(group[1]))
    return [{"p": p, "rows": rows} for p, rows in groups]


def _grid(records: list[dict]):
    """The mean-iteration cells of Table 3 found in ``records``: ``(ps, rows, cell)``, where
    ``cell(p, row, eps)`` is the text ``ours (paper)``."""
    means, errors = {}, {}
    for r in records:
        if r["experiment"] != NAME:
            continue
        if r["metric"] == "mean_iterations":
            row = "base" if r["loss"] is None else (
                (r["loss"], r["m"]) if r["loss"] == "L_m" else (r["loss"], r["train_eps"]))
            means[(r["p"], row, r["test_eps"])] = (r["value"], r["paper"])
        elif r["metric"] == "mean_iterations_large_sample":
            means[(r["p"], "base-large", r["test_eps"])] = (r["value"], r["paper"])
        elif r["metric"] == "standard_error_large_sample":
            errors[(r["p"], "base-large", r["test_eps"])] = r["value"]
    ps = sorted({k[0] for k in means})
    rows = [r for r in ("base", "base-large", *ALL_ROWS) if any(k[1] == r for k in means)]

    def cell(p, row, eps):
        ours, paper = means.get((p, row, eps), (None, None))
        if ours is None:
            return "-"
        error = errors.get((p, row, eps))
        return (f"{ours:.2f}" + ("" if error is None else f" ± {error:.2f}")
                + ("" if paper is None else f" ({paper:.2f})"))

    return ps, rows, cell


def tables(records: list[dict]) -> list[Table]:
    """Table 3 (ours beside the paper's, a row per training) and the wall-clock ratios."""
    ps, rows, cell = _grid(records)
    head = ["meta-solver / training"] + [f"p={p:g}, {eps:g}" for p in ps for eps in TEST_EPS]
    out = [Table(f"{TITLE}\nmean iterations to test tolerance: ours (paper)", head,
                 [[row_label(row)] + [cell(p, row, eps) for p in ps for eps in TEST_EPS]
                  for row in rows])]
    ratios = [r for r in records if r["experiment"] == NAME and r["metric"] == "wall_time_ratio"]
    if ratios:
        body = []
        for r in sorted(ratios, key=lambda r: (r["p"], str(r["loss"]), r["m"] or 0,
                                               -(r["train_eps"] or 0))):
            row = (r["loss"], r["m"]) if r["loss"] == "L_m" else (r["loss"], r["train_eps"])
            body.append([f"{r['p']:g}", row_label(row), f"{r['value']:.3f}"])
        out.append(Table("Wall-clock", ["p", "meta-solver / training", "learned / baseline"],
                         body, 2, caption="Wall-clock of the learned solve (inference included) "
                         "over the zero-guess solve, test set, to 1e-6, median of repeated "
                         "timings in one run:"))
    return out


def figure(results: list[dict]):
    """Table 3 at tolerance 1e-6 (mean iterations per training, the paper's beside ours, one
    panel per ``p``), the wall-clock ratios, and, when the run's per-task counts are at hand
    (not in the records), the paper's Figure 2: histograms of iterations to 1e-6."""
    records = [r for result in results for r in result["records"] if r["experiment"] == NAME]
    if not records:
        return None
    ps, rows, _ = _grid(records)
    rows = [row for row in rows if row != "base-large"]
    eps = TEST_EPS[2]
    means = {(r["p"], _row(r)): r for r in records
             if r["metric"] == "mean_iterations" and r["test_eps"] == eps}
    ratios = sorted((r for r in records if r["metric"] == "wall_time_ratio"),
                    key=lambda r: (r["p"], str(r["loss"]), r["m"] or 0, -(r["train_eps"] or 0)))
    histograms = [(c["p"], c["row"], c["counts"][eps]) for result in results
                  for c in result.get("cells", [])
                  if c["row"] in ("base", ("L_m", 25), ("L_eps", 1e-6))]
    fig, axes = panels(len(ps) + bool(ratios) + len(histograms), size=(5.2, 4.6),
                       title=f"{TITLE}: mean Jacobi iterations to {eps:g} on the test tasks")
    for ax, p in zip(axes, ps, strict=False):
        found = [row for row in rows if (p, row) in means]
        base = means.get((p, "base"))
        bar_panel(ax, [row_label(row) for row in found],
                  [means[(p, row)]["value"] for row in found],
                  paper=[means[(p, row)]["paper"] for row in found],
                  xlabel=f"mean Jacobi iterations to relative error {eps:g}",
                  ylabel="meta-solver / training loss", title=f"p = {p:g}", better=LOWER,
                  reference=None if base is None else base["value"],
                  reference_label="zero guess (Psi_base)", fmt="{:.1f}")
    axes = axes[len(ps):]
    if ratios:
        bar_panel(axes[0], [f"p={r['p']:g}, {row_label(_row(r))}" for r in ratios],
                  [r["value"] for r in ratios], color="tab:green",
                  xlabel="learned / zero-guess wall-clock",
                  ylabel="p, meta-solver / training loss",
                  title=f"Wall-clock to {eps:g}, inference included", better=LOWER,
                  reference=1.0, reference_label="zero guess (ratio 1)", fmt="{:.2f}")
        axes = axes[1:]
    for ax, (p, row, counts) in zip(axes, histograms, strict=True):
        histogram_panel(ax, [c if c >= 0 else TEST_CAP for c in counts],
                        xlabel=f"Jacobi iterations to {eps:g}", title=f"p = {p:g}, "
                        f"{row_label(row)}", color="tab:blue" if row == "base" else "tab:orange")
    return fig


def _row(r: dict):
    """The Table 3 row of a record: ``"base"``, ``("L_m", m)`` or ``("L_eps", eps)``."""
    if r["loss"] is None:
        return "base"
    return (r["loss"], r["m"]) if r["loss"] == "L_m" else (r["loss"], r["train_eps"])


def shifted_sets(settings: Settings, model: LearnedSolver, count: int = 200) -> list[ShiftedSet]:
    """The model's test set, then two outside its training distribution: sources drawn from
    ``P1`` only (the hard modes; the ``p = 0`` models saw ``P2`` only) and ``P2`` sources ten
    times larger, solved to 1e-6 (``metasolve reproduce poisson-jacobi --shift ood``)."""
    family = Poisson1DFamily(n=model.family.n, p=model.family.p)
    test = make_splits(family, settings.n_train, settings.n_validation, settings.n_test,
                       seed=settings.seed).test
    hard = Poisson1DFamily(n=model.family.n, p=1.0).sample(count, seed=77)
    large = family.sample(count, seed=78)
    large = TaskBatch(LinearSystem(large.problem.matrix, 10 * large.problem.rhs,
                                   10 * large.problem.solution), 10 * large.features)
    options = {"rtol": TEST_EPS[2], "maxiter": TEST_CAP}
    return [ShiftedSet("none", test, options), ShiftedSet("P1 sources", hard, options),
            ShiftedSet("10x sources", large, options)]
