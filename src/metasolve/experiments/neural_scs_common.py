"""What the neural SCS experiments share (neural SCS paper, sec. 4-6): the learned solvers, the
per-iteration residual curves of SCS, SCS+AA and the learned models, the deployment into the real
``scs`` package as warm starts, tables and plots.

* SCS is :class:`~metasolve.solvers.scs.SCS` (relaxation 1.5, data normalised), SCS+AA is
  :class:`~metasolve.solvers.anderson.AndersonSCS` (history 5), both from the cold start, on the
  same test programs as the learned models, for 50 iterations (sec. 4.4.1).
* The learned models: ``mlp`` is Algorithm 2 (:class:`~metasolve.learned.neural_scs.
  IntermittentSCS`, an MLP initializer of the context and an MLP accelerator at the access set,
  loss: log fixed-point residuals over the access windows, sec. 5.2); ``recurrent`` is
  Algorithm 1 (:class:`~metasolve.learned.neural_scs.RecurrentSCS`, MLP initializer and a GRU at
  every iteration, loss eq. 7). Both predict tau-normalised iterates. Their corrections are
  scaled by the fixed-point residual (our change, see :mod:`metasolve.learned.neural_scs`); the
  scale ``paper-corrections`` of each experiment runs the paper's unscaled corrections with the
  full scale's other settings.
* Residuals reported per iteration ``k``: the tau-normalised fixed-point residual
  ``||z_k/tau_k - f(z_k)/tau_f||`` (what SCS+Neural minimises), and SCS's primal and dual
  residuals ``||A x + s - b||_inf``, ``||A^T y + c||_inf`` of the original program.
* Deployment: each learned model runs each of ``deploy_iterations`` iterations (initializer
  included) in PyTorch, and its ``(x, y, s)`` warm-starts the real ``scs`` (eps_abs = eps_rel =
  1e-4, scs's Anderson acceleration off); we compare scs's iterations (alone, and with the
  PyTorch iterations added) and wall-clock (the PyTorch time, one batched call divided by the
  instances, included) with a cold start, a cold start with scs's own Anderson acceleration
  (lookback 10), a warm start from as many plain PyTorch SCS iterations, and a warm start from
  the previous test instance's scs solution.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..evaluation.records import record
from ..evaluation.render import Table, find_record, format_record, legend_entries, panels, set_title
from ..evaluation.scs_warm_start import warm_start_records
from ..evaluation.shifts import ShiftedSet
from ..learned import IdentityHead, IntermittentSCS, LearnedSolver, NetworkMetaSolver, RecurrentSCS
from ..solvers import AndersonSCS, run
from ..solvers.scs import SCS, primal_dual
from ..tasks.base import make_splits
from ..training import ResidualSumLoss, Trainer, TrainingConfig

ITERATIONS = 50
SHOWN = (1, 5, 10, 20, 30, 40, 50)
METHODS = ("scs", "scs_aa", "neural_mlp", "neural_recurrent")
LABELS = {"scs": "SCS", "scs_aa": "SCS+AA", "neural_mlp": "SCS+Neural-MLP (Alg. 2)",
          "neural_recurrent": "SCS+Neural (Alg. 1, GRU)"}
RESIDUALS = ("fixed_point", "primal", "dual")


@dataclass(frozen=True)
class Settings:
    """One scale of a neural SCS experiment (one family)."""

    family: dict
    train: int
    validation: int
    test: int
    training: TrainingConfig
    models: tuple[str, ...] = ("neural_mlp", "neural_recurrent")
    init_hidden: tuple[int, ...] = (512, 512)
    acc_hidden: tuple[int, ...] = (512, 512)
    access: tuple[int, ...] = (1, 2, 5, 10, 15)
    windows: tuple[tuple[int, int], ...] = ((0, 5), (1, 10), (2, 10), (5, 10), (10, 20),
                                            (15, 20))
    history: int = 1
    overparametrize: bool = False
    #: Corrections proportional to the fixed-point residual (our change, see
    #: :mod:`metasolve.learned.neural_scs`); False is the paper's design (the scale
    #: "paper-corrections" of each experiment).
    scaled_corrections: bool = True
    rnn_hidden: int = 256
    deploy: int = 100
    deploy_iterations: tuple[int, ...] = (10,)
    seed: int = 0
    extra: dict = field(default_factory=dict)


def build_solver(kind: str, family, dim: int, settings: Settings,
                 feature_scale: torch.Tensor | None = None) -> tuple[LearnedSolver, object]:
    """The learned solver and its training loss for ``kind`` (``neural_mlp``/``recurrent``);
    ``feature_scale`` divides the context features before the initializer's first layer."""
    features = family.feature_dim
    if kind == "neural_mlp":
        method = IntermittentSCS(dim, features, access=settings.access, history=settings.history,
                                 hidden=settings.acc_hidden,
                                 overparametrize=settings.overparametrize,
                                 scaled_corrections=settings.scaled_corrections)
        if feature_scale is not None:
            method.context_scale.copy_(feature_scale)
        heads = {"start_correction": IdentityHead(dim)}
        horizon = max(t + r - 1 for t, r in settings.windows)
        loss = ResidualSumLoss(horizon, log=True, windows=settings.windows)
    elif kind == "neural_recurrent":
        method = RecurrentSCS(dim, hidden=settings.rnn_hidden, encoder=(settings.rnn_hidden,),
                              scaled_corrections=settings.scaled_corrections)
        heads = {"start_correction": IdentityHead(dim),
                 "hidden0": IdentityHead(settings.rnn_hidden)}
        loss = ResidualSumLoss(ITERATIONS)
    else:
        raise ValueError(f"unknown learned model {kind!r}; known: neural_mlp, neural_recurrent")
    metasolver = NetworkMetaSolver(features, heads, hidden=settings.init_hidden,
                                   activation="relu", zero_init=True,
                                   feature_scale=feature_scale)
    return LearnedSolver(method, metasolver, family=family), loss


def residual_curves(solve) -> tuple[dict[str, np.ndarray], float]:
    """Run ``solve(callback)`` and collect ``(ITERATIONS + 1, B)`` residual arrays per kind
    (row ``k`` after iteration ``k``; the primal and dual rows 0 are NaN: only the fixed-point
    residual is recorded at the start), and the seconds it took."""
    primal, dual = [], []
    holder: dict = {}

    def callback(k, state, norms):
        res = primal_dual(holder["problem"], state["x"])
        primal.append(res["primal"])
        dual.append(res["dual"])

    start = time.perf_counter()
    with torch.no_grad():
        solution = solve(callback, holder)
    seconds = time.perf_counter() - start
    nan = torch.full_like(primal[0], float("nan"))
    return {"fixed_point": solution.residual_history.numpy(),
            "primal": torch.stack([nan, *primal]).numpy(),
            "dual": torch.stack([nan, *dual]).numpy()}, seconds


def curves_of(method, problem, solver: LearnedSolver | None = None, tasks=None):
    """Residual curves of a classical method, or of a learned solver on ``tasks``."""

    def solve(callback, holder):
        holder["problem"] = problem
        if solver is None:
            return run(method, problem, fixed_iterations=ITERATIONS, rtol=0.0,
                       callback=callback)
        # Unguarded: the paper's Algorithms 1 and 2 as they are (the tables' numbers).
        return solver.solve(tasks, fixed_iterations=ITERATIONS, rtol=0.0, callback=callback,
                            safeguard=False)

    return residual_curves(solve)


def curve_records(experiment: str, method: str, curves: dict[str, np.ndarray],
                  **setting) -> list[dict]:
    records = []
    for kind, values in curves.items():
        for k in SHOWN:
            if k < values.shape[0]:
                records.append(record(experiment, method, f"median_{kind}_residual",
                                      float(np.median(values[k])), iteration=k, **setting))
    fixed = np.median(curves["fixed_point"], axis=1)
    for target in (1e-2, 1e-3, 1e-4):
        reached = np.nonzero(fixed <= target)[0]
        records.append(record(experiment, method, "iterations_to_median_fixed_point",
                              float(reached[0]) if reached.size else float("nan"),
                              target=target, **setting))
    return records


def run_family_cell(experiment: str, job: dict, settings: Settings, family,
                    label: str) -> dict:
    """Train the learned models of ``settings`` on ``family`` and evaluate everything."""
    out = Path(job["out_dir"])
    torch.manual_seed(settings.seed)
    splits = make_splits(family, settings.train, settings.validation, settings.test,
                         seed=settings.seed)
    test = splits.test
    dim = test.problem.size
    setting = {"set": label, "train_tasks": settings.train, "test_tasks": settings.test,
               "variables": test.problem.variables, "constraints": test.problem.constraints}
    records, curves = [], {}
    for name, method in (("scs", SCS()), ("scs_aa", AndersonSCS(memory=5))):
        curves[name], seconds = curves_of(method, test.problem)
        records += curve_records(experiment, name, curves[name], **setting)
        records.append(record(experiment, name, "seconds_50_iterations", seconds, **setting))
    deployments, trained = {}, {}
    scale = splits.train.features.std(dim=0).clamp_min(1e-3)
    for kind in settings.models:
        torch.manual_seed(settings.seed)
        solver, loss = build_solver(kind, family, dim, settings, scale)
        tag = f"{label}-{kind}".replace(" ", "_").replace("/", "_")
        trainer = Trainer(solver, loss, settings.training,
                          checkpoint=out / "checkpoints" / f"{tag}.safetensors",
                          progress=job.get("progress", False))
        history = trainer.fit(splits.train, splits.validation)
        solver.settings.update({"experiment": experiment, "set": label,
                                "scale": job.get("scale")})
        solver.save(out / "models" / f"{tag}.safetensors")
        # (Training time is not a record: a rerun resumes the finished checkpoint in seconds.)
        info = {"epochs": settings.training.epochs, "best_epoch": history.best_epoch,
                "scaled_corrections": settings.scaled_corrections}
        curves[kind], seconds = curves_of(None, test.problem, solver, test)
        records += curve_records(experiment, kind, curves[kind], **setting, **info)
        records.append(record(experiment, kind, "seconds_50_iterations", seconds, **setting))
        trained[kind] = solver
    if settings.deploy:
        deploy_records, deployments = warm_start_records(
            experiment, trained, test, settings.deploy, settings.deploy_iterations, **setting)
        records += deploy_records
    figure = {name: {kind: {"median": np.median(c[kind], axis=1).tolist(),
                            "q25": np.quantile(c[kind], 0.25, axis=1).tolist(),
                            "q75": np.quantile(c[kind], 0.75, axis=1).tolist()}
                     for kind in RESIDUALS} for name, c in curves.items()}
    return {"records": records, "figure": {"set": label, "curves": figure,
                                           "deployments": deployments}, "label": label}


def get(records, experiment, metric, method, **where):
    return find_record(records, experiment, metric, method, **where)


def residual_rows(records: list[dict], experiment: str, sets) -> list[list[str]]:
    rows = []
    for label in sets:
        for method in METHODS:
            cells = [get(records, experiment, "median_fixed_point_residual", method, set=label,
                         iteration=k) for k in SHOWN]
            if all(c is None for c in cells):
                continue
            to3 = get(records, experiment, "iterations_to_median_fixed_point", method,
                      set=label, target=1e-3)
            rows.append([label, LABELS[method], *[format_record(c, "{:.1e}") for c in cells],
                         format_record(to3, "{:.0f}")])
    return rows


RESIDUAL_HEAD = ["set", "method", *[f"k={k}" for k in SHOWN], "iterations to 1e-3"]
PRIMAL_DUAL_AT = (5, 10, 20, 50)
PRIMAL_DUAL_HEAD = ["set", "method", *[f"primal k={k}" for k in PRIMAL_DUAL_AT],
                    *[f"dual k={k}" for k in PRIMAL_DUAL_AT]]


def primal_dual_rows(records: list[dict], experiment: str, sets) -> list[list[str]]:
    rows = []
    for label in sets:
        for method in METHODS:
            cells = [get(records, experiment, f"median_{kind}_residual", method, set=label,
                         iteration=k) for kind in ("primal", "dual") for k in PRIMAL_DUAL_AT]
            if all(c is None for c in cells):
                continue
            rows.append([label, LABELS[method], *[format_record(c, "{:.1e}") for c in cells]])
    return rows
DEPLOY_HEAD = ["set", "scs start", "scs mean iterations", "PyTorch + scs iterations",
               "median seconds", "scs iterations / cold", "wall-clock / cold"]
#: Deployment rows in table order: (record method, label); a start computed in PyTorch is
#: labelled with its iteration count.
DEPLOY_STARTS = (("scs_cold", "cold"), ("scs_cold_scs_aa", "cold, scs's AA (lookback 10)"),
                 ("scs_neural_mlp", LABELS["neural_mlp"]),
                 ("scs_neural_recurrent", LABELS["neural_recurrent"]),
                 ("scs_learned", LABELS["neural_mlp"]),  # records written before both models
                 ("scs_torch_scs", "PyTorch SCS"), ("scs_previous", "previous solution"))


def deployment_rows(records: list[dict], experiment: str, sets) -> list[list[str]]:
    rows = []
    order = {method: i for i, (method, _) in enumerate(DEPLOY_STARTS)}
    names = dict(DEPLOY_STARTS)
    for label in sets:
        found = [r for r in records if r["experiment"] == experiment and r.get("set") == label
                 and r["metric"] == "scs_mean_iterations" and r["method"] in order]
        # Records written before the deployment named its iteration counts used 10 for both.
        iterations_of = {r["method"]: r.get("deploy_iterations") or (
            10 if r["method"] in ("scs_learned", "scs_torch_scs") else 0) for r in found}
        found.sort(key=lambda r: (r.get("deploy_iterations") or 0, order[r["method"]]))
        for mean in found:
            method, k = mean["method"], mean.get("deploy_iterations")
            where = {"set": label, "deploy_iterations": k}

            def cell(metric, fmt="{:.3f}", method=method, where=where):
                return format_record(get(records, experiment, metric, method, **where), fmt)

            its = iterations_of[method] if k is None else k
            name = names[method] + (f", {its} its" if its else "")
            total = cell("scs_total_iterations", "{:.1f}") if k else "-"
            rows.append([label, name, format_record(mean, "{:.1f}"), total,
                         cell("scs_median_seconds", "{:.4f}"), cell("iteration_ratio_to_cold"),
                         cell("wall_time_ratio_to_cold")])
    return rows


def tables_of(records, experiment, title, sets) -> list[Table]:
    # The problem sizes are the run's (the quick Lasso is p = 20, q = 40): one set is named in
    # the title, several in the rows.
    which = f"{sets[0]}: " if len(sets) == 1 else ""
    out = [Table(f"{title}\n{which}median tau-normalised fixed-point residual at iteration k "
                 "(test set)",
                 RESIDUAL_HEAD, residual_rows(records, experiment, sets), 2),
           Table("median primal and dual residuals (SCS's, infinity norm, original program)",
                 PRIMAL_DUAL_HEAD, primal_dual_rows(records, experiment, sets), 2)]
    deploy = deployment_rows(records, experiment, sets)
    if deploy:
        out.append(Table("Real scs (eps 1e-4; it checks convergence every 25 iterations): warm "
                         "starts, their PyTorch time included", DEPLOY_HEAD, deploy, 2))
    return out


COLORS = {"scs": "tab:blue", "scs_aa": "tab:orange", "neural_mlp": "tab:red",
          "neural_recurrent": "tab:purple"}
KIND_LABELS = {"fixed_point": "tau-normalised fixed-point residual",
               "primal": "primal residual (SCS's)", "dual": "dual residual (SCS's)"}


def figure_of(experiment: str, title: str, order=None):
    """``figure(results)`` of an experiment: for each problem set (in ``order``) and residual,
    its median per iteration, each method a colour (the style of the paper's Figures 1-8). With
    the run's curves at hand (not in the records) every iteration is drawn with the band of the
    middle half of the test programs; from the records alone, the iterations the tables show."""

    def figure(results: list[dict]):
        records = [r for result in results for r in result["records"]
                   if r["experiment"] == experiment]
        present = {r["set"] for r in records if r["metric"] == "median_fixed_point_residual"}
        sets = [s for s in order if s in present] if order else sorted(present)
        if not sets:
            return None
        curves = {r["figure"]["set"]: r["figure"]["curves"] for r in results
                  if r.get("figure")}
        fig, axes = panels(3 * len(sets), size=(4.6, 3.5),
                           title=f"{title}: median residuals over the test programs "
                                 "(lower is better)")
        for i, label in enumerate(sets):
            for ax, kind in zip(axes[3 * i:3 * i + 3], RESIDUALS, strict=True):
                for method in METHODS:
                    _draw(ax, records, experiment, curves.get(label, {}).get(method), label,
                          method, kind)
                ax.set_xlabel("SCS iteration k")
                ax.set_ylabel(f"median {kind.replace('_', '-')} residual")
                set_title(ax, f"{label}: {KIND_LABELS[kind]}")
        # One legend for the figure: every panel draws the same methods.
        handles, labels = legend_entries(*axes)
        fig.legend(handles, labels, loc="outside lower center",
                   ncol=len(labels) if len(labels) <= 4 else 2,
                   fontsize=9, frameon=False)
        return fig

    return figure


def _draw(ax, records, experiment, curves, label, method, kind) -> None:
    """One method's median ``kind`` residual on ``ax``: the run's curve with its interquartile
    band when ``curves`` holds it, else the recorded iterations."""
    color = COLORS[method]
    if curves is not None:
        c = curves[kind]
        k = np.arange(len(c["median"]))
        ax.semilogy(k, np.maximum(c["median"], 1e-16), color=color, label=LABELS[method])
        ax.fill_between(k, np.maximum(c["q25"], 1e-16), np.maximum(c["q75"], 1e-16),
                        color=color, alpha=0.15,
                        label=f"{LABELS[method]}: 25% to 75% quantiles")
        return
    found = [(k, get(records, experiment, f"median_{kind}_residual", method, set=label,
                     iteration=k)) for k in SHOWN]
    found = [(k, r["value"]) for k, r in found if r is not None and r["value"] is not None]
    if found:
        ax.semilogy(*zip(*found, strict=True), "-o", color=color, markersize=4,
                    label=LABELS[method])



def scales(full: Settings, quick: Settings, smoke: Settings) -> dict[str, Settings]:
    """An experiment's named scales: ``full``, ``quick``, ``smoke``, and ``paper-corrections``
    (the full scale with the paper's unscaled corrections, which do not vanish at SCS's fixed
    point)."""
    return {"full": full, "quick": quick, "smoke": smoke,
            "paper-corrections": replace(full, scaled_corrections=False)}


def renderer(experiment: str, title: str, order=None):
    """``tables(records)`` of an experiment: its problem sets in ``order`` (default: sorted)."""

    def tables(records: list[dict]) -> list[Table]:
        present = {r["set"] for r in records if r["experiment"] == experiment}
        sets = [s for s in order if s in present] if order else sorted(present)
        return tables_of(records, experiment, title, sets)

    return tables


def shifted_sets_of(settings: Settings, model: LearnedSolver, shifts: dict[str, dict],
                    count: int) -> list[ShiftedSet]:
    """The model's test set, then ``count`` programs from its family with each of ``shifts``'
    settings changed (same sizes, so the model applies), all run for ``ITERATIONS``."""
    options = {"fixed_iterations": ITERATIONS, "rtol": 0.0}
    family = model.family
    test = make_splits(family, settings.train, settings.validation, settings.test,
                       seed=settings.seed).test
    sets = [ShiftedSet("none", test, options)]
    for i, (label, changes) in enumerate(shifts.items()):
        shifted = type(family)(**{**family.config(), **changes})
        sets.append(ShiftedSet(label, shifted.sample(count, seed=settings.seed + 201 + i),
                               options))
    return sets
