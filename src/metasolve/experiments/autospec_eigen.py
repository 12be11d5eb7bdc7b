"""AutoSpec task (b): a learned polynomial filter for subspace iteration, trained on synthetic
spectra with the filtered gap ratio and applied unchanged to the smallest eigenpairs of sparse
SPD matrices (AutoSpec summary; the issue's task (b)).

* Training: :class:`~metasolve.tasks.spectra.FilterStateFamily`: states (Ritz values, residual
  norms, upper bound) of Chebyshev-filtered subspace iteration (block ``p = 15``, filter degree
  ``d = 20``) on ``N = 512`` synthetic spectra after 0 to 20 iterations; loss
  ``log(max_{j > p} |f(lambda_j)| / min_{j <= k} |f(lambda_j)|)`` with ``k = 10``
  (:class:`~metasolve.training.FilterGapLoss`).
* Engine: paradigm ``"filter"`` of :class:`~metasolve.learned.autospec.AutoSpecEngine`: ``T_d``
  on ``[a, b]`` with a learned cut ``a`` (Chebyshev-filtered subspace iteration uses the block's
  largest Ritz value) and the probe's upper bound ``b``; the engine is called every iteration on
  the current Ritz values.
* Test: the 10 smallest eigenpairs of 2D Poisson (``N = 10^4``, the issue's bar) and of the other
  sparse matrices, from the same random block for every method, until every wanted residual
  ``||A v - theta v||`` is at most ``1e-8`` times the probe's bound on ``||A||``. Products count
  the Lanczos probe (20) for the bound, the first Rayleigh-Ritz (``p``), and ``d p + p`` per
  iteration. Methods: plain subspace iteration (``d = 1``, capped at 20,000 products),
  Chebyshev-filtered subspace iteration and the learned filter, both of degree ``d`` (capped at
  300 iterations: the random sparse SPD matrix's smallest eigenvalues form a dense cluster that
  no degree-20 filter separates in that many). The learned filter runs as a learned solver of
  eigenproblems (:func:`~metasolve.learned.filter_eigen_solver`, saved as ``eigen.safetensors``
  beside the engine's ``filter.safetensors``), unguarded for this table; ``--shift ood`` solves
  its shifted sets (:func:`shifted_sets`) with and without the safeguard, whose classical method
  is Chebyshev-filtered subspace iteration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..catalog import CATALOG
from ..evaluation.metrics import compare_instances, comparison_records
from ..evaluation.records import record
from ..evaluation.render import (
    LOWER,
    Table,
    below,
    beside,
    format_comparison,
    panels,
    set_title,
    setting_values,
)
from ..evaluation.shifts import ShiftedSet
from ..evaluation.spectral import Operator, grid_eigenvalues
from ..learned import AutoSpecEngine, LearnedSolver, filter_eigen_solver
from ..learned.autospec_filter import (
    LearnedFilterSubspaceIteration,
    eigen_tasks,
    spectrum_eigen_tasks,
)
from ..probes import lanczos_probe
from ..problems import EigenProblem
from ..solvers import ChebyshevSeries, FilteredSubspaceIteration, run
from ..tasks import FilterStateFamily, make_splits
from ..tasks.operators import sparse_system
from ..training import FilterGapLoss, Trainer, TrainingConfig
from .common import job_settings

NAME = "autospec-eigen"
TITLE = CATALOG[NAME].title
METHODS = ("subspace", "chebyshev-filtered", "learned")
LABELS = {"subspace": "subspace iteration (d = 1)", "chebyshev-filtered": "Chebyshev-filtered",
          "learned": "learned filter"}
EIGEN_TRANSFER = (
    Operator("poisson2d-100", "poisson2d", {"m": 100}),
    Operator("poisson3d-22", "poisson3d", {"m": 22}),
    Operator("anisotropic2d-100", "anisotropic2d", {"m": 100, "epsilon": 1e-2}),
    Operator("elasticity-24x4x4", "elasticity", {"cells": (24, 4, 4)}),
    Operator("random-spd-4000", "random_spd", {"n": 4000}),
)
EIGEN_SMOKE = (Operator("poisson2d-12", "poisson2d", {"m": 12}),)


@dataclass(frozen=True)
class Settings:
    size: int = 512
    wanted: int = 10
    block: int = 15
    degree: int = 20
    # States after up to 20 iterations: on the test matrices the filter runs 9 to 46
    # iterations, and an engine trained only on early states (0 to 4) meets late ones, with
    # converged Ritz values and small residuals, outside its training distribution.
    iterations: int = 20
    probe_steps: int = 20
    hidden: tuple[int, ...] = (64, 64)
    lower_range: float = 1.0
    n_train: int = 4096
    n_validation: int = 256
    n_test: int = 256
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        epochs=20, batch_size=64, lr=3e-4, plateau_patience=5, grad_clip=1.0,
        betas=(0.999, 0.999)))
    transfer: tuple = EIGEN_TRANSFER
    starts: int = 2
    rtol: float = 1e-8
    plain_cap: int = 20000
    filtered_cap: int = 300
    seed: int = 0


FULL = Settings()
QUICK = replace(FULL, n_train=512, n_validation=128, n_test=128,
                training=replace(FULL.training, epochs=6), transfer=EIGEN_TRANSFER[:1],
                iterations=4)  # early states only: fewer iterations to sample per state
SMOKE = replace(FULL, size=64, wanted=3, block=5, degree=6, iterations=2, probe_steps=8,
                hidden=(8,), n_train=16, n_validation=8, n_test=8, plain_cap=200,
                training=replace(FULL.training, epochs=2, batch_size=8), transfer=EIGEN_SMOKE,
                starts=1)
SCALES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def _family(settings: Settings) -> FilterStateFamily:
    return FilterStateFamily(size=settings.size, block=settings.block, degree=settings.degree,
                             iterations=settings.iterations, probe_steps=settings.probe_steps)


def _eigen_problem(operator: Operator, settings: Settings):
    matrix = operator.matrix()
    system = sparse_system(matrix, settings.starts, seed=settings.seed)
    probe = lanczos_probe(system.matvec, system.size, settings.probe_steps, system.batch_size,
                          seed=settings.seed)
    upper = probe.ritz_values[:, -1] + probe.residual_norms[:, -1]
    start = torch.randn(system.batch_size, system.size, settings.block,
                        generator=torch.Generator().manual_seed(settings.seed + 1),
                        dtype=torch.float64)
    return matrix, EigenProblem(system, start, upper, settings.wanted)


def _wanted_errors(matrix, operator: Operator, ritz: torch.Tensor, wanted: int) -> float:
    """Largest error of the wanted Ritz values against a reference: the closed-form spectrum of
    a grid Laplacian, else a dense symmetric eigensolver (the other transfer operators have at
    most a few thousand unknowns). Not ARPACK: the random SPD matrix's smallest eigenvalue has a
    multiplicity in the tens, and ARPACK returns fewer copies of it than there are."""
    grid = grid_eigenvalues(operator)
    values = grid[1].reshape(-1) if grid is not None else np.linalg.eigvalsh(matrix.toarray())
    reference = np.sort(values)[:wanted]
    return float(np.abs(ritz[:, :wanted].numpy() - reference).max() / abs(reference).max())


def run_cell(job: dict) -> dict:
    settings: Settings = job_settings(job)
    out = Path(job["out_dir"])
    family = _family(settings)
    d = settings.degree
    splits = make_splits(family, settings.n_train, settings.n_validation, settings.n_test,
                         seed=settings.seed)
    torch.manual_seed(settings.seed)
    engine = AutoSpecEngine(settings.block, d, "filter", hidden=settings.hidden, modes=0,
                            lower_range=settings.lower_range)
    solver = LearnedSolver(ChebyshevSeries(), engine, family=family, monitor="error")
    loss = FilterGapLoss(d + 1, settings.wanted, settings.block)
    with torch.no_grad():
        before = loss(solver.solve(splits.test, safeguard=False, **loss.run_options()))
    start = time.perf_counter()
    history = Trainer(solver, loss, settings.training,
                      checkpoint=out / "checkpoints" / "filter.safetensors",
                      progress=job.get("progress", False)).fit(splits.train, splits.validation)
    train_seconds = time.perf_counter() - start
    solver.settings.update({"experiment": NAME, "scale": job.get("scale")})
    solver.save(out / "models" / "filter.safetensors")
    # The same engine as a solver of eigenproblems (the learned filter inside subspace
    # iteration), through LearnedSolver.solve and its safeguard: its classical method is
    # Chebyshev-filtered subspace iteration of the same degree.
    eigen = filter_eigen_solver(engine, family, settings.wanted,
                                training_features=splits.train.features,
                                calibration_maxiter=settings.filtered_cap,
                                experiment=NAME, scale=job.get("scale"))
    eigen.save(out / "models" / "eigen.safetensors")
    with torch.no_grad():
        after = loss(solver.solve(splits.test, safeguard=False, **loss.run_options()))
    extra = {"degree": d, "block": settings.block, "wanted": settings.wanted,
             "rtol": settings.rtol, "n_train": settings.n_train, "epochs": settings.training.epochs,
             "best_epoch": history.best_epoch, "train_seconds": train_seconds}
    records = [record(NAME, "chebyshev-filtered", "mean_log_gap_ratio", float(before.mean()),
                      operator="synthetic states (held out)", **extra),
               record(NAME, "learned", "mean_log_gap_ratio", float(after.mean()),
                      operator="synthetic states (held out)", **extra),
               # The gap ratios themselves (not their logs, which cross zero) are compared.
               *comparison_records(NAME, "learned", "chebyshev_filtered",
                                   compare_instances(after.exp(), before.exp()),
                                   operator="synthetic states (held out)", **extra)]
    histories = {}
    for operator in settings.transfer:
        matrix, problem = _eigen_problem(operator, settings)
        with torch.no_grad():  # the learned solver's features: the start's Ritz values
            learned_tasks = eigen_tasks(problem)
        for method_name, method, cap in (
                ("subspace", FilteredSubspaceIteration(1),
                 settings.plain_cap // (2 * settings.block)),
                ("chebyshev-filtered", FilteredSubspaceIteration(d), settings.filtered_cap),
                ("learned", eigen.method, settings.filtered_cap)):
            with torch.no_grad():
                tic = time.perf_counter()
                if method_name == "learned":  # the papers' table: unguarded
                    solution = eigen.solve(learned_tasks, safeguard=False,
                                           rtol=settings.rtol, maxiter=cap)
                else:
                    solution = run(method, problem, rtol=settings.rtol, maxiter=cap)
                seconds = time.perf_counter() - tic
            per = method.products_per_iteration(problem, method.degree + 1)
            products = (settings.probe_steps + settings.block
                        + solution.iterations.double() * per)
            cell = {**extra, "operator": operator.name}
            records += [
                record(NAME, method_name, "median_products", float(products.median()), **cell),
                record(NAME, method_name, "converged_fraction",
                       float(solution.converged.double().mean()), **cell),
                record(NAME, method_name, "wall_time_seconds", seconds, **cell)]
            if bool(solution.converged.all()):
                ritz = torch.linalg.eigvalsh(solution.x.mT @ problem.block_matvec(solution.x))
                records.append(record(NAME, method_name, "eigenvalue_relative_error",
                                      _wanted_errors(matrix, operator, ritz, settings.wanted),
                                      **cell))
            histories[f"{operator.name}/{method_name}"] = {
                "products": per, "history": (solution.relative_history[:, 0]).tolist()}
    return {"records": records, "histories": histories, "label": "filter"}


def _value(records, method, metric, operator):
    for r in records:
        if (r["experiment"] == NAME and r["method"] == method and r["metric"] == metric
                and r["operator"] == operator):
            return r["value"]
    return None


def _lines(records):
    records = [r for r in records if r["experiment"] == NAME]
    operators = setting_values(records, NAME, "operator", "median_products")
    head = ["operator", *(f"{LABELS[m]}: products (converged)" for m in METHODS),
            "learned / Chebyshev-filtered", "eigenvalue error (learned)"]
    body = []
    for op in operators:
        cells = []
        for m in METHODS:
            products = _value(records, m, "median_products", op)
            conv = _value(records, m, "converged_fraction", op)
            cells.append("-" if products is None else f"{products:.0f} ({conv:.0%})")
        cheb = _value(records, "chebyshev-filtered", "median_products", op)
        learned = _value(records, "learned", "median_products", op)
        error = _value(records, "learned", "eigenvalue_relative_error", op)
        body.append([op, *cells, "-" if not cheb else f"{learned / cheb:.3f}",
                     "-" if error is None else f"{error:.1e}"])
    gap = [_value(records, m, "mean_log_gap_ratio", "synthetic states (held out)")
           for m in ("chebyshev-filtered", "learned")]
    counts = format_comparison(records, NAME, "learned", "chebyshev_filtered",
                               operator="synthetic states (held out)")
    if None not in gap:
        body.append(["synthetic states: mean log gap ratio", "-", f"{gap[0]:.4f}",
                     f"{gap[1]:.4f}",
                     f"better / tied / worse: {counts}", "-"])
    return head, body


def tables(records: list[dict]) -> list[Table]:
    wanted = setting_values(records, NAME, "wanted")
    rtol = setting_values(records, NAME, "rtol")
    what = f"{wanted[0]} smallest eigenpairs, " if len(wanted) == 1 else ""
    tolerance = f" {rtol[0]:g}" if len(rtol) == 1 else ""
    return [Table(f"{TITLE}\n{what}products A @ v to residual{tolerance} (relative to ||A||), "
                  "probe included", *_lines(records))]


def figure(results: list[dict]):
    """Products to convergence per operator and method (from the records) and, when the run's
    histories are at hand (not in the records), the largest wanted residual against products
    for each operator."""
    records = [r for result in results for r in result["records"] if r["experiment"] == NAME]
    operators = setting_values(records, NAME, "operator", "median_products")
    if not operators:
        return None
    histories = next((r["histories"] for r in results if r.get("histories")), {})
    shown = sorted({key.split("/")[0] for key in histories})
    fig, axes = panels(1 + len(shown), columns=2, size=(7.2, 4.4), title=TITLE)
    ax = axes[0]
    width = 0.8 / len(METHODS)
    capped = []
    colors = dict(zip(METHODS, ("tab:blue", "tab:green", "tab:orange"), strict=True))
    for j, m in enumerate(METHODS):
        values = [_value(records, m, "median_products", op) for op in operators]
        converged = [_value(records, m, "converged_fraction", op) for op in operators]
        x = np.arange(len(operators)) + width * (j - (len(METHODS) - 1) / 2)
        bars = ax.bar(x, [np.nan if v is None else v for v in values], width,
                      color=colors[m], label=LABELS[m])
        capped += [bar for bar, f in zip(bars, converged, strict=True) if f is not None and f < 1]
    fractions = [_value(records, m, "converged_fraction", op) for m in METHODS
                 for op in operators]
    if any(f is not None and f < 1 for f in fractions):
        from matplotlib.patches import Patch

        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=[*handles, Patch(facecolor="white", edgecolor="black", hatch="//",
                                           label="hatched: stopped at the cap,\nnot converged")],
                  fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    else:
        beside(ax)
    for bar in capped:  # hatched after the legend, whose colour patches stay plain
        bar.set_hatch("//")
        bar.set_edgecolor("black")
    ax.set_yscale("log")
    ax.set_xticks(range(len(operators)), operators, rotation=25, ha="right")
    ax.set_xlabel("operator")
    ax.set_ylabel("median products A @ v to 1e-8 (log scale)")
    set_title(ax, "Products to the 10 smallest eigenpairs", LOWER)
    for ax, op in zip(axes[1:], shown, strict=True):
        for m in METHODS:
            h = histories.get(f"{op}/{m}")
            if h is not None:
                products = np.arange(len(h["history"])) * h["products"]
                ax.semilogy(products, h["history"], label=LABELS[m], color=colors[m])
        ax.set_xlabel("products A @ v")
        ax.set_ylabel("largest wanted residual / ||A||")
        set_title(ax, op, LOWER)
        below(ax, columns=2)
    return fig


def shifted_sets(settings: Settings, model: LearnedSolver, count: int = 64) -> list[ShiftedSet]:
    """The shifted sets of the learned filter (``metasolve reproduce autospec-eigen --shift
    ood``), for the eigenproblem solver the run saves (``eigen.safetensors``; the engine's
    state-level model ``filter.safetensors`` has none): eigenproblems ``diag(lambda)`` of
    held-out spectra of the training family, of spectra with condition numbers above (1e6 to
    1e8) and below (2 to 10) the training range, and the experiment's transfer operators, all
    with the experiment's tolerance and iteration cap."""
    if not isinstance(model.method, LearnedFilterSubspaceIteration):
        return []
    family = model.family
    options = {"rtol": settings.rtol, "maxiter": settings.filtered_cap}
    seed = settings.seed
    sets = [ShiftedSet("none", spectrum_eigen_tasks(family, count, settings.wanted, seed + 101),
                       options)]
    for label, low, high in (("kappa 1e6 to 1e8", 1e6, 1e8), ("kappa 2 to 10", 2.0, 10.0)):
        sets.append(ShiftedSet(label, spectrum_eigen_tasks(family, count, settings.wanted,
                                                           seed + 102, low, high), options))
    for operator in settings.transfer:
        _, problem = _eigen_problem(operator, settings)
        sets.append(ShiftedSet(operator.name, eigen_tasks(problem), options))
    return sets
