"""The shifted-set table's fixed-budget rows where a mean is not finite, told apart: the saved
models of a ``metasolve reproduce ... --shift ood`` run on the experiment's shifted sets (the same
tasks, options and three solves as ``--shift ood``, :func:`metasolve.evaluation.shifts.measure`),
with the final relative residuals summarised three ways: the mean over every instance (the
table's, not finite where one instance blows up), the mean over the instances the classical
method solves (its status converged: where it blows up, nothing can be asked of the
safeguard), and the median over every instance (a non-finite result counting as infinite).

    metasolve reproduce r2n2-vanderpol --quick --shift ood --workers 1
    python benchmarks/safeguard_finite_means.py metasolve-out r2n2-vanderpol quick

Prints one row per model and set: the instances, how many blow up (a non-finite final residual)
with each solve and with both the safeguarded solve and the classical method, and the three
summaries for the unguarded, safeguarded and classical solves.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import torch

import metasolve as ms
from metasolve.evaluation.shifts import measure

METHODS = ("unguarded", "safeguarded", "classical")


def _row(model: str, shift: str, measured: dict) -> list[str]:
    costs = {m: measured[f"{m}_cost"] for m in METHODS}
    finite = {m: torch.isfinite(c) for m, c in costs.items()}
    kept = measured["classical_converged"] > 0  # the instances the classical method solves
    both = (~finite["safeguarded"] & ~finite["classical"]).double().mean()
    cells = [model, shift, str(len(kept)),
             ", ".join(f"{(~finite[m]).double().mean():.1%}" for m in METHODS), f"{both:.1%}"]
    for m in METHODS:
        cells.append(f"{costs[m].mean():.2e}" if bool(finite[m].all()) else "-")
    for m in METHODS:
        cells.append(f"{costs[m][kept].mean():.2e}")
    for m in METHODS:
        # A non-finite result counts as +inf (NaN would make the median NaN).
        cells.append(f"{torch.nan_to_num(costs[m], nan=float('inf')).median():.2e}")
    ratio = costs["safeguarded"][kept].mean() / costs["classical"][kept].mean()
    cells.append(f"{ratio:.3f}")
    return cells


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of the reproduce run")
    parser.add_argument("experiment", help="the experiment's name (r2n2-vanderpol, ...)")
    parser.add_argument("scale", help="the scale it ran at (quick, full, ...)")
    args = parser.parse_args(argv)
    module = importlib.import_module(
        "metasolve.experiments." + args.experiment.replace("-", "_"))
    settings = module.SCALES[args.scale]
    models = sorted((args.out / args.experiment / args.scale / "models").glob("*.safetensors"))
    print("| model | set | instances | blow up: unguarded, safeguarded, classical | "
          "safeguarded and classical both | mean: unguarded | safeguarded | classical | "
          "mean where classical solves: unguarded | safeguarded | classical | "
          "median: unguarded | safeguarded | classical | "
          "safeguarded / classical, where classical solves |")
    print("|" + "---|" * 15)
    for path in models:
        model = ms.load(path)
        for shifted in module.shifted_sets(settings, model):
            if shifted.options.get("fixed_iterations") is None:
                continue  # to a tolerance: iteration counts are finite, the table's mean is
            print("| " + " | ".join(_row(path.stem, shifted.shift, measure(model, shifted)))
                  + " |")


if __name__ == "__main__":
    main()
