"""R2N2 against Newton-Krylov-GMRES on Chandrasekhar's H-equation (R2N2 paper, sec. 4.2,
Figures 7-8, SM2.2).

* Tasks: eq. (21) with ``m`` in {10, 20} and ``c`` in {0.875, 0.905, 0.935}, ``x_0 ~ N(1, 0.2 I)``
  (:class:`~metasolve.tasks.chandrasekhar.ChandrasekharFamily`; one batch mixes both sizes,
  padded exactly).
* R2N2: ``n = 3`` plain layers (eq. 9), trained on ``T = 2`` outer iterations with loss (18)
  (``w_k = 1``). It starts near the fixed-point iteration ``x_{k+1} = 1 / (1 - A_c x_k)``
  (output weights ``(-1, 0, 0)``, inner weights -0.5), not from random weights.
* NK-GMRES: SciPy's ``newton_krylov`` with a GMRES inner solver and no line search, on the
  problem's own ``f`` (the torch function of eq. 21, one unpadded instance at a time). The
  paper's NK-GMRES used 3 inner iterations (Figures 7-8); we use 2 inner GMRES steps, so that
  the R2N2 is not given more evaluations than NK-GMRES: one R2N2 outer iteration spends 3
  evaluations of ``f``, while with SciPy 1.17 a Newton step with 2 inner steps spends 4 counted
  calls (``f(x_k)``, one per Arnoldi step, and one more for GMRES's residual of its result after
  the cycle; fewer when the inner GMRES meets Newton's forcing tolerance early). The counts are
  recorded (``evaluations_per_iteration``), so NK-GMRES gets at least the R2N2's budget.
* Test sets: the training distribution; ``m = 100``; ``c`` in {0.85, 0.95} (outside the training
  range); ``x_0`` with 10-fold variance (``N(1, 2 I)``); ``x_0`` centred at 5 (``N(5, 0.2 I)``).
* Metrics: ``||f(x_k)||`` per outer iteration; at ``k = 1, 2`` the fractions of instances where
  the R2N2's residual is below, tied with (within 1%, or both below the tolerance 1e-8) and above
  NK-GMRES's, the median of ``log10(||f_R2N2|| / ||f_NK||)``, and
  the median of eq. (22)'s ratio ``Delta r_R2N2 / Delta r_NK`` (``Delta r_k = ||f(x_0)|| -
  ||f(x_k)||``), which is only defined where NK-GMRES reduced the residual (``Delta r_NK > 0``):
  it is taken over those instances and their fraction is recorded (``delta_r_defined_fraction``);
  the fraction converged to ``||f|| <= 1e-8`` after 15, 20 and 50 iterations (the paper reports
  NK-GMRES's on the centred-at-5 set: 63.2 %, 76.7 %, 98 %).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..baselines import newton_krylov_history
from ..catalog import CATALOG
from ..evaluation.metrics import compare_instances, comparison_records
from ..evaluation.records import record
from ..evaluation.render import (
    LOWER,
    Table,
    below,
    find_record,
    format_comparison,
    format_record,
    panels,
    set_title,
)
from ..evaluation.shifts import ShiftedSet
from ..learned import constant_weights, frozen_r2n2, r2n2_solver
from ..solvers import run
from ..tasks import ChandrasekharFamily
from ..tasks.base import make_splits
from ..tasks.chandrasekhar import EXTRAPOLATION_C, ChandrasekharSystem
from ..training import WeightedResidualLoss
from .common import job_settings
from .r2n2_common import Settings, full_batch_adam, train_r2n2

NAME = "r2n2-chandrasekhar"
TITLE = CATALOG[NAME].title
LAYERS = 3
TRAIN_OUTER = 2
INNER_GMRES = LAYERS - 1
TOLERANCE = 1e-8
LONG = 50
SHOWN = 8
CHECKPOINTS = (15, 20, 50)

TEST_SETS = {
    "training distribution": {},
    "m = 100": {"sizes": (100,)},
    "c in {0.85, 0.95}": {"c_values": EXTRAPOLATION_C},
    "x0 variance x10": {"variance": 2.0},
    "x0 centred at 5": {"mean": 5.0},
}
#: Sec. 4.2: NK-GMRES's converged fraction on the centred-at-5 set.
PAPER_NK_CONVERGED = {15: 0.632, 20: 0.767, 50: 0.98}

FULL = Settings(train=1400, validation=200, test=600,
                training=full_batch_adam(epochs=3000, batch_size=1400, lr=1e-2),
                lbfgs_iterations=500, extra={"extrapolation_test": 300})
QUICK = replace(FULL, train=500, validation=100, test=200,
                training=replace(FULL.training, epochs=500, batch_size=500),
                lbfgs_iterations=200, extra={"extrapolation_test": 100})
SMOKE = replace(FULL, train=30, validation=10, test=10,
                training=replace(FULL.training, epochs=3, batch_size=30), lbfgs_iterations=3,
                extra={"extrapolation_test": 5})
SCALES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def _newton_krylov(problem: ChandrasekharSystem) -> tuple[np.ndarray, np.ndarray]:
    """``(LONG + 1, B)`` NK-GMRES residuals and ``(B,)`` mean evaluations per Newton step."""
    residual, evaluations = [], []
    for i in range(problem.batch_size):
        operator, start = problem.unpadded(i)
        m = start.shape[0]
        # One unpadded instance, so SciPy sees exactly eq. (21) with m unknowns, evaluated by
        # the same torch code the R2N2 runs on (one definition of f).
        alone = ChandrasekharSystem(operator[None], torch.ones(1, m, dtype=start.dtype),
                                    start[None], problem.c[i:i + 1])

        def f(x, alone=alone):
            with torch.no_grad():
                y = torch.as_tensor(x, dtype=torch.float64).reshape(1, -1)
                return alone.function(y)[0].numpy()

        out = newton_krylov_history(f, start.numpy(), LONG, INNER_GMRES)
        residual.append(out["residual"])
        used = out["evaluations"][1:][out["evaluations"][1:] > 0]
        evaluations.append(used.mean() if used.size else np.nan)
    return np.array(residual).T, np.array(evaluations)


def _delta_r_ratio(r2n2: np.ndarray, nk: np.ndarray, k: int) -> np.ndarray:
    """Eq. (22) per instance, NaN where NK-GMRES's ``Delta r_k <= 0``: there the ratio is
    undefined (a zero or negative denominator says nothing about which method reduced more).
    A non-finite residual (a diverged run) counts as infinite."""
    r2n2, nk = np.nan_to_num(r2n2, nan=np.inf), np.nan_to_num(nk, nan=np.inf)
    denominator = nk[0] - nk[k]
    with np.errstate(all="ignore"):
        ratio = (r2n2[0] - r2n2[k]) / denominator
    return np.where(denominator > 0, ratio, np.nan)


def _log10_ratio(r2n2: np.ndarray, nk: np.ndarray, k: int) -> np.ndarray:
    """``log10(||f_R2N2|| / ||f_NK||)`` per instance at ``k``: negative where the R2N2 is lower.
    A non-finite residual (a diverged run) counts as infinite."""
    a = np.nan_to_num(r2n2[k], nan=np.inf)
    b = np.nan_to_num(nk[k], nan=np.inf)
    with np.errstate(all="ignore"):
        return np.log10(a) - np.log10(b)


def _set_records(label, r2n2, nk, extra) -> list[dict]:
    records = []
    setting = {"set": label, **extra}
    for k in range(SHOWN + 1):
        for method, history in (("r2n2", r2n2), ("nk_gmres", nk)):
            records.append(record(NAME, method, "median_residual",
                                  float(np.median(history[k])), iteration=k, **setting))
    for k in (1, 2):
        # Two residuals below the convergence tolerance are a tie: both have converged.
        records += comparison_records(NAME, "r2n2", "nk_gmres",
                                      compare_instances(r2n2[k], nk[k], atol=TOLERANCE),
                                      iteration=k, **setting)
        # Both residuals infinite (or both zero) say nothing about which is lower: NaN, left out.
        log_ratio = _log10_ratio(r2n2, nk, k)
        log_ratio = log_ratio[~np.isnan(log_ratio)]
        records.append(record(NAME, "r2n2", "median_log10_residual_ratio",
                              np.median(log_ratio) if log_ratio.size else np.nan, iteration=k,
                              **setting))
        ratio = _delta_r_ratio(r2n2, nk, k)
        defined = ~np.isnan(ratio)
        # No instance with Delta r_NK > 0: no median (a NaN value is stored as null).
        records.append(record(NAME, "r2n2", "median_delta_r_ratio",
                              np.median(ratio[defined]) if defined.any() else np.nan,
                              iteration=k, **setting))
        records.append(record(NAME, "r2n2", "delta_r_defined_fraction", float(defined.mean()),
                              iteration=k, **setting))
    for k in CHECKPOINTS:
        for method, history in (("r2n2", r2n2), ("nk_gmres", nk)):
            converged = (np.nan_to_num(history[:k + 1], nan=np.inf) <= TOLERANCE).any(axis=0)
            paper = PAPER_NK_CONVERGED.get(k) if (method == "nk_gmres"
                                                  and label == "x0 centred at 5") else None
            records.append(record(NAME, method, "converged_fraction", float(converged.mean()),
                                  paper, iteration=k, tolerance=TOLERANCE, **setting))
    return records


def run_cell(job: dict) -> dict:
    settings: Settings = job_settings(job)
    out = Path(job["out_dir"])
    family = ChandrasekharFamily()
    splits = make_splits(family, settings.train, settings.validation, settings.test,
                         seed=settings.seed)
    solver = r2n2_solver(family, LAYERS, stage_init=[-0.5] * 3, output_init=[-1.0, 0.0, 0.0])
    info = train_r2n2(solver, WeightedResidualLoss(TRAIN_OUTER), splits, settings,
                      out / "checkpoints" / "r2n2.safetensors", job.get("progress", False))
    solver.settings.update({"experiment": NAME, "scale": job.get("scale")})
    solver.save(out / "models" / "r2n2.safetensors")
    method = frozen_r2n2(solver)
    extra = {"train_outer": TRAIN_OUTER, "layers": LAYERS, "inner_gmres": INNER_GMRES, **info}
    records = [record(NAME, "r2n2", "evaluations_per_iteration",
                      method.evaluations_per_iteration, **extra)]
    figure = {"weights": constant_weights(solver), "curves": {}, "scatter": {}}
    for index, (label, changes) in enumerate(TEST_SETS.items()):
        if not changes:
            tasks = splits.test
        else:
            config = {**family.config(), **changes}
            tasks = ChandrasekharFamily(**config).sample(settings.extra["extrapolation_test"],
                                                         seed=settings.seed + 100 + index)
        with torch.no_grad():
            solution = run(method, tasks.problem, fixed_iterations=LONG, rtol=0.0)
        r2n2 = solution.residual_history.numpy()
        nk, evaluations = _newton_krylov(tasks.problem)
        records += _set_records(label, r2n2, nk, extra)
        records.append(record(NAME, "nk_gmres", "evaluations_per_iteration",
                              float(np.nanmean(evaluations)), set=label, **extra))
        figure["curves"][label] = {"r2n2": np.median(r2n2[:SHOWN + 1], axis=1).tolist(),
                                   "nk_gmres": np.median(nk[:SHOWN + 1], axis=1).tolist()}
        if label in ("training distribution", "c in {0.85, 0.95}"):
            figure["scatter"][label] = {
                "c": tasks.problem.c.tolist(),
                **{f"log_ratio{k}": _log10_ratio(r2n2, nk, k).tolist() for k in (1, 2)}}
    return {"records": records, "figure": figure, "label": "train and evaluate"}


def _get(records, metric, method, **where):
    return find_record(records, NAME, metric, method, **where)


def _delta_r_cell(records, label, k) -> str:
    """Eq. (22)'s median ratio with the share of instances it is defined on."""
    ratio = _get(records, "median_delta_r_ratio", "r2n2", set=label, iteration=k)
    defined = _get(records, "delta_r_defined_fraction", "r2n2", set=label, iteration=k)
    text = format_record(ratio)
    return text if defined is None else f"{text} (on {defined['value']:.0%})"


def _comparison_rows(records):
    rows = []
    for label in TEST_SETS:
        if _get(records, "median_log10_residual_ratio", "r2n2", set=label,
                iteration=1) is None:
            continue
        rows.append([label,
                     *[format_comparison(records, NAME, "r2n2", "nk_gmres", set=label,
                                         iteration=k) for k in (1, 2)],
                     *[format_record(_get(records, "median_log10_residual_ratio", "r2n2",
                                          set=label, iteration=k), "{:+.2f}") for k in (1, 2)],
                     *[_delta_r_cell(records, label, k) for k in (1, 2)],
                     *[format_record(_get(records, "median_residual", m, set=label,
                                          iteration=SHOWN), "{:.1e}")
                       for m in ("r2n2", "nk_gmres")]])
    return rows


def _converged_rows(records):
    rows = []
    for label in TEST_SETS:
        for method, name in (("r2n2", "R2N2"), ("nk_gmres", "NK-GMRES")):
            cells = [_get(records, "converged_fraction", method, set=label, iteration=k)
                     for k in CHECKPOINTS]
            if all(c is None for c in cells):
                continue
            rows.append([label, name, *[format_record(c) for c in cells]])
    return rows


HEADS = (["test set", *[f"R2N2 below / tied / above NK (k={k})" for k in (1, 2)],
          "median log10(‖f_R2N2‖/‖f_NK‖) (k=1)", "median log10(‖f_R2N2‖/‖f_NK‖) (k=2)",
          "median eq. 22 ratio (k=1; on Delta r_NK > 0)",
          "median eq. 22 ratio (k=2; on Delta r_NK > 0)",
          f"median ‖f‖ k={SHOWN}: R2N2", f"median ‖f‖ k={SHOWN}: NK"],
         ["test set", "method", *[f"converged to {TOLERANCE:g} by k={k}" for k in CHECKPOINTS]])


def tables(records: list[dict]) -> list[Table]:
    return [Table(f"{TITLE}\nfunction evaluations per outer iteration: R2N2 {LAYERS}, "
                  f"NK-GMRES {INNER_GMRES + 2} counted in SciPy ({INNER_GMRES} inner GMRES "
                  f"steps)", HEADS[0], _comparison_rows(records)),
            Table("Fraction of instances converged", HEADS[1], _converged_rows(records), 2)]


SET_STYLES = dict(zip(TEST_SETS, ["-", "--", "-.", ":", (0, (3, 1, 1, 1))], strict=False))
BELOW_ZERO = "below 0: R2N2's residual lower, better"


def figure(results: list[dict]):
    """Figure 7 as the median of ``log10(||f_R2N2|| / ||f_NK||)`` after 1 and 2 outer iterations
    per test set (and, when the run's per-instance values are at hand, every instance against
    ``c``), and Figure 8: the median residual over 8 outer iterations, every test set."""
    records = [r for result in results for r in result["records"] if r["experiment"] == NAME]
    sets = [label for label in TEST_SETS
            if _get(records, "median_log10_residual_ratio", "r2n2", set=label, iteration=1)]
    if not sets:
        return None
    figure = next((r["figure"] for r in results if r.get("figure")), {})
    scatter = {label: data for label, data in figure.get("scatter", {}).items()
               if "log_ratio1" in data}  # figure data of older runs held eq. (22)'s ratio
    fig, axes = panels(2 + 2 * bool(scatter), columns=2, size=(6.4, 4.6), title=TITLE)
    ax = axes[0]
    y = np.arange(len(sets))[::-1]
    for j, (k, color) in enumerate(((1, "tab:orange"), (2, "tab:red"))):
        values = [_get(records, "median_log10_residual_ratio", "r2n2", set=label, iteration=k)
                  for label in sets]
        ax.barh(y + 0.2 - 0.4 * j, [np.nan if v is None else v["value"] for v in values], 0.4,
                color=color, label=f"after {k} outer iteration{'s' if k > 1 else ''}")
    ax.axvline(0.0, color="tab:blue", linewidth=1, label="0: equal residuals")
    ax.margins(x=0.08)
    ax.set_yticks(y, sets)
    ax.set_xlabel("median log10(||f_R2N2(x_k)|| / ||f_NK-GMRES(x_k)||)")
    ax.set_ylabel("test set")
    set_title(ax, "Fig. 7: R2N2 against NK-GMRES at equal evaluations", BELOW_ZERO)
    below(ax, columns=2)
    ax = axes[1]
    for label in TEST_SETS:
        for method, name, color in (("r2n2", "R2N2", "tab:red"),
                                    ("nk_gmres", "NK-GMRES", "tab:blue")):
            values = [_get(records, "median_residual", method, set=label, iteration=k)
                      for k in range(SHOWN + 1)]
            if all(v is None for v in values):
                continue
            ax.semilogy([np.nan if v is None or v["value"] is None else v["value"]
                         for v in values], linestyle=SET_STYLES[label], color=color,
                        label=f"{name}, {label}")
    ax.axvspan(TRAIN_OUTER, SHOWN, color="0.9",
               label=f"beyond the {TRAIN_OUTER} trained iterations")
    ax.set_xlabel("outer (Newton) iteration k")
    ax.set_ylabel("median ||f(x_k)||")
    set_title(ax, "Fig. 8: median residual, trained on 2 outer iterations", LOWER)
    below(ax, columns=2)
    colors = {"training distribution": "tab:red", "c in {0.85, 0.95}": "yellowgreen"}
    for ax, k in zip(axes[2:], (1, 2), strict=False):
        for label, data in scatter.items():
            c = np.array(data["c"])
            values = np.array(data[f"log_ratio{k}"], dtype=float)
            keep = np.isfinite(values)
            jitter = np.random.default_rng(k).uniform(-0.004, 0.004, len(c))
            ax.plot((c + jitter)[keep], values[keep], ".", markersize=3,
                    color=colors.get(label, "k"), label=f"{label} (one point per instance)")
        ax.axhline(0.0, color="tab:blue", linewidth=1, label="0: equal residuals")
        ax.set_xlabel("c (the equation's parameter)")
        ax.set_ylabel(f"log10(||f_R2N2(x_{k})|| / ||f_NK-GMRES(x_{k})||)")
        set_title(ax, f"Fig. 7{'ab'[k - 1]}: after {k} outer iteration{'s' if k > 1 else ''}",
                  BELOW_ZERO)
        below(ax, columns=1)
    return fig


def shifted_sets(settings: Settings, model, count: int = 200) -> list[ShiftedSet]:
    """The experiment's test sets (the training distribution first), each solved to
    ``||f|| <= 1e-8`` within ``LONG`` outer iterations (``metasolve reproduce
    r2n2-chandrasekhar --shift ood``)."""
    options = {"atol": TOLERANCE, "rtol": 0.0, "maxiter": LONG}
    family = model.family
    sets = []
    for index, (label, changes) in enumerate(TEST_SETS.items()):
        shifted = type(family)(**{**family.config(), **changes})
        sets.append(ShiftedSet("none" if not changes else label,
                               shifted.sample(count, seed=settings.seed + 400 + index), options))
    return sets
