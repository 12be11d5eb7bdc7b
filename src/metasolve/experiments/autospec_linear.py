"""AutoSpec task (a): learned polynomial solvers ``x = q(A) b`` trained on synthetic diagonal
spectra and applied unchanged to large sparse SPD matrices (AutoSpec summary; the issue's
task (a)); also a learned polynomial preconditioner inside CG.

* Training: :class:`~metasolve.tasks.spectra.SpectrumFamily` (diagonal operators of
  ``N = 4096`` eigenvalues, condition numbers ``10 .. 1e6``, five spectrum shapes, random
  scale), an ``s = 10``-step Lanczos probe per operator, the engine of
  :mod:`metasolve.learned.autospec` in both paradigms (three-term recurrence; Chebyshev
  basis), degree ``K = 150``, Adam (gradients clipped at norm 1: the unrolled 150-step
  recurrence has occasional gradient spikes). Loss: ``log(||r_K|| / ||r_0||)`` relative to
  Chebyshev iteration on the probe's interval (the untrained engine) through a softplus of
  sharpness 4 (:class:`~metasolve.training.RelativeLogResidualLoss`).
* Why these two choices: they are what carries over to large sparse matrices, and neither does
  alone (docs/RESULTS.md, side runs of ``benchmarks/autospec_variants.py``). With ``N = 256``
  a degree-150 polynomial may grow in the gaps between the eigenvalues at no cost, which a large
  matrix, whose spectrum has no gaps, punishes; and the plain mean log residual buys large gains
  on a minority of spectra with small losses on most, and the small losses are what transfer.
* Why ``K = 150``: at ``K = 50`` Chebyshev on the probe's interval is only 1.25 to 1.5 times
  better than Richardson on these operators (for a random right-hand side the residual is
  dominated by the bulk of the spectrum, which both reduce), so no fixed polynomial could be 10
  times better; at ``K = 150`` its median residual is 1.6 (elasticity) to 374 (3D Poisson) times
  smaller than Richardson's (the full run's records).
* Test: held-out synthetic spectra and the transfer operators of
  :mod:`metasolve.experiments.autospec_common` (2D Poisson with 102,400 unknowns, 3D Poisson,
  anisotropic diffusion, a scikit-fem elasticity matrix, random sparse SPD), each with 8 random
  right-hand sides. Metric: relative residual ``||b - A x|| / ||b||``, median over the instances.
* Equal matrix-vector products: every method that uses the probe gets ``K`` products after the
  probe's ``s``: Richardson with the probe's optimal step ``2 / (a + b)`` and Chebyshev
  iteration on the probe's interval ``[a, b]`` (:meth:`metasolve.probes.Probe.interval`), and
  the learned methods. Methods that need no probe: Chebyshev on the exact extreme eigenvalues
  (an oracle, the minimax-optimal polynomial on the spectrum's interval) shown at degree ``K``
  (the same polynomial degree; this is the bar's "within 2 times") and at ``K + s`` (the same
  total products), and conjugate gradients with ``K + s`` iterations (adaptive, for reference).
* The floor: MINRES after ``K + s`` products (:func:`metasolve.probes.minimal_residual`, the
  smallest residual of any polynomial of that degree on each right-hand side, adaptive and
  exact to round-off). No method of ``K + s`` products, learned or classical, goes below it;
  where it is above a tenth of Richardson's, the bar "10 times below Richardson" cannot be met
  at this budget by any method.
* Preconditioner: a basis-paradigm engine of degree 8 trained inside CG
  (:class:`PreconditionerTraining`): 40 unrolled CG iterations with ``M^{-1} = q(A)``, the loss
  relative to CG with the Chebyshev polynomial on the probe's interval (the classical
  preconditioner). It places only the lower end of the interval: trained as a solver, or with
  the polynomial's shape free, it needed more CG iterations than Chebyshev's on 2D Poisson,
  anisotropic diffusion and random SPD (docs/RESULTS.md). Its condition limit is then
  calibrated on operators held out from the transfer set
  (:data:`~metasolve.evaluation.spectral.HELD_OUT`,
  :func:`~metasolve.learned.autospec.calibrate_condition_limit`). Test: on the largest transfer
  matrix, against plain CG to ``rtol = 1e-8`` (iterations, products with the probe, wall-clock:
  median of repeats, one run); on every transfer matrix, iterations against CG with the
  Chebyshev polynomial, per instance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..catalog import CATALOG
from ..evaluation.metrics import TIE_RTOL, compare_instances, compare_wall_clock, comparison_records
from ..evaluation.records import record
from ..evaluation.render import (
    LOWER,
    Table,
    beside,
    format_comparison,
    panels,
    set_title,
    setting_values,
)
from ..evaluation.spectral import (
    HELD_OUT,
    HELD_OUT_SMOKE,
    TRANSFER,
    TRANSFER_SMOKE,
    held_out_sets,
    linear_baselines,
    probe_baseline_params,
    relative_residual,
)
from ..evaluation.spectral import evaluation_sets as common_evaluation_sets
from ..learned import calibrate_condition_limit
from ..polynomials import chebyshev_recurrence_coefficients
from ..probes import minimal_residual
from ..solvers import ConjugateGradient, PolynomialRecurrence, residual_polynomial, run
from ..tasks import SpectrumFamily, TaskBatch
from ..training import TrainingConfig
from .autospec_common import spectral_shifted_sets, train_engine, train_inside_cg
from .common import job_settings

NAME = "autospec-linear"
TITLE = CATALOG[NAME].title
BASELINES = ("richardson", "chebyshev-estimated", "chebyshev-exact-K", "chebyshev-exact-budget",
             "cg-budget", "minres-budget")
LEARNED = ("learned-recurrence", "learned-basis")
LABELS = {"richardson": "Richardson (probe step)",
          "chebyshev-estimated": "Chebyshev (probe interval)",
          "chebyshev-exact-K": "Chebyshev (exact, degree K)",
          "chebyshev-exact-budget": "Chebyshev (exact, K + s)",
          "cg-budget": "CG (K + s, adaptive)",
          "minres-budget": "MINRES (K + s): the floor",
          "learned-recurrence": "learned recurrence",
          "learned-basis": "learned basis"}


@dataclass(frozen=True)
class PreconditionerTraining:
    """How the degree-8 preconditioner engine trains: inside CG (``cg_iterations`` unrolled CG
    iterations, the loss relative to CG with the Chebyshev polynomial, of sharpness
    ``sharpness``) on spectra of ``size`` eigenvalues, placing only the lower end of the
    interval (within a factor ``lower_range`` of the probe's) and keeping Chebyshev's polynomial
    on it; then its condition limit is calibrated on the ``held_out`` operators
    (``calibration_rhs`` right-hand sides each, ``calibration_maxiter`` CG iterations)."""

    size: int = 4096
    n_train: int = 1024
    n_validation: int = 256
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        epochs=8, batch_size=64, lr=3e-4, plateau_patience=5, grad_clip=1.0,
        betas=(0.999, 0.999)))
    cg_iterations: int = 40
    sharpness: float = 4.0
    lower_range: float = 3.0
    held_out: tuple = HELD_OUT
    calibration_rhs: int = 8
    calibration_maxiter: int = 5000


@dataclass(frozen=True)
class Settings:
    size: int = 4096
    probe_steps: int = 10
    degree: int = 150
    preconditioner_degree: int = 8
    preconditioner: PreconditionerTraining = field(default_factory=PreconditionerTraining)
    hidden: tuple[int, ...] = (64, 64)
    n_train: int = 1024
    n_validation: int = 256
    n_test: int = 512
    #: ``beta`` of the solvers' loss relative to Chebyshev on the probe's interval (None: the
    #: plain log residual). The preconditioner keeps the plain log residual.
    sharpness: float | None = 4.0
    # Batches of 64: the unrolled degree-150 solve on 4,096 eigenvalues keeps up to about 80 MB of
    # autograd state per spectrum (basis paradigm), and two engines train side by side.
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        epochs=12, batch_size=64, lr=1e-3, plateau_patience=5, grad_clip=1.0,
        betas=(0.999, 0.999)))
    transfer: tuple = TRANSFER
    rhs_per_operator: int = 8
    cg_rtol: float = 1e-8
    wall_clock_repeats: int = 3
    #: Compute the MINRES floor (5 to 7 minutes on one core at the full scale's sizes: 160
    #: fully reorthogonalized Lanczos steps per right-hand side); the quick scale leaves it out.
    floor: bool = True
    seed: int = 0


FULL = Settings()
QUICK = replace(FULL, n_train=128, n_validation=64, n_test=128,
                training=replace(FULL.training, epochs=3), floor=False,
                preconditioner=replace(FULL.preconditioner, n_train=256, n_validation=64,
                                       training=replace(FULL.preconditioner.training,
                                                        batch_size=32)),
                wall_clock_repeats=1)
_SMOKE_TRAINING = replace(FULL.training, epochs=2, batch_size=16)
SMOKE = replace(FULL, size=48, probe_steps=6, degree=12, preconditioner_degree=4,
                preconditioner=PreconditionerTraining(48, 32, 16, _SMOKE_TRAINING,
                                                      cg_iterations=10, held_out=HELD_OUT_SMOKE,
                                                      calibration_rhs=2,
                                                      calibration_maxiter=500),
                hidden=(16,),
                n_train=32, n_validation=16, n_test=16, transfer=TRANSFER_SMOKE,
                rhs_per_operator=2, training=_SMOKE_TRAINING, wall_clock_repeats=1)
SCALES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}
CELLS = ("baselines", "recurrence", "basis", "preconditioner")


def _family(settings: Settings, size: int | None = None) -> SpectrumFamily:
    return SpectrumFamily(size=size or settings.size, probe_steps=settings.probe_steps)


def evaluation_sets(settings: Settings) -> list[tuple[str, TaskBatch, torch.Tensor]]:
    return common_evaluation_sets(_family(settings), settings.transfer, settings.n_test,
                                  settings.rhs_per_operator, settings.seed)


def solve_baselines(tasks: TaskBatch, extremes: torch.Tensor, settings: Settings
                    ) -> dict[str, torch.Tensor]:
    return linear_baselines(tasks, extremes, settings.degree, settings.probe_steps)


def _medians(method: str, residuals: torch.Tensor, operator: str, extra: dict) -> dict:
    return record(NAME, method, "median_relative_residual", float(residuals.median()),
                  operator=operator, **extra)


def _curve_operator(sets):
    """The operator whose residual polynomials are plotted: the largest transfer matrix."""
    name, tasks, extremes = max(sets[1:], key=lambda item: item[1].problem.size)
    return name, tasks.index(slice(0, 1)), extremes[:1]


def _curve_points(extremes: torch.Tensor) -> torch.Tensor:
    low, high = float(extremes[0, 0]), float(extremes[0, 1])
    return torch.tensor(np.geomspace(low / 4, high * 1.05, 600), dtype=torch.float64)


def _run_baselines(settings: Settings, sets, extra) -> dict:
    records, curves = [], {}
    budget = settings.degree + settings.probe_steps
    for name, tasks, extremes in sets:
        for method, residuals in solve_baselines(tasks, extremes, settings).items():
            records.append(_medians(method, residuals, name, extra))
        # The smallest residual any method of K + s products can reach on each right-hand side
        # (computed here only: the learned cells do not need it for their ratios).
        if settings.floor:
            floor = minimal_residual(tasks.problem.matvec, tasks.problem.rhs, budget)
            records.append(_medians("minres-budget", floor, name, extra))
    name, tasks, extremes = _curve_operator(sets)
    points = _curve_points(extremes)
    k = settings.degree
    params = probe_baseline_params(tasks.features, settings.probe_steps, k)["chebyshev-estimated"]
    cheb = chebyshev_recurrence_coefficients(params["lower"], params["upper"], k)
    curves["chebyshev-estimated"] = residual_polynomial(PolynomialRecurrence(), cheb, points, k)
    exact = chebyshev_recurrence_coefficients(extremes[:, 0], extremes[:, 1], k)
    curves["chebyshev-exact-K"] = residual_polynomial(PolynomialRecurrence(), exact, points, k)
    return {"records": records, "curves": {key: v.tolist() for key, v in curves.items()},
            "points": points.tolist(), "curve_operator": name}


def _run_learned(settings: Settings, paradigm: str, sets, solver, extra) -> dict:
    k, s = settings.degree, settings.probe_steps
    method = f"learned-{paradigm}"
    records = []
    with torch.no_grad():
        for name, tasks, extremes in sets:
            solution = solver.solve(tasks, fixed_iterations=k, rtol=0.0, divergence_factor=1e300,
                                    safeguard=False)
            learned = relative_residual(tasks.problem, solution.x)
            base = solve_baselines(tasks, extremes, settings)
            cell = {**extra, "operator": name}
            records += [
                _medians(method, learned, name, extra),
                *comparison_records(NAME, method, "chebyshev_estimated",
                                    compare_instances(learned, base["chebyshev-estimated"]),
                                    **cell),
                record(NAME, method, "median_ratio_to_richardson",
                       float(learned.median() / base["richardson"].median()), **cell),
                record(NAME, method, "median_ratio_to_chebyshev_estimated",
                       float(learned.median() / base["chebyshev-estimated"].median()), **cell),
                record(NAME, method, "median_ratio_to_chebyshev_exact_K",
                       float(learned.median() / base["chebyshev-exact-K"].median()), **cell),
            ]
        name, tasks, extremes = _curve_operator(sets)
        points = _curve_points(extremes)
        curve = residual_polynomial(solver.method, solver.params(tasks.features), points, k)
    return {"records": records, "curves": {method: curve.tolist()}, "points": points.tolist(),
            "curve_operator": name, "s": s}


def _run_preconditioner(settings: Settings, sets, solver, extra) -> dict:
    """Plain CG against CG preconditioned by the learned ``q(A)`` on the largest transfer
    matrix, to ``cg_rtol``; products count the probe and the preconditioner."""
    name, _, _ = _curve_operator(sets)
    tasks = next(t for n, t, _ in sets if n == name)
    problem = tasks.problem
    d = settings.preconditioner_degree
    cap = 20 * problem.size

    solutions = {}  # the timed solves' results (they are deterministic: any one will do)

    def plain():
        solutions["plain"] = run(ConjugateGradient(), problem, rtol=settings.cg_rtol,
                                 maxiter=cap)

    preconditioned = solver.deployed(ConjugateGradient())

    def learned():
        features = _family(settings).features_of(problem.matvec, problem.size,
                                                  problem.batch_size, settings.seed)
        solutions["learned"] = preconditioned.solve(TaskBatch(problem, features),
                                                    rtol=settings.cg_rtol, maxiter=cap,
                                                    safeguard=False)

    with torch.no_grad():
        clock = compare_wall_clock(plain, learned, repeats=settings.wall_clock_repeats)
    base_solution, learned_solution = solutions["plain"], solutions["learned"]
    cell = {**extra, "operator": name, "rtol": settings.cg_rtol, "preconditioner_degree": d}
    base_iters = base_solution.iterations.double()
    learned_iters = learned_solution.iterations.double()
    # q has d coefficients, degree d - 1: d - 1 products per application, one more for A p.
    learned_products = settings.probe_steps + (d - 1) + learned_iters * d
    records = [
        record(NAME, "cg", "median_iterations", float(base_iters.median()), **cell),
        record(NAME, "pcg-learned", "median_iterations", float(learned_iters.median()), **cell),
        record(NAME, "cg", "median_products", float(base_iters.median()), **cell),
        record(NAME, "pcg-learned", "median_products", float(learned_products.median()), **cell),
        record(NAME, "pcg-learned", "converged_fraction",
               float(learned_solution.converged.double().mean()), **cell),
        record(NAME, "cg", "converged_fraction",
               float(base_solution.converged.double().mean()), **cell),
        record(NAME, "pcg-learned", "wall_time_ratio", clock.ratio, **cell),
        record(NAME, "pcg-learned", "wall_time_seconds", clock.learned_seconds, **cell),
        record(NAME, "cg", "wall_time_seconds", clock.baseline_seconds, **cell),
    ]
    # Against the classical preconditioner, the Chebyshev polynomial on the probe's interval,
    # on every transfer matrix and instance (the engine under its condition limit).
    for operator, transfer, _ in sets[1:]:
        options = {"rtol": settings.cg_rtol, "maxiter": 20 * transfer.problem.size}
        with torch.no_grad():
            chebyshev = preconditioned.solve_baseline(transfer, **options).iterations
            learned = preconditioned.solve(transfer, safeguard=False, **options).iterations
        where = {**cell, "operator": operator}
        for method, iterations in (("pcg-chebyshev", chebyshev), ("pcg-learned", learned)):
            records.append(record(NAME, method, "transfer_median_iterations",
                                  float(iterations.double().median()), **where))
        for metric, count in (("instances_fewer", learned < chebyshev),
                              ("instances_as_many", learned == chebyshev),
                              ("instances_more", learned > chebyshev)):
            records.append(record(NAME, "pcg-learned", metric, int(count.sum()), **where))
    return {"records": records}


def run_cell(job: dict) -> dict:
    """One cell: the baselines, or training and evaluating one engine; a worker job."""
    settings: Settings = job_settings(job)
    cell = job["cell"]
    out = Path(job["out_dir"])
    family = _family(settings)
    sets = evaluation_sets(settings)
    extra = {"K": settings.degree, "s": settings.probe_steps, "size": settings.size,
             "n_test": settings.n_test}
    if cell == "baselines":
        return {"cell": cell, "label": cell, **_run_baselines(settings, sets, extra)}
    preconditioner = cell == "preconditioner"
    paradigm = "basis" if preconditioner else cell
    degree = settings.preconditioner_degree if preconditioner else settings.degree
    n_train, n_validation = settings.n_train, settings.n_validation
    training, sharpness = settings.training, settings.sharpness
    checkpoint = out / "checkpoints" / f"{cell}.safetensors"
    start = time.perf_counter()
    if preconditioner:
        plan = settings.preconditioner
        family = _family(settings, plan.size)
        extra["size"] = plan.size
        training = plan.training
        solver, info = train_inside_cg(family, degree, settings.hidden, plan.n_train,
                                       plan.n_validation, training, settings.seed, checkpoint,
                                       job.get("progress", False), plan.cg_iterations,
                                       plan.sharpness, modes=0,
                                       lower_range=math.log(plan.lower_range))
        info["train_seconds"] = time.perf_counter() - start
        limit, _ = calibrate_condition_limit(
            solver, held_out_sets(family, plan.held_out, plan.calibration_rhs),
            rtol=settings.cg_rtol, maxiter=plan.calibration_maxiter)
        solver.metasolver.condition_limit = limit
        info["condition_limit"] = limit
    else:
        solver, info = train_engine(family, degree, paradigm, settings.hidden, n_train,
                                    n_validation, training, settings.seed, checkpoint,
                                    job.get("progress", False), sharpness=sharpness)
        info["train_seconds"] = time.perf_counter() - start
    solver.settings.update({"experiment": NAME, "cell": cell, "scale": job.get("scale")})
    solver.save(out / "models" / f"{cell}.safetensors")
    extra = {**extra, **info, "lr": training.lr}
    if cell == "preconditioner":
        return {"cell": cell, "label": cell, **_run_preconditioner(settings, sets, solver, extra)}
    return {"cell": cell, "label": cell, **_run_learned(settings, paradigm, sets, solver, extra)}


def cells(settings: Settings) -> list[dict]:
    return [{"cell": cell} for cell in ("basis", "recurrence", "preconditioner", "baselines")]


def _value(records, method, metric, operator=None):
    for r in records:
        if r["experiment"] == NAME and r["method"] == method and r["metric"] == metric and (
                operator is None or r.get("operator") == operator):
            return r["value"]
    return None


def _operators(records) -> list[str]:
    return setting_values(records, NAME, "operator", "median_relative_residual")


def _fmt(value, spec=".2e") -> str:
    return "-" if value is None else format(value, spec)


def _lines(records):
    """Three tables: median residuals, the bar's ratios, the preconditioner."""
    methods = BASELINES + LEARNED
    operators = _operators(records)
    head = ["operator", *(LABELS[m] for m in methods)]
    body = [[op, *(_fmt(_value(records, m, "median_relative_residual", op)) for m in methods)]
            for op in operators]
    ratio_head = ["operator", "learned", "/ Richardson", "/ Chebyshev (probe)",
                  "/ Chebyshev (exact, K)",
                  f"instances better / tied / worse than Chebyshev (probe), ties within "
                  f"{TIE_RTOL:.0%}", "floor (MINRES) / Richardson"]
    ratio_body = []
    for m in LEARNED:
        for op in operators:
            values = [_value(records, m, metric, op) for metric in (
                "median_ratio_to_richardson", "median_ratio_to_chebyshev_estimated",
                "median_ratio_to_chebyshev_exact_K")]
            counts = format_comparison(records, NAME, m, "chebyshev_estimated", operator=op)
            floor = _value(records, "minres-budget", "median_relative_residual", op)
            richardson = _value(records, "richardson", "median_relative_residual", op)
            # The bar's "10 times below Richardson" is out of reach of every method of K + s
            # products where this ratio is above 0.1.
            best_possible = None if floor is None or not richardson else floor / richardson
            if any(v is not None for v in values):
                ratio_body.append([op, LABELS[m], *(_fmt(v, ".3g") for v in values),
                                   counts, _fmt(best_possible, ".3g")])
    pre_head = ["method", "median iterations", "median products", "converged",
                "wall-clock (s)", "wall-clock ratio"]
    pre_body = []
    for m, label in (("cg", "CG"), ("pcg-learned", "CG + learned q(A)")):
        pre_body.append([label, _fmt(_value(records, m, "median_iterations"), ".0f"),
                         _fmt(_value(records, m, "median_products"), ".0f"),
                         _fmt(_value(records, m, "converged_fraction"), ".0%"),
                         _fmt(_value(records, m, "wall_time_seconds"), ".3f"),
                         "1" if m == "cg" else _fmt(_value(records, m, "wall_time_ratio"),
                                                    ".3f")])
    against_head = ["operator", "CG + Chebyshev q(A)", "CG + learned q(A)",
                    "instances with fewer / as many / more iterations"]
    against_body = []
    for op in setting_values(records, NAME, "operator", "transfer_median_iterations"):
        counts = [_value(records, "pcg-learned", metric, op)
                  for metric in ("instances_fewer", "instances_as_many", "instances_more")]
        against_body.append([op, *(_fmt(_value(records, m, "transfer_median_iterations", op),
                                        ".0f") for m in ("pcg-chebyshev", "pcg-learned")),
                             " / ".join(_fmt(c, ".0f") for c in counts)])
    return ((head, body), (ratio_head, ratio_body), (pre_head, pre_body),
            (against_head, against_body))


def tables(records: list[dict]) -> list[Table]:
    degree, probe = (setting_values(records, NAME, key) for key in ("K", "s"))
    products = (f"K = {degree[0]} after an s = {probe[0]}-step probe"
                if len(degree) == len(probe) == 1 else "K after an s-step probe")
    titles = (f"{TITLE}\nmedian relative residual at equal products ({products})",
              "learned over baselines (ratios of the medians) and the instances where it is "
              "better than, tied with or worse than Chebyshev on the probe interval",
              "CG with a learned polynomial preconditioner, largest transfer matrix",
              "CG iterations with the learned preconditioner against the Chebyshev "
              "preconditioner of the same degree from the same probe (medians)")
    # The last table has one label column (the operator), the others two.
    return [Table(title, head, body, label_columns=1 if i == len(titles) - 1 else 2)
            for i, (title, (head, body)) in enumerate(zip(titles, _lines(records),
                                                          strict=True))]


def figure(results: list[dict]):
    """The median relative residual per operator and method (from the records) and, when the
    run's curves are at hand (not in the records), the residual polynomials on the largest
    transfer matrix's interval, learned beside Chebyshev's."""
    curves, points, operator = {}, None, None
    records = [r for result in results for r in result["records"] if r["experiment"] == NAME]
    for result in results:
        if "curves" in result:
            curves.update(result["curves"])
            points, operator = result["points"], result["curve_operator"]
    operators = _operators(records)
    if not operators:
        return None
    fig, axes = panels(1 + (points is not None), columns=1, size=(9.0, 4.6), title=TITLE)
    ax = axes[0]
    methods = [m for m in BASELINES + LEARNED
               if any(_value(records, m, "median_relative_residual", op) for op in operators)]
    markers = dict(zip(BASELINES + LEARNED, "ovs^<>*P", strict=True))
    for j, m in enumerate(methods):
        values = [_value(records, m, "median_relative_residual", op) or np.nan
                  for op in operators]
        learned = m in LEARNED
        ax.plot(np.arange(len(operators)) + 0.07 * (j - len(methods) / 2), values,
                linestyle="none", marker=markers[m], markersize=9 if learned else 6,
                markerfacecolor=None if learned else "none", label=LABELS[m])
    ax.set_yscale("log")
    ax.set_xticks(range(len(operators)), operators, rotation=25, ha="right")
    ax.set_xlabel("operator (synthetic: held-out training spectra)")
    ax.set_ylabel("median relative residual ||b - A x|| / ||b||")
    set_title(ax, "Median relative residual at equal products", LOWER)
    beside(ax)
    if points is not None:
        ax = axes[1]
        for name, values in curves.items():
            ax.loglog(points, np.abs(values), label=LABELS.get(name, name), lw=1.2)
        ax.set_xlabel("t (eigenvalue)")
        ax.set_ylabel("|p(t)|, residual polynomial")
        set_title(ax, f"Residual polynomials of degree K on {operator}", LOWER)
        beside(ax)
    return fig


#: Sets outside the training distribution (``--shift ood``; see ``autospec_common``).
shifted_sets = spectral_shifted_sets
