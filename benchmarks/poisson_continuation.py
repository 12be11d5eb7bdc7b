"""Which start lets ``L~_eps`` train furthest? A diagnostic for the Poisson/Jacobi table.

    python benchmarks/poisson_continuation.py P STAGE [STAGE ...]

Trains the experiment's network (`metasolve.experiments.poisson_jacobi`, seed 0, 1000 training
tasks of the mixture with weight ``P`` on ``P1``) with Gauss-Newton through the given stages in
order, each from the previous stage's weights (the first from the zero guess), and after each
prints the mean Jacobi iterations on the 1000 test tasks to 1e-2, 1e-4, 1e-6 and 1e-8, then
the means at 1e-6 over the test tasks drawn from ``P2`` and from ``P1`` separately. A stage is
``EPS:ITERATIONS`` (the surrogate ``L~_eps`` with the experiment's training cap) or
``mM:ITERATIONS`` (``L_m``), e.g.::

    python benchmarks/poisson_continuation.py 0 1e-6:40              # from the zero guess
    python benchmarks/poisson_continuation.py 0 1e-4:40 1e-6:160     # continuation in eps
    python benchmarks/poisson_continuation.py 0.01 m25:40 1e-6:40    # from the L_25 fit
"""

from __future__ import annotations

import sys
import time

import torch

import metasolve as ms
from metasolve.experiments import poisson_jacobi as experiment


def parse_stage(text: str) -> tuple[tuple, int]:
    what, _, iterations = text.partition(":")
    try:
        row = ("L_m", int(what[1:])) if what.startswith("m") else ("L_eps", float(what))
        count = int(iterations)
        valid = count >= 1 and row[1] > 0
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"stage: expected EPS:ITERATIONS or mM:ITERATIONS with positive "
                         f"numbers (e.g. 1e-6:40, m25:40), got {text!r}")
    return row, count


def main(p: float, stages: list[str]) -> None:
    torch.set_num_threads(1)
    plan = [parse_stage(stage) for stage in stages]
    family = ms.Poisson1DFamily(n=16, p=p)
    splits = ms.make_splits(family, 1000, 1000, 1000, seed=0)
    test = splits.test
    # P2 puts no weight on the first sine mode, P1 does.
    from_p1 = (test.problem.solution @ family.basis)[:, 0].abs() > 1e-8
    torch.manual_seed(0)
    solver = experiment.make_solver(family)
    start = time.perf_counter()
    print(f"p = {p:g}; mean Jacobi iterations to " + ", ".join(
        f"{eps:g}" for eps in experiment.TEST_EPS) + f"; at 1e-6 over P2 and P1 tasks "
        f"({int((~from_p1).sum())} and {int(from_p1.sum())})")
    for stage, (row, iterations) in zip(stages, plan, strict=True):
        trainer = ms.Trainer(solver, experiment.make_loss(row), progress=False)
        trainer.refine_gauss_newton(splits.train, splits.validation,
                                    ms.GaussNewtonConfig(iterations=iterations))
        with torch.no_grad():
            solution = solver.solve(test, rtol=min(experiment.TEST_EPS),
                                    maxiter=experiment.TEST_CAP)
        means = [float(solution.iterations_to(eps).double().mean())
                 for eps in experiment.TEST_EPS]
        at_1e6 = solution.iterations_to(1e-6).double()
        split = [f"{float(at_1e6[mask].mean()):.2f}" if mask.any() else "-"
                 for mask in (~from_p1, from_p1)]
        print(f"then {stage:<12}" + "".join(f"{m:>9.2f}" for m in means)
              + f"   P2 {split[0]}, P1 {split[1]}   ({time.perf_counter() - start:.0f} s)",
              flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(float(sys.argv[1]), sys.argv[2:])
