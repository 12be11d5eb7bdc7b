"""How hard are the beam matrices for ICCG(alpha) on a given mesh? Psi_base and the per-task oracle.

The GBMS paper's Table 2 has an oracle (the best alpha per task) that reaches 1e-6 on every test
task within N iterations. This script measures our `Psi_base` (the smallest alpha for which IC(0)
succeeds on every training task) and the oracle over a quarter-decade grid of alpha from 1e-6
to 1, on any mesh of the beam, with the iteration cap equal to the number of unknowns N:

    python benchmarks/iccg_oracle.py [CELLS] [TEST_TASKS]
    python benchmarks/iccg_oracle.py 8,2,2 48    # the experiment's mesh, N = 243
    python benchmarks/iccg_oracle.py 8,8,2 48    # the paper's "8 x 8 x 2 cuboids", N = 729

Prints N, alpha_base, and for Psi_base and the oracle the mean iterations (a failed
factorization or an unconverged solve counts as N, as in Table 2) and the convergence ratio, then
the oracle's convergence ratio by beam width W and by lambda / mu.
"""

from __future__ import annotations

import sys
import time

import torch

from metasolve.experiments.elasticity_iccg import _constant, _solve, smallest_safe_shift
from metasolve.tasks import ElasticBeamFamily


def main(cells: str = "8,2,2", n_test: int = 48) -> None:
    torch.set_num_threads(1)
    try:
        mesh = tuple(int(c) for c in cells.split(","))
    except ValueError:
        raise ValueError(f"CELLS must be three integers like 8,2,2, got {cells!r}") from None
    family = ElasticBeamFamily(cells=mesh)
    n = family.size
    start = time.perf_counter()
    train = family.sample(96, seed=1)
    params = family.sample_parameters(n_test, torch.Generator().manual_seed(2))
    test = family.tasks(params)
    alpha_base = smallest_safe_shift(train.problem.matrix)
    grid = [10.0 ** (k / 4) for k in range(-24, 1)]
    base = _solve(test.problem, _constant(alpha_base, n_test), n, 250)
    per_alpha = torch.stack([_solve(test.problem, _constant(a, n_test), n, 250) for a in grid])
    best = torch.where(per_alpha >= 0, per_alpha, n + 1).min(0).values
    print(f"cells {mesh}: N = {n}, alpha_base = {alpha_base:.4f}, {n_test} test tasks, "
          f"{time.perf_counter() - start:.0f} s")
    for label, iters, converged in (("Psi_base", torch.where(base >= 0, base, n), base >= 0),
                                    ("oracle", best.clamp_max(n), best <= n)):
        print(f"{label:9s} mean iterations {iters.double().mean():7.2f}   "
              f"convergence ratio {converged.double().mean():.3f}")
    width, ratio = params[:, 0], params[:, 1] / params[:, 2]
    for name, value, edges in (("W", width, (0.003, 0.01, 0.03, 0.1, 0.3)),
                               ("lambda / mu", ratio, (0.01, 0.1, 1.0, 10.0, 100.0))):
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            inside = (value >= low) & (value < high)
            if inside.any():
                print(f"{name} in [{low:g}, {high:g}): oracle converges on "
                      f"{(best[inside] <= n).double().mean():.2f} of {int(inside.sum())} tasks")


if __name__ == "__main__":
    main(*(arg if i == 0 else int(arg) for i, arg in enumerate(sys.argv[1:3])))
