"""The cost of one SCS iteration: metasolve's batched ``SCS`` through the driver
(``metasolve.run``), with plain and with compiled kernels (:mod:`metasolve.kernels`), against the
``scs`` package with its qdldl direct solver, on robust Kalman filtering (``A`` shared by the
batch and sparse), one thread.

    python benchmarks/scs_per_iteration.py                      # 128 programs of 20 time steps
    python benchmarks/scs_per_iteration.py --batch 32 --steps 50

Every contender runs ``--iterations`` iterations with tolerances of 1e-12, so none stops early
(the stopping test still runs at every iteration: SCS's, for the ``scs`` package too). metasolve
solves the whole batch in one call, and its time per iteration is the difference of a run of
twice as many iterations and one of ``--iterations``, over ``--iterations`` and the batch (the
setup, as the factorisation, counts in neither). ``scs`` solves ``--scs-instances`` programs one
after another, and its time per iteration is its own reported solve time (without the setup
and factorisation) over its iterations, the median over those programs. The contenders are
interleaved ``--repeats`` times and the medians reported, per iteration and program, with the
ratio to ``scs``. metasolve runs without a residual history unless ``--history``; the
compiled kernels are compiled before the timed runs (the time that takes is printed).

The plain and compiled iterates must agree: the largest difference of the two final iterates
is printed beside the table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import metasolve as ms
from metasolve import kernels
from metasolve.baselines.scs_reference import solve_with_scs
from metasolve.tasks.conic import KalmanFamily

TIGHT = 1e-12


def metasolve_seconds(program, iterations: int, compiled: bool, history: bool):
    """Seconds per iteration and program: the difference of a run of ``2 iterations`` and one
    of ``iterations`` (so the setup, as the factorisation, counts in neither, as in scs's
    solve time), and the final iterate of the shorter run."""
    kernels.set_compile(compiled)
    method = ms.SCS(eps_abs=TIGHT, eps_rel=TIGHT)
    seconds = []
    for count in (iterations, 2 * iterations):
        start = time.perf_counter()
        solution = ms.run(method, program, maxiter=count, history=history)
        seconds.append(time.perf_counter() - start)
        if int(solution.iterations.min()) != count:
            raise RuntimeError("an instance stopped early: the time would not be per iteration")
        if count == iterations:
            final = solution.x
    return (seconds[1] - seconds[0]) / iterations / program.batch_size, final


def scs_seconds(program, iterations: int, instances: int) -> float:
    per_iteration = []
    for index in range(instances):
        out = solve_with_scs(program, index, eps_abs=TIGHT, eps_rel=TIGHT,
                             max_iters=iterations, linear_solver="qdldl")
        per_iteration.append((out["solve_time"] - out["setup_time"]) / out["iterations"])
    return statistics.median(per_iteration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="Kalman time steps")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scs-instances", type=int, default=16)
    parser.add_argument("--history", action="store_true",
                        help="keep metasolve's residual history")
    args = parser.parse_args()
    torch.set_num_threads(1)

    program = KalmanFamily(steps=args.steps).sample(args.batch, seed=0).problem
    nonzeros = int((program.matrix != 0).sum())
    print(f"Kalman, {args.steps} steps: n = {program.variables}, m = {program.constraints}, "
          f"{nonzeros} nonzeros in A; batch {args.batch}, {args.iterations} iterations, "
          f"one thread")
    start = time.perf_counter()
    _, compiled_x = metasolve_seconds(program, args.iterations, True, args.history)
    print(f"compiling the kernels and one run: {time.perf_counter() - start:.1f} s")

    times: dict[str, list[float]] = {"metasolve": [], "metasolve, compiled": [], "scs": []}
    for _ in range(args.repeats):
        seconds, plain_x = metasolve_seconds(program, args.iterations, False, args.history)
        times["metasolve"].append(seconds)
        seconds, compiled_x = metasolve_seconds(program, args.iterations, True, args.history)
        times["metasolve, compiled"].append(seconds)
        times["scs"].append(scs_seconds(program, args.iterations, args.scs_instances))
    kernels.set_compile(False)

    reference = statistics.median(times["scs"])
    print("\n| contender | us per iteration and program | / scs (qdldl) |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e6:.2f} | {median / reference:.2f} |")
    difference = float((plain_x - compiled_x).abs().max())
    print(f"\nlargest difference of the plain and compiled iterates: {difference:.1e}")


if __name__ == "__main__":
    main()
