"""One training step of ICCG(alpha) on the elastic beam, forward and backward, timed.

The setting of the GBMS paper's Table 2 (``metasolve reproduce elasticity-iccg``): 128 beams of
the default mesh (``N = 243``), ``Psi_nn`` starting from ``Psi_base``, the loss
``1_success L~_eps + 500 1_fail (-log alpha)`` with ``eps = 1e-6`` and ``N`` unrolled ICCG
iterations at most, on one thread:

    python benchmarks/iccg_speed.py                  # the fast IC(0) and solves (ICCG today)
    python benchmarks/iccg_speed.py --reference      # also the column-loop IC(0) and the band
                                                     # solves ICCG used before
    python benchmarks/iccg_speed.py --repeats 5 --batch 128

Prints, for each implementation, the median (and all) of the forward and backward times over
the repeats, the loss (both implementations must agree to round-off) and the machine's load
average, since a loaded machine slows both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from metasolve.experiments.elasticity_iccg import make_loss, make_solver
from metasolve.solvers.base import batched_dot
from metasolve.solvers.iccg import (
    ICCG,
    _band,
    _band_matvec,
    _bandwidth,
    _blocks,
    _dense_batch,
    _precondition,
    incomplete_cholesky_reference,
    smallest_safe_shift,
)
from metasolve.tasks import ElasticBeamFamily
from metasolve.training import Trainer


def step_times(trainer: Trainer, tasks) -> tuple[float, float, float]:
    trainer.solver.model.zero_grad()
    start = time.perf_counter()
    value = trainer.batch_loss(tasks)
    middle = time.perf_counter()
    value.backward()
    end = time.perf_counter()
    return middle - start, end - middle, float(value.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true",
                        help="also time the reference implementation (slow: about 40 s a step)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as the experiment's cells do
    family = ElasticBeamFamily()
    tasks = family.sample(args.batch, seed=0)
    alpha_base = smallest_safe_shift(tasks.problem.matrix)
    torch.manual_seed(0)
    solver = make_solver(family, alpha_init=alpha_base)
    trainer = Trainer(solver, make_loss(("L_eps", 1e-6), family.size))
    print(f"{args.batch} beams, N = {family.size}, alpha_base = {alpha_base:.4g}, "
          f"threads = {torch.get_num_threads()}, load average before = {os.getloadavg()}")
    methods = {"fast": ICCG(alpha_base), "reference": ReferenceICCG(alpha_base)}
    for name in ["fast"] + (["reference"] if args.reference else []):
        solver.method = methods[name]
        step_times(trainer, tasks)  # warm-up: the first step pays for allocations
        forward, backward = [], []
        for _ in range(args.repeats):
            f, b, value = step_times(trainer, tasks)
            forward.append(f)
            backward.append(b)
        print(f"{name:>9}: forward {statistics.median(forward):.3f} s, backward "
              f"{statistics.median(backward):.3f} s (medians of {args.repeats}; forward "
              f"{[round(t, 3) for t in forward]}, backward {[round(t, 3) for t in backward]}), "
              f"loss {value:.12g}")
    print(f"load average after = {os.getloadavg()}")


class ReferenceICCG(ICCG):
    """ICCG as it was before the fast path: the column-loop IC(0) differentiated by autograd
    through every column, and the band products and block solves of every iteration recorded
    by autograd (their backward through ``unfold`` and ``solve_triangular``)."""

    def init(self, problem, x0, params):
        matrix = _dense_batch(problem)
        bw = _bandwidth(matrix)
        factor, failed = incomplete_cholesky_reference(matrix, self.shift(problem, params))
        diagonal, sub = _blocks(factor, bw)
        band = _band(matrix, bw)
        r = problem.rhs - _band_matvec(band, x0)
        z = _precondition(diagonal, sub, r)
        return {"x": x0, "r": r, "z": z, "p": z, "rz": batched_dot(r, z), "band": band,
                "D": diagonal, "E": sub, "breakdown": failed}


if __name__ == "__main__":
    main()
