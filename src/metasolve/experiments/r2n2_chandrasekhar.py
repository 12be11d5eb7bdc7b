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
* Metrics: ``||f(x_k)||`` per outer iteration; at ``k = 1, 2`` the fraction of instances where
  the R2N2's residual is below NK-GMRES's, the median of ``log10(||f_R2N2|| / ||f_NK||)``, and
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
from ..evaluation.records import record
from ..evaluation.render import Table, find_record, format_record, save_figure, subplots
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
        below = np.nan_to_num(r2n2[k], nan=np.inf) < np.nan_to_num(nk[k], nan=np.inf)
        records.append(record(NAME, "r2n2", "fraction_below_nk", float(below.mean()),
                              iteration=k, **setting))
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
                **{f"ratio{k}": _delta_r_ratio(r2n2, nk, k).tolist() for k in (1, 2)}}
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
        if _get(records, "fraction_below_nk", "r2n2", set=label, iteration=1) is None:
            continue
        rows.append([label,
                     *[format_record(_get(records, "fraction_below_nk", "r2n2", set=label,
                                          iteration=k)) for k in (1, 2)],
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


HEADS = (["test set", "R2N2 < NK (k=1)", "R2N2 < NK (k=2)",
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


def plot(results: list[dict], path: Path) -> Path | None:
    """Figure 7 (per-instance residual reduction over NK-GMRES's after 1 and 2 iterations, by
    ``c``; instances where NK-GMRES's ``Delta r <= 0`` are left out) and Figure 8 (median
    residual over 8 outer iterations, every test set)."""
    figure = results[0]["figure"] if results else None
    if not figure:
        return None
    fig, axes = subplots(1, 3, figsize=(15, 4))
    colors = {"training distribution": "tab:red", "c in {0.85, 0.95}": "yellowgreen"}
    for ax, k in zip(axes[:2], (1, 2), strict=True):
        for label, data in figure["scatter"].items():
            jitter = np.random.default_rng(k).uniform(-0.004, 0.004, len(data["c"]))
            ax.plot(np.array(data["c"]) + jitter, data[f"ratio{k}"], ".", markersize=3,
                    color=colors[label], label=label)
        ax.axhline(1.0, color="tab:blue", linewidth=1)
        ax.set_xlabel("c")
        ax.set_ylabel(f"Delta r_{k}: R2N2 / NK-GMRES (where NK's > 0)")
        ax.set_title(f"Fig. 7{'ab'[k - 1]}: after {k} outer iteration(s)", fontsize=9)
        ax.legend(fontsize=7)
    ax = axes[2]
    styles = ["-", "--", "-.", ":", (0, (3, 1, 1, 1))]
    for style, (label, curves) in zip(styles, figure["curves"].items(), strict=False):
        ax.semilogy(curves["r2n2"], linestyle=style, color="tab:red", label=f"R2N2, {label}")
        ax.semilogy(curves["nk_gmres"], linestyle=style, color="tab:blue",
                    label=f"NK-GMRES, {label}")
    ax.axvspan(TRAIN_OUTER, SHOWN, color="0.9")
    ax.set_xlabel("outer (Newton) iteration k")
    ax.set_ylabel("median ||f(x_k)||")
    ax.set_title("Fig. 8: trained on 2 outer iterations", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)
