"""R2N2 on small linear systems against GMRES (R2N2 paper, sec. 4.1, Figures 4-6, SM3.1, SM4).

* Tasks: ``A x = b`` with ``m = 5``, ``A`` from the paper's matrices (regenerated from the
  recipes of SM2.1 by :func:`~metasolve.tasks.matrix_set.r2n2_matrices`; the printed values did
  not survive extraction), ``b = b~ + U(-1, 1)^5`` with the paper's ``b~``, ``x_0 = 0``.
* R2N2 with ``n = 4`` layers, ``f(x) = A x - b``: one outer iteration returns a step in the
  4-dimensional Krylov space ``K_4(A, r_k)`` built from 3 new function evaluations (4 with the
  residual at the new iterate). GMRES(4) (SciPy) minimises the residual over the same space; one
  restart cycle is one outer iteration (SciPy spends 5-6 products on it: the initial residual, 4
  Arnoldi steps, and the residual of the result).
* Cells: ``a1`` trains on ``A_1`` alone with ``T = 1`` (Figure 4a); ``a123`` on ``A_1``-``A_3``
  with ``T = 1`` (Figure 4b); ``multi`` on ``A_1``-``A_3`` with ``T = 3`` and ``w_k = 4^k``
  (eq. 18), run for 5 outer iterations (Figure 5) and on the extrapolation sets of SM3.1 (right-
  hand sides ``U(-5, 5)^5``; shifted diagonals ``A_4``-``A_7``; random symmetric ``A_8``-``A_11``;
  noisier ``A_12``-``A_19``), the 15-dimensional Haar-rotated embedding (eq. 20, Figure 6), and
  the SM4 certificate ``||I + sum_j zeta_j A^j||_2`` for every matrix.
* Metric (eq. 19): the residual reduction ``Delta r = ||b|| - ||A x_1 - b||`` of the R2N2 over
  GMRES's; GMRES minimises over the same space, so the ratio is at most 1.

The loss divides each residual by ``||b||`` (eq. 18 does not): the right-hand sides all have
norm near ``||b~|| = 9.4``, so this only rescales the loss.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..baselines import gmres_history
from ..catalog import CATALOG
from ..evaluation.records import record
from ..evaluation.render import (
    LOWER,
    Table,
    below,
    find_record,
    format_record,
    panels,
    set_title,
)
from ..evaluation.shifts import ShiftedSet
from ..learned import constant_weights, frozen_r2n2, r2n2_solver
from ..problems import LinearSystem
from ..solvers import run
from ..tasks import MatrixSetFamily, make_splits, r2n2_matrices
from ..tasks.matrix_set import PAPER_RHS_MEAN
from ..training import WeightedResidualLoss
from .common import job_settings
from .r2n2_common import Settings, full_batch_adam, train_r2n2

NAME = "r2n2-linear"
TITLE = CATALOG[NAME].title
LAYERS = 4
OUTER = 5
EMBED_DIM = 15
FOUR = "{:.4f}"  # the ratios sit just below 1

#: SM4: the certificate norms printed for the paper's Figure-5 R2N2 (its own matrices).
PAPER_CERTIFICATE = {"A1": 0.0163, "A6": 0.5315, "A7": 2.5397, "A11": 0.9948}
CELLS = ("multi", "a123", "a1")  # the longest first, so a pool stays busy
GROUPS = {"shifted diagonal": ("A4", "A5", "A6", "A7"),
          "random symmetric": ("A8", "A9", "A10", "A11"),
          "noisier base": tuple(f"A{i}" for i in range(12, 20))}

FULL = Settings(train=1400, validation=200, test=600,
                training=full_batch_adam(epochs=4000, batch_size=1400, lr=1e-2),
                lbfgs_iterations=500, extra={"rhs_extrapolation": 500})
QUICK = replace(FULL, train=700, validation=100, test=300,
                training=replace(FULL.training, epochs=800, batch_size=700),
                lbfgs_iterations=200, extra={"rhs_extrapolation": 200})
SMOKE = replace(FULL, train=40, validation=10, test=20,
                training=replace(FULL.training, epochs=3, batch_size=40), lbfgs_iterations=3,
                extra={"rhs_extrapolation": 10})
SCALES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def _family(names, matrices) -> MatrixSetFamily:
    return MatrixSetFamily(torch.stack([matrices[k] for k in names]), PAPER_RHS_MEAN)


def _r2n2_history(method, problem) -> np.ndarray:
    with torch.no_grad():
        solution = run(method, problem, fixed_iterations=OUTER, rtol=0.0)
    return solution.residual_history.numpy()


def _curve_records(cell, label, method_name, residual, reference, **extra) -> list[dict]:
    relative = residual / reference
    return [record(NAME, method_name, "mean_relative_residual", float(relative[k].mean()),
                   cell=cell, set=label, iteration=k, **extra) for k in range(relative.shape[0])]


def _ratio_records(cell, label, r2n2_residual, gmres_residual, **extra) -> tuple[list, np.ndarray]:
    """Eq. (19) after one outer iteration: ``Delta r_R2N2 / Delta r_GMRES`` per instance."""
    start = gmres_residual[0]
    ratio = (start - r2n2_residual[1]) / (start - gmres_residual[1])
    stats = {"delta_r_ratio_mean": ratio.mean(), "delta_r_ratio_min": ratio.min(),
             "delta_r_ratio_max": ratio.max(),
             "delta_r_ratio_at_most_one": float((ratio <= 1 + 1e-9).mean())}
    return [record(NAME, "r2n2", metric, value, cell=cell, set=label, **extra)
            for metric, value in stats.items()], ratio


def run_cell(job: dict) -> dict:
    settings: Settings = job_settings(job)
    cell = job["cell"]
    out = Path(job["out_dir"])
    matrices = r2n2_matrices(seed=settings.seed)
    names = ("A1",) if cell == "a1" else ("A1", "A2", "A3")
    family = _family(names, matrices)
    splits = make_splits(family, settings.train, settings.validation, settings.test,
                         seed=settings.seed)
    train_outer = 3 if cell == "multi" else 1
    loss = WeightedResidualLoss(train_outer, growth=4.0 if cell == "multi" else 1.0)
    solver = r2n2_solver(family, LAYERS, seed=settings.seed)
    info = train_r2n2(solver, loss, splits, settings,
                      out / "checkpoints" / f"{cell}.safetensors", job.get("progress", False))
    solver.settings.update({"experiment": NAME, "cell": cell, "scale": job.get("scale")})
    solver.save(out / "models" / f"{cell}.safetensors")
    method = frozen_r2n2(solver)
    extra = {"train_outer": train_outer, **info}
    records, figure = [], {"cell": cell, "weights": constant_weights(solver)}

    test = splits.test.problem
    gmres = gmres_history(test.matrix, test.rhs, LAYERS, OUTER)
    r2n2 = _r2n2_history(method, test)
    records.append(record(NAME, "gmres", "matvecs_per_cycle", float(gmres["matvecs"].mean()),
                          cell=cell, **extra))
    records.append(record(NAME, "r2n2", "evaluations_per_iteration",
                          method.evaluations_per_iteration, cell=cell, **extra))
    groups = {k: np.array([bool(torch.equal(test.matrix[i], matrices[k]))
                           for i in range(test.batch_size)]) for k in names}
    figure["ratios"] = {}
    for label, mask in groups.items():
        recs, ratio = _ratio_records(cell, label, r2n2[:, mask], gmres["residual"][:, mask],
                                     **extra)
        records += recs
        figure["ratios"][label] = ratio.tolist()

    if cell == "multi":
        records += _multi_records(method, test, r2n2, gmres, groups["A1"], matrices, settings,
                                  figure, extra)
    return {"cell": cell, "records": records, "figure": figure, "label": cell}


def _multi_records(method, test, r2n2, gmres, on_a1, matrices, settings, figure, extra):
    """Figure 5, SM3.1, SM4 and Figure 6 for the R2N2 trained on 3 outer iterations."""
    cell = "multi"
    records = []
    norms = np.linalg.norm(test.rhs.numpy(), axis=1)
    a1_r2n2, a1_gmres = r2n2[:, on_a1], gmres["residual"][:, on_a1]
    records += _curve_records(cell, "A1", "r2n2", a1_r2n2, norms[on_a1], **extra)
    records += _curve_records(cell, "A1", "gmres", a1_gmres, norms[on_a1], **extra)
    decreasing = np.all(np.diff(a1_r2n2, axis=0) < 0, axis=0)
    records.append(record(NAME, "r2n2", "monotone_fraction", float(decreasing.mean()),
                          cell=cell, set="A1", **extra))
    figure["curves"] = {"A1": (a1_r2n2 / norms[on_a1]).mean(axis=1).tolist(),
                        "A1 GMRES(4)": (a1_gmres / norms[on_a1]).mean(axis=1).tolist()}

    # SM3.1: arbitrary right-hand sides U(-5, 5)^5 on A_1.
    g = torch.Generator().manual_seed(settings.seed + 1)
    count = settings.extra["rhs_extrapolation"]
    rhs = 10 * torch.rand(count, 5, generator=g, dtype=torch.float64) - 5
    problem = LinearSystem(matrices["A1"], rhs)
    history = _r2n2_history(method, problem)
    records += _curve_records(cell, "A1, b ~ U(-5,5)", "r2n2", history,
                              np.linalg.norm(rhs.numpy(), axis=1), **extra)
    figure["curves"]["A1, b ~ U(-5,5)"] = (history / np.linalg.norm(rhs.numpy(), axis=1)).mean(
        axis=1).tolist()

    # SM3.1 and SM4: every matrix with the test right-hand sides; the certificate of each.
    rhs = test.rhs[on_a1]
    figure["extrapolation"] = {}
    for name in ("A1", "A2", "A3", *[k for group in GROUPS.values() for k in group]):
        history = _r2n2_history(method, LinearSystem(matrices[name], rhs))
        relative = history / np.linalg.norm(rhs.numpy(), axis=1)
        cert = method.certificate(matrices[name])
        setting = {"cell": cell, "set": name, **extra}
        records.append(record(NAME, "r2n2", "certificate_norm", cert.norm,
                              PAPER_CERTIFICATE.get(name), **setting))
        records.append(record(NAME, "r2n2", "certificate_spectral_radius",
                              cert.spectral_radius, **setting))
        records.append(record(NAME, "r2n2", "final_mean_relative_residual",
                              float(relative[-1].mean()), **setting))
        figure["extrapolation"][name] = relative.mean(axis=1).tolist()

    # Figure 6: the Haar-rotated 15-dimensional embedding Q A_1 Q^T x = Q b (eq. 20).
    from scipy.stats import ortho_group

    q = torch.from_numpy(ortho_group.rvs(EMBED_DIM, random_state=settings.seed))
    padded = torch.zeros(EMBED_DIM, EMBED_DIM, dtype=torch.float64)
    padded[:5, :5] = matrices["A1"]
    rhs15 = torch.zeros(rhs.shape[0], EMBED_DIM, dtype=torch.float64)
    rhs15[:, :5] = rhs
    embedded = LinearSystem(q @ padded @ q.T, rhs15 @ q.T)
    history = _r2n2_history(method, embedded)
    base = gmres_history(embedded.matrix, embedded.rhs, LAYERS, OUTER)["residual"]
    norms15 = np.linalg.norm(rhs.numpy(), axis=1)
    records += _curve_records(cell, "Q A1 Q^T (15-dim)", "r2n2", history, norms15, **extra)
    records += _curve_records(cell, "Q A1 Q^T (15-dim)", "gmres", base, norms15, **extra)
    figure["embedding"] = {"R2N2": (history / norms15).mean(axis=1).tolist(),
                           "GMRES(4)": (base / norms15).mean(axis=1).tolist()}
    return records


def cells(settings: Settings) -> list[dict]:
    return [{"cell": cell} for cell in CELLS]


def _get(records, metric, method="r2n2", **where):
    return find_record(records, NAME, metric, method, **where)


def _rows(records):
    rows = []
    for cell, label in (("a1", "A1"), ("a123", "A1"), ("a123", "A2"), ("a123", "A3"),
                        ("multi", "A1")):
        if _get(records, "delta_r_ratio_mean", cell=cell, set=label) is None:
            continue
        rows.append([f"one iteration, trained on {'A1' if cell == 'a1' else 'A1-A3'}"
                     f"{' (T=3)' if cell == 'multi' else ''}", label,
                     format_record(_get(records, "delta_r_ratio_mean", cell=cell, set=label),
                                   FOUR),
                     format_record(_get(records, "delta_r_ratio_min", cell=cell, set=label),
                                   FOUR),
                     format_record(_get(records, "delta_r_ratio_max", cell=cell, set=label),
                                   FOUR),
                     format_record(_get(records, "delta_r_ratio_at_most_one", cell=cell,
                                        set=label))])
    return rows


def _curve_rows(records):
    rows = []
    for label, method in (("A1", "r2n2"), ("A1", "gmres"), ("A1, b ~ U(-5,5)", "r2n2"),
                          ("Q A1 Q^T (15-dim)", "r2n2"), ("Q A1 Q^T (15-dim)", "gmres")):
        values = [_get(records, "mean_relative_residual", method, cell="multi", set=label,
                       iteration=k) for k in range(OUTER + 1)]
        if all(v is None for v in values):
            continue
        monotone = _get(records, "monotone_fraction", method, cell="multi", set=label)
        rows.append([f"{'R2N2' if method == 'r2n2' else 'GMRES(4)'}: {label}",
                     *[format_record(v, "{:.2e}") for v in values],
                     format_record(monotone)])
    return rows


def _certificate_rows(records):
    rows = []
    for name in ("A1", "A2", "A3", *[k for group in GROUPS.values() for k in group]):
        norm = _get(records, "certificate_norm", cell="multi", set=name)
        if norm is None:
            continue
        radius = _get(records, "certificate_spectral_radius", cell="multi", set=name)
        rows.append([name, format_record(norm, FOUR), format_record(radius, FOUR),
                     format_record(_get(records, "final_mean_relative_residual", cell="multi",
                                        set=name), "{:.2e}")])
    return rows


HEADS = (["R2N2", "test set", "mean Delta r / Delta r_GMRES", "min", "max", "fraction <= 1"],
         ["mean ‖r_k‖ / ‖b‖", *[f"k={k}" for k in range(OUTER + 1)],
          "monotone decrease (fraction)"],
         ["matrix", "certificate ‖M‖_2: ours (paper)", "spectral radius",
          f"mean ‖r_{OUTER}‖ / ‖b‖"])


def tables(records: list[dict]) -> list[Table]:
    return [Table(f"{TITLE}\nFigure 4: one outer iteration, residual reduction over GMRES(4)'s",
                  HEADS[0], _rows(records), 2),
            Table("Figure 5 / 6: R2N2 trained on T=3 outer iterations (w_k = 4^k), "
                  "restarted GMRES(4)", HEADS[1], _curve_rows(records)),
            Table("SM4 certificate and SM3.1 extrapolation (R2N2 trained on T=3)", HEADS[2],
                  _certificate_rows(records))]


ROWS = (("a1", "A1"), ("a123", "A1"), ("a123", "A2"), ("a123", "A3"), ("multi", "A1"))
CURVES = {("A1", "r2n2"): ("R2N2 on A1", "-o"), ("A1", "gmres"): ("GMRES(4) on A1", "-*"),
          ("A1, b ~ U(-5,5)", "r2n2"): ("R2N2 on A1, b ~ U(-5, 5)", "--s"),
          ("Q A1 Q^T (15-dim)", "r2n2"): ("R2N2 on Q A1 Q^T (15-dim)", ":x"),
          ("Q A1 Q^T (15-dim)", "gmres"): ("GMRES(4) on Q A1 Q^T (15-dim)", ":+")}


def figure(results: list[dict]):
    """Figure 4 (the residual reduction of one outer iteration over GMRES(4)'s: mean and range
    per test set, and, when the run's per-instance ratios are at hand, every instance), Figures
    5-6 (mean relative residual per outer iteration; the run's extrapolations to A4-A19 when at
    hand) and SM4 (certificate against the residual after 5 iterations, per matrix)."""
    records = [r for result in results for r in result["records"] if r["experiment"] == NAME]
    rows = [(cell, label) for cell, label in ROWS
            if _get(records, "delta_r_ratio_mean", cell=cell, set=label) is not None]
    if not rows:
        return None
    figures = {r["cell"]: r["figure"] for r in results if "figure" in r}
    ratios = [cell for cell in ("a1", "a123") if figures.get(cell, {}).get("ratios")]
    curves = [key for key in CURVES
              if _get(records, "mean_relative_residual", key[1], cell="multi", set=key[0])]
    certified = [name for name in ("A1", "A2", "A3", *[k for g in GROUPS.values() for k in g])
                 if _get(records, "certificate_norm", cell="multi", set=name)]
    fig, axes = panels(1 + bool(curves) + bool(certified) + len(ratios), size=(5.6, 4.4),
                       title=TITLE)
    ax, axes = axes[0], axes[1:]
    y = np.arange(len(rows))[::-1]
    stats = [[_get(records, m, cell=cell, set=label)["value"]
              for m in ("delta_r_ratio_mean", "delta_r_ratio_min", "delta_r_ratio_max")]
             for cell, label in rows]
    means = np.array([s[0] for s in stats])
    spread = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
    ax.errorbar(means, y, xerr=spread, fmt="o", color="tab:red", capsize=3,
                label="R2N2: mean, bars from min to max")
    ax.axvline(1.0, color="tab:blue", linestyle="--", linewidth=1,
               label="GMRES(4)'s reduction (the bound)")
    ax.set_yticks(y, [f"trained on {'A1' if cell == 'a1' else 'A1-A3'}"
                      f"{', T=3' if cell == 'multi' else ''}; test {label}"
                      for cell, label in rows])
    ax.set_xlabel("Delta r_R2N2 / Delta r_GMRES after one outer iteration")
    ax.set_ylabel("training; test matrix")
    set_title(ax, "Fig. 4: residual reduction over GMRES(4)'s",
              "higher is better, at most 1")
    below(ax, columns=1)
    if curves:
        ax, axes = axes[0], axes[1:]
        for name, curve in figures.get("multi", {}).get("extrapolation", {}).items():
            if name not in ("A1", "A2", "A3"):
                ax.semilogy(curve, ":", color="lightcoral", linewidth=1,
                            label="R2N2 on A4-A19 (one line each)")
        for key in curves:
            label, style = CURVES[key]
            values = [_get(records, "mean_relative_residual", key[1], cell="multi", set=key[0],
                           iteration=k) for k in range(OUTER + 1)]
            ax.semilogy([np.nan if v is None else v["value"] for v in values], style,
                        label=label, markersize=5)
        ax.axvspan(3, OUTER, color="0.9", label="beyond the 3 trained iterations")
        ax.set_ylim(1e-10, 1e4)  # the divergent extrapolations leave the frame
        ax.set_xlabel("outer iteration k")
        ax.set_ylabel("mean ||r_k|| / ||b||")
        set_title(ax, "Figs. 5-6: trained on T = 3 outer iterations", LOWER)
        below(ax, columns=2)
    if certified:
        ax, axes = axes[0], axes[1:]
        norms = [_get(records, "certificate_norm", cell="multi", set=n)["value"]
                 for n in certified]
        finals = [_get(records, "final_mean_relative_residual", cell="multi", set=n)["value"]
                  for n in certified]
        ax.loglog(norms, finals, "o", color="tab:red", label="R2N2 (trained on A1-A3, T=3)")
        for name, x, value in zip(certified, norms, finals, strict=True):
            ax.annotate(name, (x, value), xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.axvline(1.0, color="black", linestyle="--", linewidth=1,
                   label="certificate 1: contraction below it")
        ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1, label="the start, ||r_0|| / ||b||")
        ax.set_xlabel("certificate ||I + sum_j zeta_j A^j||_2")
        ax.set_ylabel(f"mean ||r_{OUTER}|| / ||b||")
        set_title(ax, "SM4: the certificate predicts convergence", LOWER)
        below(ax, columns=1)
    for ax, cell in zip(axes, ratios, strict=True):
        for label, ratio in figures[cell]["ratios"].items():
            ax.plot(ratio, ".", markersize=3, label=f"test instances of {label}")
        ax.axhline(1.0, color="tab:blue", linestyle="--", linewidth=1,
                   label="GMRES(4)'s reduction (the bound)")
        ax.set_xlabel("test instance")
        ax.set_ylabel("Delta r_R2N2 / Delta r_GMRES")
        set_title(ax, f"Fig. 4{'a' if cell == 'a1' else 'b'}: trained on "
                      f"{'A1' if cell == 'a1' else 'A1-A3'}, every instance",
                  "higher is better, at most 1")
        below(ax, columns=2)
    return fig


def shifted_sets(settings: Settings, model, count: int = 200) -> list[ShiftedSet]:
    """The model's own matrices, then the collection's other groups: the shifted diagonals
    (A4-A7; the paper's R2N2 diverges on A7), the random symmetric matrices (A8-A11) and the
    noisier bases (A12-A19), each solved to 1e-8 relative within 100 outer iterations
    (``metasolve reproduce r2n2-linear --shift ood``)."""
    matrices = r2n2_matrices(seed=settings.seed)
    options = {"rtol": 1e-8, "maxiter": 100}
    sets = [ShiftedSet("none", model.family.sample(count, seed=settings.seed + 301), options)]
    for i, (label, names) in enumerate(GROUPS.items()):
        sets.append(ShiftedSet(label, _family(names, matrices).sample(
            count, seed=settings.seed + 302 + i), options))
    return sets
