"""The safeguard's rate test on the H-equation's extrapolation set, per value of ``c``: the saved
R2N2 of a ``metasolve reproduce r2n2-chandrasekhar`` run, unguarded, safeguarded and
Newton-Krylov alone, on the ``c in {0.85, 0.95}`` set of ``--shift ood`` (the same tasks and
options).

    metasolve reproduce r2n2-chandrasekhar --quick --shift ood
    python benchmarks/safeguard_rate_test.py metasolve-out quick

Prints, per ``c``: the instances, the share flagged out of distribution, the share the rate test
handed over to Newton-Krylov, and the mean outer iterations of the three solves.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

import metasolve as ms
from metasolve.experiments import r2n2_chandrasekhar as experiment

SET = "c in {0.85, 0.95}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of the reproduce run")
    parser.add_argument("scale", help="the scale it ran at (quick, full, ...)")
    args = parser.parse_args(argv)
    model = ms.load(args.out / experiment.NAME / args.scale / "models" / "r2n2.safetensors")
    shifted = next(s for s in experiment.shifted_sets(experiment.SCALES[args.scale], model)
                   if s.shift == SET)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = model.solve(shifted.tasks, safeguard=False, **shifted.options)
        guarded = model.solve(shifted.tasks, **shifted.options)
        classical = model.solve_baseline(shifted.tasks, **shifted.options)
    c = shifted.tasks.problem.c
    print("| c | instances | out of distribution | handed over | unguarded | safeguarded | "
          "Newton-Krylov |")
    print("|---|---|---|---|---|---|---|")
    for value in c.unique().tolist():
        m = c == value
        cells = [f"{value:g}", str(int(m.sum())),
                 f"{guarded.out_of_distribution[m].double().mean():.1%}",
                 f"{guarded.info['rate_handover'][m].double().mean():.1%}",
                 *(f"{s.iterations[m].double().mean():.2f}" for s in (raw, guarded, classical))]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
