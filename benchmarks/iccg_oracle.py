"""How hard are the beam matrices for ICCG(alpha)? Psi_base and the per-task oracle.

The GBMS paper's Table 2 has an oracle (the best alpha per task) that reaches 1e-6 on every test
task within N iterations. This script measures our `Psi_base` (the smallest alpha for which IC(0)
succeeds on every training task) and the oracle over a quarter-decade grid of alpha from 1e-6
to 1, with the iteration cap equal to the number of unknowns N, on any variant of the beam
family, to look for the set-up the paper does not state:

    python benchmarks/iccg_oracle.py                       # the experiment's mesh, N = 243
    python benchmarks/iccg_oracle.py --cells 8,8,2         # "8 x 8 x 2 cuboids", N = 729
    python benchmarks/iccg_oracle.py --order x-fastest     # another numbering of the unknowns
    python benchmarks/iccg_oracle.py --norms               # other stopping norms
    python benchmarks/iccg_oracle.py --absolute            # ||b - A x|| <= 1e-6, not relative
    python benchmarks/iccg_oracle.py --width 0.2           # a cross-section fixed at 0.2

Options:

* ``--order``: ``natural`` (the family's: nodes lexicographic with ``x`` slowest, a node's three
  unknowns together), ``x-fastest`` (nodes lexicographic with ``x`` fastest), ``component``
  (all ``x`` displacements, then all ``y``, then all ``z``, each in the natural node order).
  IC(0)'s quality depends on the numbering; the numbering FEniCS would use is not stated.
* ``--norms``: also count the iterations to ``1e-6`` of the initial value in the recurrence
  residual ``||r_k||``, the preconditioned residual ``||M^{-1} r_k||`` and the ``M^{-1}``-norm
  ``sqrt(r_k^T M^{-1} r_k)`` (PCG codes differ in which one they test), besides the true
  residual ``||b - A x_k||`` of Table 2.
* ``--absolute``: stop on ``||b - A x_k|| <= 1e-6`` instead of ``1e-6 ||b||`` (Table 2 does not
  say which).
* ``--width W``: every beam has cross-section ``W`` (``width_range = (W, W)``), so the matrix
  depends on ``lambda, mu`` only. This is not the paper's family (its ``W`` varies from 0.003 to
  0.3); it asks whether the paper's numbers fit a mesh that does not follow ``W``.

Prints N, alpha_base, and for Psi_base and the oracle the mean iterations (a failed
factorization or an unconverged solve counts as N, as in Table 2) and the convergence ratio, then
the oracle's convergence ratio by beam width W and by lambda / mu.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from metasolve.evaluation.protocols import constant_params, iterations_in_chunks
from metasolve.problems import LinearSystem
from metasolve.solvers import ICCG, run
from metasolve.solvers.iccg import smallest_safe_shift
from metasolve.tasks import ElasticBeamFamily

ORDERS = ("natural", "x-fastest", "component")
NORMS = ("true residual", "recurrence residual", "preconditioned residual", "M^-1 norm")
TOL = 1e-6


def numbering(cells: tuple[int, int, int], order: str) -> torch.Tensor:
    """New position -> natural unknown index, for the beam's ``(nx+1)(ny+1)(nz+1)`` nodes."""
    nodes = np.prod([c + 1 for c in cells])
    natural = np.arange(nodes)
    if order == "natural":
        node_order, blocked = natural, False
    elif order == "x-fastest":
        i, j, k = np.unravel_index(natural, [c + 1 for c in cells])
        node_order, blocked = np.lexsort((i, j, k)), False  # k slowest, i (along x) fastest
    elif order == "component":
        node_order, blocked = natural, True
    else:
        raise ValueError(f"--order must be one of {ORDERS}, got {order!r}")
    if blocked:
        dofs = np.concatenate([3 * node_order + c for c in range(3)])
    else:
        dofs = (3 * node_order[:, None] + np.arange(3)[None, :]).reshape(-1)
    return torch.from_numpy(dofs)


def permuted(problem: LinearSystem, perm: torch.Tensor) -> LinearSystem:
    return LinearSystem(problem.matrix[:, perm][:, :, perm], problem.rhs[:, perm])


def norm_counts(problem: LinearSystem, alpha: float, n: int) -> torch.Tensor:
    """``(len(NORMS), B)`` iterations to ``TOL`` (relative to the initial value) in each norm;
    -1 where not reached within ``n`` or where IC(0) failed."""
    batch = problem.batch_size
    params = constant_params("alpha", alpha, batch)
    start = ICCG().init(problem, torch.zeros_like(problem.rhs), params)
    rhs_norm = torch.linalg.vector_norm(problem.rhs, dim=1)
    reference = torch.stack([rhs_norm, rhs_norm, torch.linalg.vector_norm(start["z"], dim=1),
                             start["rz"].clamp_min(0).sqrt()])
    history = []

    def record(k, state, norms):
        history.append(torch.stack([norms, torch.linalg.vector_norm(state["r"], dim=1),
                                    torch.linalg.vector_norm(state["z"], dim=1),
                                    state["rz"].clamp_min(0).sqrt()]))

    with torch.no_grad():
        run(ICCG(), problem, params=params, rtol=0.0, fixed_iterations=n, callback=record,
            divergence_factor=1e300)
    hit = torch.stack(history) <= TOL * reference  # (n, NORMS, B)
    first = hit.to(torch.int64).argmax(0) + 1
    counts = torch.where(hit.any(0), first, -1)
    return torch.where(start["breakdown"], -1, counts)


def summarize(label: str, base: torch.Tensor, per_alpha: torch.Tensor, n: int) -> torch.Tensor:
    best = torch.where(per_alpha >= 0, per_alpha, n + 1).min(0).values
    for name, iters, converged in (("Psi_base", torch.where(base >= 0, base, n), base >= 0),
                                   ("oracle", best.clamp_max(n), best <= n)):
        print(f"{label:24s} {name:9s} mean iterations {iters.double().mean():7.2f}   "
              f"convergence ratio {converged.double().mean():.3f}")
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", default="8,2,2", help="hexahedra along x, y, z")
    parser.add_argument("--tasks", type=int, default=48, help="test tasks")
    parser.add_argument("--order", default="natural", choices=ORDERS)
    parser.add_argument("--norms", action="store_true", help="count in every stopping norm")
    parser.add_argument("--width", type=float, default=None, help="fix the cross-section")
    parser.add_argument("--absolute", action="store_true",
                        help="stop on ||b - A x|| <= 1e-6 instead of 1e-6 ||b||")
    args = parser.parse_args(argv)
    if args.absolute and args.norms:
        parser.error("--absolute applies to the true residual only; leave out --norms")
    torch.set_num_threads(1)
    try:
        mesh = tuple(int(c) for c in args.cells.split(","))
    except ValueError:
        raise ValueError(f"--cells must be three integers like 8,2,2, got {args.cells!r}") \
            from None
    options = {} if args.width is None else {"width_range": (args.width, args.width)}
    family = ElasticBeamFamily(cells=mesh, **options)
    n = family.size
    perm = numbering(mesh, args.order)
    start = time.perf_counter()
    train = permuted(family.sample(96, seed=1).problem, perm)
    params = family.sample_parameters(args.tasks, torch.Generator().manual_seed(2))
    test = permuted(family.tasks(params).problem, perm)
    alpha_base = smallest_safe_shift(train.matrix)
    grid = [10.0 ** (k / 4) for k in range(-24, 1)]
    if args.norms:
        base = norm_counts(test, alpha_base, n)
        per_alpha = torch.stack([norm_counts(test, a, n) for a in grid], dim=1)
    else:
        def counts(alpha):
            params = constant_params("alpha", alpha, args.tasks)
            rtol, atol = (0.0, TOL) if args.absolute else (TOL, 0.0)
            return iterations_in_chunks(ICCG(), test, params, rtol, n, 250, atol=atol)

        base = counts(alpha_base)[None]
        per_alpha = torch.stack([counts(a) for a in grid])[None]
    print(f"cells {mesh}, order {args.order}, tolerance "
          f"{'absolute' if args.absolute else 'relative'}, width "
          f"{'varies' if args.width is None else args.width}: N = {n}, alpha_base = "
          f"{alpha_base:.4f}, {args.tasks} test tasks, {time.perf_counter() - start:.0f} s")
    labels = NORMS if args.norms else NORMS[:1]
    bests = [summarize(label, base[i], per_alpha[i], n) for i, label in enumerate(labels)]
    best = bests[0]
    width, ratio = params[:, 0], params[:, 1] / params[:, 2]
    for name, value, edges in (("W", width, (0.003, 0.01, 0.03, 0.1, 0.3)),
                               ("lambda / mu", ratio, (0.01, 0.1, 1.0, 10.0, 100.0))):
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            inside = (value >= low) & (value < high)
            if inside.any():
                print(f"{name} in [{low:g}, {high:g}): oracle converges on "
                      f"{(best[inside] <= n).double().mean():.2f} of {int(inside.sum())} tasks")


if __name__ == "__main__":
    main()
