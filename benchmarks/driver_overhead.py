"""The driver's own cost: ``metasolve.run`` with Jacobi against a minimal masked loop of the same
iteration, on 1D Poisson (``tridiag(-1, 2, -1) / h^2``, ``n`` unknowns, shared dense matrix,
random sources), one thread, to a relative residual of ``--rtol``.

    python benchmarks/driver_overhead.py                      # batches 1, 100 and 10,000
    python benchmarks/driver_overhead.py --batch 1 --repeats 31
    python benchmarks/driver_overhead.py --count-ops          # tensor operations per iteration

The minimal loop is what a hand-written batched Jacobi with per-instance stopping needs: the
update, the residual and its norm, the mask of running instances, two masked copies and the
count (about ten tensor operations per iteration). ``metasolve.run`` adds the statuses
(divergence, breakdown, the method's own convergence test), the residual history and the
checks of its options. Both start from zero and must stop every instance at the same
iteration; the two are interleaved ``--repeats`` times and the medians reported, per iteration
of the loop (the slowest instance's count).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import metasolve as ms
from metasolve.tasks.poisson1d import poisson1d_matrix


def minimal_jacobi(matrix: torch.Tensor, rhs: torch.Tensor, rtol: float,
                   maxiter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobi from zero with a per-instance stop at ``||b - A x|| <= rtol ||b||``: the final
    iterates and each instance's iteration count."""
    dinv = 1.0 / torch.diagonal(matrix)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    threshold = rtol * torch.linalg.vector_norm(rhs, dim=1)
    active = torch.linalg.vector_norm(r, dim=1) > threshold
    iterations = torch.zeros(rhs.shape[0], dtype=torch.int64)
    for _ in range(maxiter):
        if not bool(active.any()):
            break
        x_new = torch.addcmul(x, dinv, r)
        r_new = rhs - x_new @ matrix.T
        mask = active.unsqueeze(1)
        x = torch.where(mask, x_new, x)
        r = torch.where(mask, r_new, r)
        iterations += active
        active = active & (torch.linalg.vector_norm(r_new, dim=1) > threshold)
    return x, iterations


def count_ops(matrix: torch.Tensor, rtol: float, maxiter: int) -> None:
    """Print the tensor operations (ATen calls) per iteration of both loops at a batch of
    one, counted by a dispatch mode."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Counting(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.calls = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls[str(func)] += 1
            return func(*args, **(kwargs or {}))

    rhs = torch.randn(1, matrix.shape[0], generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)
    problem = ms.LinearSystem(matrix, rhs)
    with torch.no_grad():
        for name, solve in (("minimal loop", lambda: minimal_jacobi(matrix, rhs, rtol,
                                                                      maxiter)[1]),
                            ("metasolve.run", lambda: ms.run(ms.Jacobi(), problem, rtol=rtol,
                                                             maxiter=maxiter).iterations)):
            steps = int(solve().max())
            with Counting() as counting:
                solve()
            print(f"{name}: {sum(counting.calls.values()) / steps:.1f} operations per iteration "
                  f"({steps} iterations)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100, 10_000])
    parser.add_argument("--n", type=int, default=16, help="unknowns per instance")
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--count-ops", action="store_true",
                        help="count the tensor operations per iteration instead of timing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    matrix = poisson1d_matrix(args.n)
    maxiter = 100 * args.n * args.n
    if args.count_ops:
        count_ops(matrix, args.rtol, maxiter)
        return
    print("| batch | iterations | minimal loop, us per iteration | metasolve.run, us per iteration "
          "| run / minimal |")
    print("|---|---|---|---|---|")
    for batch in args.batch:
        rhs = torch.randn(batch, args.n, generator=torch.Generator().manual_seed(batch),
                          dtype=torch.float64)
        problem = ms.LinearSystem(matrix, rhs)
        method = ms.Jacobi()
        with torch.no_grad():
            x_min, count_min = minimal_jacobi(matrix, rhs, args.rtol, maxiter)
            solution = ms.run(method, problem, rtol=args.rtol, maxiter=maxiter)
            if not torch.equal(count_min, solution.iterations):
                raise SystemExit(f"batch {batch}: the two loops stopped at different iterations")
            torch.testing.assert_close(x_min, solution.x, rtol=0, atol=0)
            steps = int(count_min.max())
            times = {"minimal": [], "run": []}
            for _ in range(args.repeats):
                for name in times:
                    start = time.perf_counter()
                    if name == "minimal":
                        minimal_jacobi(matrix, rhs, args.rtol, maxiter)
                    else:
                        ms.run(method, problem, rtol=args.rtol, maxiter=maxiter)
                    times[name].append((time.perf_counter() - start) / steps)
        low, high = (statistics.median(times[k]) * 1e6 for k in ("minimal", "run"))
        print(f"| {batch} | {steps} | {low:.1f} | {high:.1f} | {high / low:.2f} |")


if __name__ == "__main__":
    main()
