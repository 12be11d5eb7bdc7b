"""The safeguard on the README's own family: a learned Jacobi initial guess for 1D diffusion
``-(k u')' = 1``, ``k(x) = exp(a sin(pi x))``, trained (as in the README) on ``a ~ U(-1, 1)`` and
solved on ranges of ``a`` inside and outside that interval.

Per range: mean Jacobi iterations to 1e-6 of the learned guess without the safeguard, with it,
and of the zero guess (the classical method); the share of instances where each learned variant
is worse than the zero guess; the fallback share; the out-of-distribution share; and whether
every instance the zero guess solves is solved, with an answer that matches a dense solve.

    python benchmarks/safeguard_diffusion.py [--tasks 200] [--epochs 200]
"""

from __future__ import annotations

import argparse
import math
import warnings

import torch

import metasolve as ms


class Diffusion1D(ms.TaskFamily):
    """The README's family, with the range of ``a`` as a setting."""

    name = "diffusion1d-ranged"

    def __init__(self, n: int = 16, low: float = -1.0, high: float = 1.0):
        self.n, self.low, self.high = n, low, high

    def config(self):
        return {"n": self.n, "low": self.low, "high": self.high}

    @property
    def feature_dim(self):
        return 1

    def sample_with(self, count, generator):
        a = self.low + (self.high - self.low) * torch.rand(count, 1, generator=generator,
                                                           dtype=torch.float64)
        h = 1.0 / (self.n + 1)
        faces = (torch.arange(self.n + 1, dtype=torch.float64) + 0.5) * h
        k = torch.exp(a * torch.sin(math.pi * faces))
        A = (torch.diag_embed(k[:, :-1] + k[:, 1:]) - torch.diag_embed(k[:, 1:-1], 1)
             - torch.diag_embed(k[:, 1:-1], -1)) / h**2
        b = torch.ones(count, self.n, dtype=torch.float64)
        return ms.TaskBatch(ms.LinearSystem(A, b, solution=torch.linalg.solve(A, b)), a)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    family = Diffusion1D()
    splits = ms.make_splits(family, n_train=256, n_validation=64, n_test=64, seed=0)
    psi = ms.NetworkMetaSolver(1, {"x0": ms.IdentityHead(family.n)}, hidden=(32, 32),
                               activation="silu")
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=family, monitor="error")
    ms.Trainer(solver, ms.FixedIterationLoss(m=0),
               ms.TrainingConfig(epochs=args.epochs, batch_size=64, lr=1e-2, betas=(0.9, 0.999)),
               progress=False).fit(splits.train, splits.validation)
    options = {"rtol": 1e-6, "maxiter": 100_000, "monitor": "residual"}
    print("| range of a | learned, unguarded | learned, safeguarded | zero guess | unguarded "
          "worse | safeguarded worse | fallback | out of distribution | all solved, right |")
    print("|---|---|---|---|---|---|---|---|---|")
    for low, high in ((-1.0, 1.0), (2.0, 3.0), (4.0, 6.0), (-6.0, -4.0)):
        tasks = Diffusion1D(low=low, high=high).sample(args.tasks, seed=123)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = solver.solve(tasks, safeguard=False, **options)
            guarded = solver.solve(tasks, **options)
            zero = ms.run(ms.Jacobi(), tasks.problem, **options)
        exact = tasks.problem.solution
        error = (torch.linalg.vector_norm(guarded.x - exact, dim=1)
                 / torch.linalg.vector_norm(exact, dim=1))
        right = bool((guarded.converged | ~zero.converged).all()) and \
            bool((error[guarded.converged] < 1e-3).all())
        print(f"| [{low:g}, {high:g}] | {raw.iterations.double().mean():.1f} | "
              f"{guarded.iterations.double().mean():.1f} | {zero.iterations.double().mean():.1f}"
              f" | {(raw.iterations > zero.iterations).double().mean():.0%} | "
              f"{(guarded.iterations > zero.iterations).double().mean():.0%} | "
              f"{guarded.fallback.double().mean():.0%} | "
              f"{guarded.out_of_distribution.double().mean():.0%} | {right} |")


if __name__ == "__main__":
    main()
