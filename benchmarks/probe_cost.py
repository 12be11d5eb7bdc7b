"""The cost of the Lanczos probe (``metasolve.probes.lanczos_probe``, the spectral features of
the AutoSpec engines) against the matrix products it makes, on 2D Poisson (5-point, ``m x m``
interior grid), one thread, medians of ``--repeats`` calls.

    python benchmarks/probe_cost.py                       # m = 320 (102,400 unknowns), B = 2
    python benchmarks/probe_cost.py --steps 10 32 --batch 2

Run on an earlier commit (``git stash; git checkout REV``) to compare implementations.
"""

from __future__ import annotations

import argparse

import torch
from _timing import median_seconds

from metasolve.probes import lanczos_probe
from metasolve.tasks.operators import poisson2d, to_torch_csr


def _median_ms(call, repeats: int) -> float:
    return median_seconds(call, repeats) * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=320, help="interior grid points per side")
    parser.add_argument("--batch", type=int, default=2, help="operators probed at once")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 32])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    matrix = to_torch_csr(poisson2d(args.m))
    size = matrix.shape[0]
    vectors = torch.randn(args.batch, size, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))

    def matvec(x):
        return torch.mm(x, matrix.t())

    print(f"{size:,} unknowns, {args.batch} operators, medians of {args.repeats} calls")
    print()
    print("| steps | probe | its products alone |")
    print("|---|---|---|")
    with torch.no_grad():
        for steps in args.steps:
            probe = _median_ms(lambda s=steps: lanczos_probe(matvec, size, s, args.batch),
                               args.repeats)
            products = _median_ms(lambda s=steps: [matvec(vectors) for _ in range(s)],
                                  args.repeats)
            print(f"| {steps} | {probe:.1f} ms | {products:.1f} ms |")


if __name__ == "__main__":
    main()
