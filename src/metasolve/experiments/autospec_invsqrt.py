"""AutoSpec task (c): a learned polynomial approximation of ``A^{-1/2} b``, trained on small
synthetic spectra and applied unchanged to large sparse SPD matrices (AutoSpec summary; the
issue's task (c)).

* Probe: subspace iteration (the summary's probe for this task,
  :func:`metasolve.probes.subspace_probe`), a block of ``s = 8`` random vectors and 3
  iterations: ``8 * 4 = 32`` products. Its Ritz values sit near the top of the spectrum, so the
  probe's interval misses the bottom by orders of magnitude on ill-conditioned operators; the
  engine's lower end may move down by up to ``1e6``.
* Engine: :class:`~metasolve.learned.autospec.AutoSpecEngine` with paradigm ``"invsqrt"``: a
  Chebyshev series of ``d = 40`` terms (degree 39; its 40 steps cost 40 products, as 40
  Lanczos steps do;
  :class:`~metasolve.solvers.chebyshev_expansion.ChebyshevSeries`) on a learned interval, its
  values at the Chebyshev nodes ``t^{-1/2}`` times smooth learned factors. Untrained, it is the
  Chebyshev interpolant of ``t^{-1/2}`` on the probe's interval.
* Loss: ``log(||x - A^{-1/2} b|| / ||A^{-1/2} b||)`` on the training spectra (the log of the
  issue's relative error, so that operators of every conditioning count).
* Baselines at equal degree: the Chebyshev interpolant of ``t^{-1/2}`` on the probe's interval
  (the issue's bar), the same on the interval of a Lanczos probe with as many products as the
  subspace probe (``32`` steps; Lanczos finds the bottom of the spectrum far better, so this is
  the classical method a numerical analyst would use), the same on the exact extreme
  eigenvalues (an oracle), and the Lanczos approximation ``||b|| V f(T) e_1`` with ``d``
  products (adaptive, for reference).
* Exact answers: a sine transform for the grid Laplacians, a dense eigendecomposition for the
  others, and ``lambda^{-1/2} b`` for the diagonal operators.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..catalog import CATALOG
from ..evaluation.metrics import TIE_RTOL, compare_instances, comparison_records
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
    SYNTHETIC,
    TRANSFER,
    TRANSFER_SMOKE,
    evaluation_sets,
    inverse_sqrt_baselines,
    relative_error,
)
from ..tasks import SpectrumFamily
from ..training import TrainingConfig
from .autospec_common import spectral_shifted_sets, train_engine
from .common import job_settings

NAME = "autospec-invsqrt"
TITLE = CATALOG[NAME].title
METHODS = ("chebyshev-estimated", "chebyshev-lanczos", "chebyshev-exact", "lanczos", "learned")
LABELS = {"chebyshev-estimated": "Chebyshev interpolant (probe interval)",
          "chebyshev-lanczos": "Chebyshev interpolant (Lanczos-probe interval)",
          "chebyshev-exact": "Chebyshev interpolant (exact interval)",
          "lanczos": "Lanczos f(A)b (adaptive)", "learned": "learned series"}


@dataclass(frozen=True)
class Settings:
    size: int = 256
    block: int = 8
    probe_iterations: int = 3
    degree: int = 40
    hidden: tuple[int, ...] = (64, 64)
    n_train: int = 8192
    n_validation: int = 512
    n_test: int = 512
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(
        epochs=40, batch_size=128, lr=1e-3, plateau_patience=5, grad_clip=1.0,
        betas=(0.999, 0.999)))
    transfer: tuple = TRANSFER
    rhs_per_operator: int = 8
    lower_range: float = math.log(1e6)
    seed: int = 0


FULL = Settings()
QUICK = replace(FULL, n_train=1024, n_validation=256, n_test=256,
                training=replace(FULL.training, epochs=10))
SMOKE = replace(FULL, size=48, block=4, probe_iterations=1, degree=10, hidden=(16,),
                n_train=32, n_validation=16, n_test=16, transfer=TRANSFER_SMOKE,
                rhs_per_operator=2, training=replace(FULL.training, epochs=2, batch_size=16))
SCALES = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


def _family(settings: Settings) -> SpectrumFamily:
    return SpectrumFamily(size=settings.size, probe_steps=settings.block, probe="subspace",
                          probe_iterations=settings.probe_iterations, function="inverse-sqrt")


def solve_baselines(tasks, extremes, settings: Settings) -> dict[str, torch.Tensor]:
    return inverse_sqrt_baselines(tasks, extremes, settings.degree, settings.block,
                                  _family(settings).probe_matvecs, settings.seed + 7)


def run_cell(job: dict) -> dict:
    settings: Settings = job_settings(job)
    out = Path(job["out_dir"])
    family = _family(settings)
    sets = evaluation_sets(family, settings.transfer, settings.n_test,
                           settings.rhs_per_operator, settings.seed)
    extra = {"degree": settings.degree, "probe_matvecs": family.probe_matvecs,
             "size": settings.size, "n_test": settings.n_test}
    start = time.perf_counter()
    solver, info = train_engine(family, settings.degree, "invsqrt", settings.hidden,
                                settings.n_train, settings.n_validation, settings.training,
                                settings.seed, out / "checkpoints" / "invsqrt.safetensors",
                                job.get("progress", False), lower_range=settings.lower_range)
    info["train_seconds"] = time.perf_counter() - start
    solver.settings.update({"experiment": NAME, "scale": job.get("scale")})
    solver.save(out / "models" / "invsqrt.safetensors")
    extra = {**extra, **info, "lr": settings.training.lr}
    records, scatter = [], {}
    with torch.no_grad():
        for name, tasks, extremes in sets:
            errors = solve_baselines(tasks, extremes, settings)
            solution = solver.solve(tasks, fixed_iterations=settings.degree, rtol=0.0,
                                    divergence_factor=1e300, safeguard=False)
            errors["learned"] = relative_error(tasks.problem, solution.x)
            cell = {**extra, "operator": name}
            for method, values in errors.items():
                records.append(record(NAME, method, "median_relative_error",
                                      float(values.median()), **cell))
            records += [
                *comparison_records(NAME, "learned", "chebyshev_lanczos",
                                    compare_instances(errors["learned"],
                                                      errors["chebyshev-lanczos"]), **cell),
                *comparison_records(NAME, "learned", "chebyshev_estimated",
                                    compare_instances(errors["learned"],
                                                      errors["chebyshev-estimated"]), **cell),
                record(NAME, "learned", "median_ratio_to_chebyshev_estimated",
                       float(errors["learned"].median() / errors["chebyshev-estimated"].median()),
                       **cell),
                record(NAME, "learned", "median_ratio_to_chebyshev_exact",
                       float(errors["learned"].median() / errors["chebyshev-exact"].median()),
                       **cell)]
            if name == SYNTHETIC:
                kappa = extremes[:, 1] / extremes[:, 0]
                scatter = {"kappa": kappa.tolist(),
                           **{m: v.tolist() for m, v in errors.items()}}
    return {"records": records, "scatter": scatter, "label": "invsqrt"}


def _value(records, method, metric, operator):
    for r in records:
        if (r["experiment"] == NAME and r["method"] == method and r["metric"] == metric
                and r["operator"] == operator):
            return r["value"]
    return None


def _lines(records):
    records = [r for r in records if r["experiment"] == NAME]
    operators = setting_values(records, NAME, "operator")
    against = f"better / tied / worse than Chebyshev ({{}}), ties within {TIE_RTOL:.0%}"
    head = ["operator", *(LABELS[m] for m in METHODS), "learned / Chebyshev (probe)",
            against.format("probe"), against.format("Lanczos probe")]
    body = []
    for op in operators:
        cells = [_value(records, m, "median_relative_error", op) for m in METHODS]
        ratio = _value(records, "learned", "median_ratio_to_chebyshev_estimated", op)
        counts = [format_comparison(records, NAME, "learned", against, operator=op)
                  for against in ("chebyshev_estimated", "chebyshev_lanczos")]
        body.append([op, *("-" if c is None else f"{c:.2e}" for c in cells),
                     "-" if ratio is None else f"{ratio:.3g}", *counts])
    return head, body


def tables(records: list[dict]) -> list[Table]:
    own = [r for r in records if r["experiment"] == NAME]
    degree = next((r["degree"] for r in own), "?")
    probe = next((r["probe_matvecs"] for r in own), "?")
    return [Table(f"{TITLE}\nmedian relative error at degree {int(degree) - 1} "
                  f"({int(degree)} products after a {probe}-product subspace probe)",
                  *_lines(records))]


def figure(results: list[dict]):
    """The median relative error per operator and method (from the records) and, when the run's
    per-instance errors are at hand (not in the records), the error against the condition
    number on the held-out synthetic spectra."""
    records = [r for result in results for r in result["records"] if r["experiment"] == NAME]
    operators = setting_values(records, NAME, "operator", "median_relative_error")
    if not operators:
        return None
    scatter = next((r["scatter"] for r in results if r.get("scatter")), None)
    fig, axes = panels(1 + (scatter is not None), columns=1, size=(9.0, 4.6), title=TITLE)
    ax = axes[0]
    markers = dict(zip(METHODS, "os^v*", strict=True))
    for j, m in enumerate(METHODS):
        values = [_value(records, m, "median_relative_error", op) for op in operators]
        learned = m == "learned"
        ax.plot(np.arange(len(operators)) + 0.08 * (j - len(METHODS) / 2),
                [np.nan if v is None else v for v in values], linestyle="none",
                marker=markers[m], markersize=10 if learned else 6,
                markerfacecolor=None if learned else "none", label=LABELS[m])
    ax.set_yscale("log")
    ax.set_xticks(range(len(operators)), operators, rotation=25, ha="right")
    ax.set_xlabel("operator (synthetic: held-out training spectra)")
    ax.set_ylabel("median relative error of A^(-1/2) b")
    set_title(ax, "Median relative error at equal degree", LOWER)
    beside(ax)
    if scatter is not None:
        ax = axes[1]
        for m in METHODS:
            ax.scatter(scatter["kappa"], np.maximum(scatter[m], 1e-17), s=6, label=LABELS[m],
                       alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("condition number of the synthetic operator")
        ax.set_ylabel("relative error of A^(-1/2) b")
        set_title(ax, "Held-out synthetic spectra, one point per instance", LOWER)
        beside(ax)
    return fig


#: Sets outside the training distribution (``--shift ood``; see ``autospec_common``).
shifted_sets = spectral_shifted_sets
