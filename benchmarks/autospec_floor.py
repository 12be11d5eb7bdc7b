"""How far below Richardson can any polynomial method get at a given budget of products?

The AutoSpec issue's bar (a) asks the learned polynomial for a median residual 10 times below
Richardson's at equal products. MINRES after the same number of products is the smallest
residual any method whose iterate is ``q(A) b`` can reach on that ``b``
(:func:`metasolve.probes.minimal_residual`), so where its median is above a tenth of
Richardson's the bar cannot be met at that budget by any method, learned or classical. This
script prints, for transfer operators of ``metasolve reproduce autospec-linear`` (same
right-hand sides and probes) and budgets of total products ``K + s``: Richardson with the
probe's step, Chebyshev on the probe's interval, the MINRES floor, and the ratios to
Richardson:

    python benchmarks/autospec_floor.py                               # elasticity, random SPD
    python benchmarks/autospec_floor.py --operators poisson2d-320 --budgets 160   # 1 min
"""

from __future__ import annotations

import argparse

import torch

import metasolve as ms
from metasolve.evaluation.spectral import TRANSFER, evaluation_sets, linear_baselines
from metasolve.experiments import autospec_linear
from metasolve.probes import minimal_residual


def main(argv=None) -> None:
    names = [op.name for op in TRANSFER]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--operators", nargs="+", default=names[3:], choices=names)
    parser.add_argument("--budgets", nargs="+", type=int, default=[160, 320, 640])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = autospec_linear.FULL
    s = settings.probe_steps
    if min(args.budgets) <= s:
        raise ValueError(f"--budgets must exceed the probe's {s} products, got {args.budgets}")
    family = ms.SpectrumFamily(size=settings.size, probe_steps=settings.probe_steps)
    # All of them, then the chosen: a set's right-hand sides depend on its place in TRANSFER.
    sets = [item for item in evaluation_sets(family, TRANSFER, 1, settings.rhs_per_operator,
                                             settings.seed)[1:] if item[0] in args.operators]
    print("operator, products K + s: median relative residual of Richardson (probe step), "
          "Chebyshev (probe interval), MINRES (the floor); floor / Richardson")
    for name, tasks, extremes in sets:
        for budget in args.budgets:
            base = linear_baselines(tasks, extremes, budget - s, s)
            floor = minimal_residual(tasks.problem.matvec, tasks.problem.rhs, budget).median()
            richardson = base["richardson"].median()
            chebyshev = base["chebyshev-estimated"].median()
            print(f"{name:20s} {budget:5d}: Richardson {richardson:.2e}  Chebyshev (probe) "
                  f"{chebyshev:.2e}  floor {floor:.2e}  floor / Richardson "
                  f"{floor / richardson:.3g}  Chebyshev / Richardson "
                  f"{chebyshev / richardson:.3g}", flush=True)


if __name__ == "__main__":
    main()
