"""Learned relaxation factors and initial guesses for Newton-SOR on Robertson's equation: the GBMS
paper's Table 1 (sec. 4.1, Appendix C.2).

* Task: one backward-Euler step of Robertson's equation, ``g_n(y) = 0`` (eq. 14), from
  :class:`~metasolve.tasks.robertson.RobertsonFamily`; 100 steps per rate set.
* Solver ``Phi``: one-step Newton-SOR (eq. 45-46) until ``||g_n(y)|| <= eps = 1e-9`` (absolute),
  at most 10,000 iterations at test time.
* ``Psi_base``: the previous step's solution ``y_n`` as initial guess and the constant relaxation
  factor ``r_base`` that minimises the mean iteration count on the training tasks (brute-force
  search; the paper found 1.37). ``Psi_ini``, ``Psi_relax``, ``Psi_both``: MLPs of the task's
  features with the heads of eq. (47)-(48): a log-scale shift of ``y_n`` in ``(-1, 1)`` per
  component (:class:`~metasolve.learned.heads.BoundedHead`) and/or ``r in (1, 2)``
  (:class:`~metasolve.learned.heads.IntervalHead`, bias started at -1 as in App. C.2).
* Losses: ``L_m`` (squared residual after ``m`` iterations) for ``m in {1, 5, 25, 125, 625}`` and
  ``L~_eps`` with ``eps = 1e-9``, cap ``m = 2000`` (``Phi_{eps,m}``, sec. 3.2). The paper writes
  ``L_m`` for this example as the plain residual ``||g_n(y^(m))||``; ours is its square, the form
  of the Poisson example's ``L_m`` (sec. 2.2.1), which weights the batch's tasks by their residual
  once more. The ``L_m`` rows in docs/RESULTS.md were trained with the square.
* The initial-guess head reads eq. (47) as ``y_n * exp(tanh(W x))`` (see
  :mod:`metasolve.solvers.newton_sor`).

Means count an instance that did not reach ``eps`` (it diverged or hit the cap) as the cap; the
converged fraction is reported beside every mean.

Where we depart from Appendix C.2, and why (all stated in the records):

* Scale. The paper uses 10,000 rate sets (2,500/2,500/5,000) and trains 200 epochs of batch 16,384
  at learning rate 2e-5: about 3,000 steps over 250,000 tasks, many hours on 2 CPU cores. We
  train on fewer sets (``Settings``) for fewer, larger steps: Adam at learning rate 1e-3 with batch
  1024, cut by 1/5 when the validation loss stalls, best-validation model kept, and gradients
  clipped to norm 1: without clipping, one run's relaxation factors jumped into the divergent
  region after three epochs and never came back (the loss is flat there).
* Width. The paper's hidden layers have 1024 units (scale ``paper-width``). Evaluating that
  network costs about 2 million multiply-adds per task, more than the whole Newton-SOR solve of a
  3-unknown system, and made the learned solver slower in wall-clock than ``Psi_base`` on a CPU
  although it took three times fewer iterations (docs/RESULTS.md). The ``full`` scale uses 256
  units, 16 times cheaper to evaluate.
* The last layer starts at zero (plus the relaxation bias of -1), so training starts from
  "previous solution, ``r = 1 + sigmoid(-1) = 1.27``" rather than from random outputs.
* Features are the task's ``(c1, c2, c3, h_n, y_n)`` on log scales mapped to about [-1, 1] (see
  the family), not the raw values, which span nine decades.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..catalog import CATALOG
from ..evaluation.metrics import compare_wall_clock, iteration_stats
from ..evaluation.protocols import best_constant, iteration_records, loss_cell
from ..evaluation.records import record
from ..evaluation.render import LOWER, Table, bar_panel, histogram_panel, panels
from ..evaluation.shifts import ShiftedSet
from ..learned import BoundedHead, IntervalHead, LearnedSolver, NetworkMetaSolver
from ..solvers import NewtonSOR, run
from ..tasks import RobertsonFamily, make_splits
from ..training import FixedIterationLoss, IterationSurrogateLoss, Trainer, TrainingConfig
from .common import job_settings

NAME = "robertson-newton-sor"
TITLE = CATALOG[NAME].title
TEST_EPS = 1e-9
TEST_CAP = 10_000
TRAIN_EPS = 1e-9
TRAIN_CAP = 2000
PAPER_R_BASE = 1.37

# Table 1 of the GBMS paper: mean Newton-SOR iterations to 1e-9 on the test tasks.
# Rows: "base" or (meta-solver, loss, m or eps).
PAPER_TABLE1: dict = {
    "base": 70.51,
    ("both", "L_m", 1): 199.20,
    ("both", "L_m", 5): 105.71,
    ("both", "L_m", 25): 114.43,
    ("both", "L_m", 125): 109.24,
    ("both", "L_m", 625): 190.56,
    ("both", "L_eps", TRAIN_EPS): 9.51,
    ("ini", "L_eps", TRAIN_EPS): 55.82,
    ("relax", "L_eps", TRAIN_EPS): 14.38,
}
ALL_ROWS = tuple(row for row in PAPER_TABLE1 if row != "base")


@dataclass(frozen=True)
class Settings:
    """One scale of the experiment; task counts are rate sets of ``steps`` tasks each."""

    rows: tuple
    train_sets: int
    validation_sets: int
    test_sets: int
    training: TrainingConfig
    hidden: tuple[int, ...] = (1024, 1024)
    steps: int = 100
    seed: int = 0
    wall_clock_repeats: int = 5
    test_cap: int = TEST_CAP
    train_cap: int = TRAIN_CAP


#: The paper's width (Appendix C.2): 7 -> 1024 -> 1024. On a CPU its inference costs more than
#: the whole Newton-SOR solve of a 3-unknown system, so the default full scale uses 256.
PAPER_WIDTH = Settings(rows=ALL_ROWS, train_sets=100, validation_sets=20, test_sets=500,
                       training=TrainingConfig(epochs=20, batch_size=1024, lr=1e-3,
                                               betas=(0.9, 0.999), plateau_patience=3,
                                               plateau_factor=0.2, grad_clip=1.0))
FULL = replace(PAPER_WIDTH, hidden=(256, 256))
QUICK = replace(FULL, rows=(("both", "L_m", 25), ("both", "L_eps", TRAIN_EPS)), train_sets=50,
                validation_sets=10, test_sets=50, hidden=(256, 256),
                training=replace(FULL.training, epochs=8), wall_clock_repeats=3)
SMOKE = replace(FULL, rows=(("both", "L_m", 5), ("relax", "L_eps", TRAIN_EPS)), train_sets=2,
                validation_sets=1, test_sets=1, steps=10, hidden=(16, 16),
                training=replace(FULL.training, epochs=2, batch_size=8), wall_clock_repeats=1,
                test_cap=300, train_cap=100)
SCALES = {"full": FULL, "paper-width": PAPER_WIDTH, "quick": QUICK, "smoke": SMOKE}

META_SOLVER_LABELS = {"base": "Psi_base", "ini": "Psi_ini", "relax": "Psi_relax",
                      "both": "Psi_both"}


def row_label(row) -> str:
    if row == "base":
        return "Psi_base"
    kind, loss, value = row
    what = f"m={value}" if loss == "L_m" else f"eps={value:g}"
    return f"{META_SOLVER_LABELS[kind]}, {loss} ({what})"


def _cell_settings(row) -> dict:
    if row == "base":
        return {"meta_solver": "base", **loss_cell(None)}
    return {"meta_solver": row[0], **loss_cell(row[1], row[2])}


def mean_iterations(method: NewtonSOR, problem, cap: int = TEST_CAP) -> float:
    """Mean iterations to ``TEST_EPS`` (non-converged instances count as ``cap``)."""
    with torch.no_grad():
        solution = run(method, problem, rtol=TEST_EPS, maxiter=cap)
    return iteration_stats(solution.iterations_to(TEST_EPS), cap).mean


def search_base_relaxation(problem, cap: int = TEST_CAP, coarse: float = 0.05,
                           fine: float = 0.01) -> dict:
    """``r_base``: the constant relaxation factor in ``[1, 2)`` with the fewest mean iterations
    on ``problem`` (the training tasks), by a coarse-then-fine grid
    (:func:`~metasolve.evaluation.protocols.best_constant`)."""
    found = best_constant(lambda r: mean_iterations(NewtonSOR(r), problem, cap), 1.0, 2.0,
                          coarse, fine)
    return {"relaxation": found["value"], "mean_iterations": found["score"],
            "grid": found["grid"]}


def make_solver(kind: str, family: RobertsonFamily, settings: Settings,
                r_base: float) -> LearnedSolver:
    """``Psi_ini``, ``Psi_relax`` or ``Psi_both`` of App. C.2 with Newton-SOR."""
    heads, bias = {}, {}
    if kind in ("ini", "both"):
        heads["log_guess_shift"] = BoundedHead(3, bound=1.0)
    if kind in ("relax", "both"):
        heads["relaxation"] = IntervalHead(1.0, 2.0)
        bias["relaxation"] = -1.0
    metasolver = NetworkMetaSolver(family.feature_dim, heads, hidden=settings.hidden,
                                   activation="relu", zero_init=True, head_bias=bias)
    return LearnedSolver(NewtonSOR(relaxation=r_base), metasolver, family=family)


def make_loss(row, train_cap: int = TRAIN_CAP):
    _, loss, value = row
    if loss == "L_m":
        return FixedIterationLoss(value)
    return IterationSurrogateLoss(value, maxiter=train_cap, gain=1.0)


def _iteration_records(row, method: str, solution, cap: int,
                       extra=None) -> tuple[list[dict], list[int]]:
    iters = solution.iterations_to(TEST_EPS)
    cell = {**_cell_settings(row), "test_eps": TEST_EPS, **(extra or {})}
    records = iteration_records(NAME, method, iters, cap, cell,
                                ("mean", "median", "converged_fraction"),
                                {"mean": PAPER_TABLE1.get(row)})
    return records, torch.where(iters >= 0, iters, cap).tolist()


def run_cell(job: dict) -> dict:
    """Find ``r_base`` and evaluate ``Psi_base``, or train and evaluate one learned row."""
    settings: Settings = job_settings(job)
    row = job["row"]
    out = Path(job["out_dir"])
    family = RobertsonFamily(steps=settings.steps)
    splits = make_splits(family, settings.train_sets * settings.steps,
                         settings.validation_sets * settings.steps,
                         settings.test_sets * settings.steps, seed=settings.seed)
    test = splits.test
    # Every job finds r_base itself (deterministic, seconds): Psi_ini needs it, and every
    # learned row's wall-clock is measured against Psi_base.
    cap = settings.test_cap
    search = search_base_relaxation(splits.train.problem, cap)
    r_base = search["relaxation"]
    baseline = NewtonSOR(relaxation=r_base)
    sizes = {"train_tasks": len(splits.train), "test_tasks": len(test), "test_cap": cap}

    if row == "base":
        with torch.no_grad():
            solution = run(baseline, test.problem, rtol=TEST_EPS, maxiter=cap)
        records, counts = _iteration_records(row, "baseline", solution, cap, sizes)
        records.append(record(NAME, "baseline", "relaxation", r_base, PAPER_R_BASE,
                              **_cell_settings(row), **sizes))
        records.append(record(NAME, "baseline", "train_mean_iterations",
                              search["mean_iterations"], **_cell_settings(row), **sizes))
        return {"row": row, "records": records, "counts": counts, "label": row_label(row),
                "search": search["grid"]}

    torch.manual_seed(settings.seed)
    solver = make_solver(row[0], family, settings, r_base)
    tag = "-".join(str(part) for part in row)
    trainer = Trainer(solver, make_loss(row, settings.train_cap), settings.training,
                      checkpoint=out / "checkpoints" / f"{tag}.safetensors",
                      progress=job.get("progress", False))
    history = trainer.fit(splits.train, splits.validation)
    solver.settings.update({"experiment": NAME, "row": list(row), "scale": job.get("scale"),
                            "r_base": r_base})
    solver.save(out / "models" / f"{tag}.safetensors")
    extra = {"epochs": settings.training.epochs, "lr": settings.training.lr,
             "train_cap": settings.train_cap if row[1] == "L_eps" else None,
             "best_epoch": history.best_epoch, "r_base": r_base, **sizes}
    with torch.no_grad():
        solution = solver.solve(test, rtol=TEST_EPS, maxiter=cap, safeguard=False)
        records, counts = _iteration_records(row, "learned", solution, cap, extra)
        relaxation = solver.params(test.features).get("relaxation")
        if relaxation is not None:
            records.append(record(NAME, "learned", "median_relaxation",
                                  float(relaxation.median()), **_cell_settings(row), **extra))
        clock = compare_wall_clock(
            lambda: run(baseline, test.problem, rtol=TEST_EPS, maxiter=cap),
            lambda: solver.solve(test, rtol=TEST_EPS, maxiter=cap, safeguard=False),
            repeats=settings.wall_clock_repeats)
    cell = {**_cell_settings(row), "test_eps": TEST_EPS, **extra}
    records.append(record(NAME, "learned", "wall_time_ratio", clock.ratio, **cell))
    records.append(record(NAME, "learned", "wall_time_seconds", clock.learned_seconds, **cell))
    records.append(record(NAME, "baseline", "wall_time_seconds", clock.baseline_seconds, **cell))
    return {"row": row, "records": records, "counts": counts, "label": row_label(row)}


def cells(settings: Settings) -> list[dict]:
    # L~_eps rows first: their unrolled tails make them the slowest, so a pool stays busy.
    rows = sorted(settings.rows, key=lambda row: row[1] != "L_eps")
    return [{"row": row} for row in ["base", *rows]]


def _row_of(r: dict):
    if r["meta_solver"] == "base":
        return "base"
    value = r["m"] if r["loss"] == "L_m" else r["train_eps"]
    return (r["meta_solver"], r["loss"], value)


def _cells(records: list[dict]) -> tuple[list, dict]:
    """``rows`` in the paper's order and ``cells[row][metric] = record``."""
    cells: dict = {}
    for r in records:
        if r["experiment"] == NAME:
            cells.setdefault(_row_of(r), {})[r["metric"]] = r
    rows = [row for row in ("base", *ALL_ROWS) if row in cells]
    return rows, cells


def _value(cells, row, metric, fmt="{:.2f}") -> str:
    r = cells[row].get(metric)
    if r is None or r["value"] is None:
        return "-"
    text = fmt.format(r["value"])
    return text if r["paper"] is None else f"{text} ({fmt.format(r['paper'])})"


def _table_rows(records):
    rows, cells = _cells(records)
    out = []
    for row in rows:
        out.append([row_label(row), _value(cells, row, "mean_iterations"),
                    _value(cells, row, "converged_fraction", "{:.4f}"),
                    _value(cells, row, "median_iterations", "{:.0f}"),
                    _value(cells, row, "median_relaxation" if row != "base" else "relaxation",
                           "{:.3f}"),
                    _value(cells, row, "wall_time_ratio", "{:.3f}")])
    return out


HEADER = ["meta-solver, training", "mean iterations: ours (paper)", "converged",
          "median iterations", "r (median)", "wall-clock / base"]


def tables(records: list[dict]) -> list[Table]:
    """Table 1(a) and 1(b) in one: every row with the paper's number beside ours."""
    return [Table(f"{TITLE}\nNewton-SOR iterations to ||g|| <= {TEST_EPS:g}, test tasks",
                  HEADER, _table_rows(records))]


def figure(results: list[dict]):
    """Table 1 as bars (mean and median iterations per meta-solver, the paper's mean beside
    ours; the wall-clock ratios) and, when the run's per-task counts are at hand (not in the
    records), histograms of iterations to 1e-9, one panel per meta-solver."""
    records = [r for result in results for r in result["records"] if r["experiment"] == NAME]
    rows, cells = _cells(records)
    if not rows:
        return None
    wanted = ["base", ("relax", "L_eps", TRAIN_EPS), ("ini", "L_eps", TRAIN_EPS),
              ("both", "L_eps", TRAIN_EPS), ("both", "L_m", 25)]
    by_row = {r["row"] if r["row"] == "base" else tuple(r["row"]): r["counts"]
              for r in results if "counts" in r}
    shown = [w for w in wanted if w in by_row]
    timed = [row for row in rows if "wall_time_ratio" in cells[row]]
    fig, axes = panels(2 + bool(timed) + len(shown), size=(5.4, 4.4),
                       title=f"{TITLE}: Newton-SOR iterations to ||g|| <= {TEST_EPS:g}, "
                             "test tasks")

    def value(row, metric):
        r = cells[row].get(metric)
        return None if r is None else r["value"]

    labels = [row_label(row) for row in rows]
    base = value("base", "mean_iterations") if "base" in cells else None
    for ax, metric, name in zip(axes, ("mean_iterations", "median_iterations"),
                                ("mean", "median"), strict=False):
        bar_panel(ax, labels, [value(row, metric) for row in rows],
                  paper=[cells[row][metric]["paper"] if metric in cells[row] else None
                         for row in rows] if metric == "mean_iterations" else None,
                  log=metric == "mean_iterations",  # the paper's numbers reach 199
                  xlabel=f"{name} Newton-SOR iterations"
                         + (" (log scale)" if metric == "mean_iterations" else ""),
                  ylabel="meta-solver, training loss",
                  title=f"{name.capitalize()} iterations", better=LOWER,
                  reference=base if metric == "mean_iterations" else None,
                  reference_label="Psi_base (best constant r)", fmt="{:.3g}")
    axes = axes[2:]
    if timed:
        bar_panel(axes[0], [row_label(row) for row in timed],
                  [value(row, "wall_time_ratio") for row in timed], color="tab:green",
                  xlabel="learned / Psi_base wall-clock", ylabel="meta-solver, training loss",
                  title="Wall-clock, inference included", better=LOWER, reference=1.0,
                  reference_label="Psi_base (ratio 1)", fmt="{:.2f}")
        axes = axes[1:]
    if shown:
        top = max(max(by_row[row]) for row in shown)
        bins = np.logspace(0, max(1.0, np.log10(top + 1.0)), 40)
        for ax, row in zip(axes, shown, strict=True):
            histogram_panel(ax, [max(c, 1) for c in by_row[row]], bins=bins, log_x=True,
                            xlabel=f"Newton-SOR iterations to {TEST_EPS:g} (log scale)",
                            title=row_label(row),
                            color="tab:blue" if row == "base" else "tab:orange")
    return fig


def shifted_sets(settings: Settings, model: LearnedSolver, count: int = 200) -> list[ShiftedSet]:
    """The model's test set, then two outside its training distribution: rate constants ten to
    a hundred times above their ranges, and time steps reaching ``t = 1e5`` instead of ``1e3``
    (``metasolve reproduce robertson-newton-sor --shift ood``)."""
    family = RobertsonFamily(steps=settings.steps)
    test = make_splits(family, settings.train_sets * settings.steps,
                       settings.validation_sets * settings.steps,
                       settings.test_sets * settings.steps, seed=settings.seed).test
    sets = max(1, count // settings.steps)
    generator = torch.Generator().manual_seed(79)
    fast = family.sample_rates(sets, generator) * 10.0 ** (1 + torch.rand(
        sets, 3, generator=generator, dtype=torch.float64))
    longer = RobertsonFamily(steps=settings.steps, t_last=1e5).sample(sets * settings.steps,
                                                                      seed=80)
    options = {"rtol": TEST_EPS, "maxiter": settings.test_cap}
    return [ShiftedSet("none", test, options),
            ShiftedSet("rates x10-x100", family.tasks_from_rates(fast), options),
            ShiftedSet("steps to t = 1e5", longer, options)]
