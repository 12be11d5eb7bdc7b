"""One training step of ICCG(alpha) on the elastic beam, forward and backward, timed.

The setting of the GBMS paper's Table 2 (``metasolve reproduce elasticity-iccg``): a batch of
128 beams of the default mesh (``N = 243``), ``Psi_nn`` starting from ``Psi_base``, the loss
``1_success L~_eps + 500 1_fail (-log alpha)`` with ``eps = 1e-6`` and ``N`` unrolled ICCG
iterations at most, on one thread, denormals flushed as the experiment's cells do:

    python benchmarks/iccg_speed.py                   # the installed metasolve
    python benchmarks/iccg_speed.py --repeats 5 --batch 128
    python benchmarks/iccg_speed.py --section 0.1     # the experiment's reading of the beam
    python benchmarks/iccg_speed.py --profile         # and where one step's time goes

The script uses only what older versions have too, so an older checkout is timed with the same
command (``PYTHONPATH=OLD_CHECKOUT/src python benchmarks/iccg_speed.py``). It prints the medians
(and all) of the forward and backward times over the repeats after one warm-up step, the loss
(two versions agree to round-off) and the machine's load average, since a loaded machine slows
everything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from metasolve.experiments.elasticity_iccg import make_loss, make_solver
from metasolve.tasks import ElasticBeamFamily
from metasolve.training import Trainer

try:
    from metasolve.solvers.iccg import smallest_safe_shift
except ImportError:  # before it moved to the solver
    from metasolve.experiments.elasticity_iccg import smallest_safe_shift


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
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's operators of one step, by time")
    parser.add_argument("--section", type=float, default=None,
                        help="a fixed cross-section (ElasticBeamFamily's section; default: the "
                             "cross-section follows W, the harder reading)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    family = ElasticBeamFamily(**({} if args.section is None else {"section": args.section}))
    tasks = family.sample(args.batch, seed=0)
    alpha_base = smallest_safe_shift(tasks.problem.matrix)
    torch.manual_seed(0)
    solver = make_solver(family, alpha_init=alpha_base)
    trainer = Trainer(solver, make_loss(("L_eps", 1e-6), family.size))
    print(f"{args.batch} beams, N = {family.size}, alpha_base = {alpha_base:.4g}, "
          f"threads = {torch.get_num_threads()}, load average before = {os.getloadavg()}")
    step_times(trainer, tasks)  # warm-up: the first step pays for allocations
    forward, backward = [], []
    for _ in range(args.repeats):
        f, b, value = step_times(trainer, tasks)
        forward.append(f)
        backward.append(b)
    total = [f + b for f, b in zip(forward, backward, strict=True)]
    print(f"step {statistics.median(total):.3f} s: forward {statistics.median(forward):.3f} s, "
          f"backward {statistics.median(backward):.3f} s (medians of {args.repeats}; forward "
          f"{[round(t, 3) for t in forward]}, backward {[round(t, 3) for t in backward]}), "
          f"loss {value:.12g}")
    print(f"load average after = {os.getloadavg()}")
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            step_times(trainer, tasks)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
