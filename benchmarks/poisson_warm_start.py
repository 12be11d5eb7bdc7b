"""Does ``L~_eps`` train further from a good start? A diagnostic for the Poisson/Jacobi table.

    python benchmarks/poisson_warm_start.py [p] [iterations]

`metasolve reproduce poisson-jacobi` trains every row of Table 3 from the zero guess. Trained so,
the ``L~_eps`` (eps = 1e-6) model's Gauss-Newton steps slow down far above the paper's 32 mean
iterations, while the ``L_m`` (m = 25) fit goes much lower at p = 0. This script trains the same
network with ``L_m`` (m = 25) first and then with ``L~_eps`` (eps = 1e-6), each for
``iterations`` Gauss-Newton iterations on the experiment's 1000 training tasks (seed 0), and
prints the mean Jacobi iterations on the 1000 test tasks to 1e-2, 1e-4, 1e-6 and 1e-8 after
each stage, beside the zero guess's.
"""

from __future__ import annotations

import sys
import time

import torch

import metasolve as ms
from metasolve.experiments import poisson_jacobi as experiment


def main(p: float = 0.0, iterations: int = 40) -> None:
    torch.set_num_threads(1)
    family = ms.Poisson1DFamily(n=16, p=p)
    splits = ms.make_splits(family, 1000, 1000, 1000, seed=0)
    torch.manual_seed(0)
    solver = experiment.make_solver(family)
    start = time.perf_counter()

    def report(label: str, solve) -> None:
        with torch.no_grad():
            solution = solve()
        means = [float(solution.iterations_to(eps).double().mean())
                 for eps in experiment.TEST_EPS]
        print(f"{label:<34}" + "".join(f"{m:>10.2f}" for m in means)
              + f"   ({time.perf_counter() - start:.0f} s)", flush=True)

    print(f"p = {p:g}; mean Jacobi iterations to " + ", ".join(f"{e:g}" for e in
                                                              experiment.TEST_EPS))
    report("zero guess", lambda: ms.run(ms.Jacobi(), splits.test.problem, rtol=1e-8,
                                        maxiter=experiment.TEST_CAP, monitor="error"))
    config = ms.GaussNewtonConfig(iterations=iterations)
    for row in (("L_m", 25), ("L_eps", 1e-6)):
        trainer = ms.Trainer(solver, experiment.make_loss(row), progress=False)
        trainer.refine_gauss_newton(splits.train, splits.validation, config)
        report(f"then {experiment.row_label(row)}",
               lambda: solver.solve(splits.test, rtol=1e-8, maxiter=experiment.TEST_CAP))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(float(args[0]) if args else 0.0, int(args[1]) if len(args) > 1 else 40)
