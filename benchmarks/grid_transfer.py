"""SOR with a learned relaxation factor across grid sizes, on the structured-grid diffusion family
(:class:`metasolve.GridDiffusionFamily`): trained on small grids only, applied unchanged at
larger ones.

The learned part is a linear model on the family's size-free features (statistics of ``log k``
on a fixed reference grid, and ``log(n + 1)``) through an interval head ``omega in (1, 2)``:
``omega = 1 + sigmoid(w . features + b)``. It starts at ``logit(omega - 1) = log(n + 1) - 1.8``
(about Young's factor for the Laplacian; ``--init zero`` starts at ``omega = 1.5`` instead) and
is trained with Adam on the ``sincos`` coefficients at ``n = 16, 24, 32`` on the residual
reduction ``log(||r_m|| / ||r_0||)`` after ``m = 3 n`` SOR iterations (the mean over the three
sizes). The classical comparisons: the best constant factor on the training tasks at
``n = 32`` (a grid search on iterations to the tolerance), Young's textbook optimum for the
Laplacian ``2 / (1 + sin(pi h))``, and Gauss-Seidel (``omega = 1``).

Commands (the table in docs/RESULTS.md comes from them; one torch thread)::

    python benchmarks/grid_transfer.py train --out grid_sor.safetensors
    python benchmarks/grid_transfer.py measure --model grid_sor.safetensors \\
        --sizes 32 64 128 --batch 8
    # the 3D family (7-point stencil), trained at n = 8, 12, 16
    python benchmarks/grid_transfer.py train --dim 3 --train-sizes 8 12 16 \\
        --out grid_sor_3d.safetensors
    python benchmarks/grid_transfer.py measure --model grid_sor_3d.safetensors \\
        --sizes 16 24 32 --batch 8

``measure`` reports, per grid size and coefficient distribution (``sincos``, trained on, and
``fourier``, a random smooth field of 3 x 3 modes never seen in training), the mean iterations
to ``rtol = 1e-6`` of each factor, how many instances converged within ``maxiter``, and the
end-to-end wall-clock of the learned factor (features, inference and solve) against the best
constant factor's solve.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import metasolve as ms
from metasolve.tasks.grid_diffusion import GridDiffusionFamily

TRAIN_SIZES = (16, 24, 32)


def learned_solver(family: GridDiffusionFamily, settings: dict,
                   init: str = "young") -> ms.LearnedSolver:
    """The linear model; ``init="young"`` starts it at ``logit(omega - 1) = log(n + 1) - 1.8``
    for every task, about Young's factor for the Laplacian (``omega - 1 ~ 1 - 2 pi h``), and
    ``init="zero"`` at ``omega = 1.5``."""
    psi = ms.NetworkMetaSolver(family.feature_dim, {"omega": ms.IntervalHead(1.0, 2.0)},
                               hidden=(), zero_init=True)
    if init == "young":
        with torch.no_grad():
            psi.net[-1].weight[0, -1] = 1.0  # the log(n + 1) feature
            psi.net[-1].bias.fill_(-1.8)
    return ms.LearnedSolver(ms.SOR(), psi, family=family, settings=settings)


def reduction_loss(solver, tasks, m):
    """The mean ``log(||r_m|| / ||r_0||)`` after ``m`` iterations; with ``m`` proportional to
    ``n`` it is of one size at every ``n`` (at the best factor SOR's rate per iteration is
    about ``1 - c / n``)."""
    sol = solver.solve(tasks, safeguard=False, fixed_iterations=m, rtol=0.0)
    return ms.LogResidualLoss(m)(sol).mean()


def train(args) -> dict:
    sizes = tuple(sorted(set(args.train_sizes)))  # the last one is the largest
    families = {n: GridDiffusionFamily(n=n, dim=args.dim) for n in sizes}
    tasks = {n: families[n].sample(args.tasks, seed=100 + n) for n in sizes}
    settings = {"training_sizes": list(sizes),
                "loss": "log residual reduction after m = factor * n iterations",
                "steps": args.steps, "lr": args.lr, "tasks_per_size": args.tasks}
    settings["init"] = args.init
    settings["iterations_factor"] = args.factor
    solver = learned_solver(families[sizes[-1]], settings, args.init)
    optimizer = torch.optim.Adam(solver.model.parameters(), lr=args.lr)
    start = time.perf_counter()
    for step in range(args.steps):
        optimizer.zero_grad()
        losses = [reduction_loss(solver, tasks[n], args.factor * n) for n in sizes]
        loss = sum(losses) / len(losses)
        loss.backward()
        optimizer.step()
        print(json.dumps({"step": step, "loss": round(loss.item(), 4),
                          "per_size": [round(v.item(), 4) for v in losses],
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    best = best_constant(tasks[sizes[-1]], args.rtol, args.maxiter)
    solver.settings["best_constant_omega"] = best["omega"]
    solver.settings["best_constant_grid"] = best["grid"]
    # The safeguard's out-of-distribution test reads the training features' envelope: a larger
    # grid than trained lies outside it in its last feature, log(n + 1).
    solver.record_training_features(torch.cat([tasks[n].features for n in sizes]))
    solver.save(args.out)
    with torch.no_grad():
        for n in sizes:
            omega = solver.params(tasks[n].features)["omega"]
            print(json.dumps({"n": n, "learned_omega_mean": round(float(omega.mean()), 4),
                              "textbook": round(textbook(n), 4)}), flush=True)
    print(json.dumps({"saved": str(args.out), **best}), flush=True)
    return best


def textbook(n: int) -> float:
    return 2.0 / (1.0 + math.sin(math.pi / (n + 1)))


def best_constant(tasks, rtol, maxiter) -> dict:
    """The factor, on a grid of step 0.01 over [1.50, 1.98], with the fewest mean iterations
    to ``rtol`` on ``tasks``."""
    grid = [round(1.5 + 0.01 * i, 2) for i in range(49)]
    best = None
    with torch.no_grad():
        for omega in grid:
            sol = ms.run(ms.SOR(omega), tasks.problem, rtol=rtol, maxiter=maxiter)
            mean = float(sol.iterations.double().mean())
            if bool(sol.converged.all()) and (best is None or mean < best[1]):
                best = (omega, mean)
    return {"omega": best[0], "iterations": best[1], "grid": [grid[0], grid[-1], 0.01]}


def measure(args) -> list[dict]:
    solver = ms.load(args.model)
    constant = solver.settings["best_constant_omega"]
    rows = []
    for coefficient in args.coefficients:
        for n in args.sizes:
            family = GridDiffusionFamily(n=n, dim=solver.family.dim, coefficient=coefficient)
            generator = torch.Generator().manual_seed(7)
            params = family.sample_parameters(args.batch, generator)
            tasks = family.tasks_for(params)
            row = {"coefficient": coefficient, "n": n, "batch": args.batch}
            with torch.no_grad():
                start = time.perf_counter()
                features = family.features_of(params)
                feature_time = time.perf_counter() - start
                sol = solver.solve(ms.TaskBatch(tasks.problem, features), safeguard=False,
                                   rtol=args.rtol, maxiter=args.maxiter)
                omega = solver.params(features)["omega"]
                row["learned_omega"] = [round(float(omega.min()), 4),
                                        round(float(omega.max()), 4)]
                row["learned"] = summary(sol)
                row["learned"]["end_to_end_s"] = round(feature_time + sol.wall_time, 2)
                for name, factor, cap in (("best_constant", constant, args.maxiter),
                                          ("textbook", textbook(n), args.maxiter),
                                          ("gauss_seidel", 1.0, args.gs_maxiter)):
                    if cap == 0:
                        continue
                    run = ms.run(ms.SOR(factor), tasks.problem, rtol=args.rtol, maxiter=cap)
                    row[name] = {"omega": round(factor, 4), **summary(run),
                                 "end_to_end_s": round(run.wall_time, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summary(sol) -> dict:
    return {"iterations_mean": round(float(sol.iterations.double().mean()), 1),
            "converged": int(sol.converged.sum())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("train")
    p.add_argument("--out", default="grid_sor.safetensors")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--init", choices=("young", "zero"), default="young")
    p.add_argument("--factor", type=int, default=3, help="m = factor * n iterations")
    p.add_argument("--tasks", type=int, default=4, help="training tasks per size")
    p.add_argument("--train-sizes", type=int, nargs="+", default=list(TRAIN_SIZES))
    p.add_argument("--dim", type=int, choices=(2, 3), default=2)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--maxiter", type=int, default=3000)
    q = sub.add_parser("measure")
    q.add_argument("--model", default="grid_sor.safetensors")
    q.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    q.add_argument("--coefficients", nargs="+", default=["sincos", "fourier"])
    q.add_argument("--batch", type=int, default=8)
    q.add_argument("--rtol", type=float, default=1e-6)
    q.add_argument("--maxiter", type=int, default=4000)
    q.add_argument("--gs-maxiter", type=int, default=2000,
                   help="iteration cap of Gauss-Seidel (0 skips it)")
    for sp in (p, q):
        sp.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "train":
        train(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
