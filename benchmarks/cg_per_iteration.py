"""The cost of one CG iteration: metasolve's ``ConjugateGradient`` through the driver
(``metasolve.run``), the same recurrence as a bare PyTorch loop, and SciPy's ``cg``, on 2D Poisson
(5-point, ``m x m`` interior grid) with ``B`` right-hand sides, one thread.

    python benchmarks/cg_per_iteration.py                       # m = 320 (102,400 unknowns), B = 8
    python benchmarks/cg_per_iteration.py --batch 1 --m 64      # the driver at batch 1
    python benchmarks/cg_per_iteration.py --kernels             # the product and a dot product
    python benchmarks/cg_per_iteration.py --crossover           # PyTorch's product or SciPy's

Each contender runs ``--iterations`` iterations (a tolerance of zero, so none stops early) on the
same system; the three are interleaved ``--repeats`` times and the medians reported, per
iteration and right-hand side (SciPy solves the right-hand sides one after another). The bare
loop is the recurrence written plainly in PyTorch (rows, PyTorch's CSR product, two dot products
and three fused vector updates; no stopping test, masks or history); metasolve's CG on this
system holds the batch as columns, multiplies with SciPy's several-vector kernel into a kept
buffer and updates in place (docs/RESULTS.md, "One CG iteration against SciPy's").

``--kernels`` times the pieces instead, for all ``B`` vectors at once (medians of 40 calls):
PyTorch's CSR product as metasolve calls it (``torch.mm(X, A.t())``) and as the transposed view
``(A @ X^T)^T``, SciPy's product one vector at a time, and a dot product of matching rows in
PyTorch (``(X * Y).sum(1)``) and as NumPy's BLAS ``dot`` per row.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from _timing import median_seconds

import metasolve as ms
from metasolve.tasks.operators import poisson2d, to_torch_csr


def bare_cg(matrix: torch.Tensor, rhs: torch.Tensor, iterations: int) -> torch.Tensor:
    """CG on the rows of ``rhs`` (``(B, N)``) from zero, ``iterations`` steps, no tests."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = (r * r).sum(dim=1)
    for _ in range(iterations):
        ap = torch.mm(p, matrix.t())  # the product as LinearSystem.matvec forms it
        step = (rr / (p * ap).sum(dim=1)).unsqueeze(1)
        x.addcmul_(step, p)
        r.addcmul_(step, ap, value=-1)
        new = (r * r).sum(dim=1)
        p = torch.addcmul(r, (new / rr).unsqueeze(1), p)
        rr = new
    return x


def kernels(matrix, rows: torch.Tensor) -> None:
    """The ``--kernels`` table (module docstring)."""
    torch_matrix = to_torch_csr(matrix)
    other = torch.randn_like(rows)
    rows_numpy, other_numpy = rows.numpy(), other.numpy()

    def scipy_product():
        out = np.empty_like(rows_numpy)
        for b, row in enumerate(rows_numpy):
            out[b] = matrix @ row
        return out

    pieces = {
        "PyTorch product, torch.mm(X, A.t())": lambda: torch.mm(rows, torch_matrix.t()),
        "PyTorch product, (A @ X^T)^T": lambda: (torch_matrix @ rows.T).T,
        "SciPy product, one vector at a time": scipy_product,
        "PyTorch dot products, (X * Y).sum(1)": lambda: (rows * other).sum(dim=1),
        "NumPy dot per row": lambda: [np.dot(a, b) for a, b in zip(rows_numpy, other_numpy,
                                                                      strict=True)],
    }
    print(f"{matrix.shape[0]:,} unknowns, {rows.shape[0]} vectors, medians of 40 calls")
    print()
    print("| piece | all vectors |")
    print("|---|---|")
    for name, piece in pieces.items():
        print(f"| {name} | {median_seconds(piece, 40) * 1e3:.2f} ms |")


def crossover() -> None:
    """The ``--crossover`` table: PyTorch's CSR product against SciPy's on the batch held as
    columns (what CG uses from ``metasolve.problems.SCIPY_MIN_ROWS`` rows), by size."""
    from metasolve.sparse import shared_sparse

    print("| rows | vectors | PyTorch torch.mm(X, A.t()) | SciPy, batch as columns |")
    print("|---|---|---|---|")
    for m in (8, 16, 32, 64, 128):
        matrix = to_torch_csr(poisson2d(m))
        operator = shared_sparse(matrix)
        for batch in (1, 8):
            rows = torch.randn(batch, matrix.shape[0], dtype=torch.float64)
            columns = rows.T.contiguous().T
            timings = [median_seconds(lambda: torch.mm(rows, matrix.t()), 200) * 1e6,  # noqa: B023
                       median_seconds(lambda: operator.apply(columns.T), 200) * 1e6]  # noqa: B023
            print(f"| {matrix.shape[0]:,} | {batch} | {timings[0]:.1f} us | {timings[1]:.1f} us |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=320, help="interior grid points per side")
    parser.add_argument("--batch", type=int, default=8, help="right-hand sides")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernels", action="store_true",
                        help="time the product and a dot product instead (module docstring)")
    parser.add_argument("--crossover", action="store_true",
                        help="PyTorch's product against SciPy's by size (SCIPY_MIN_ROWS)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.crossover:
        crossover()
        return

    matrix = poisson2d(args.m)
    system = ms.LinearSystem(to_torch_csr(matrix), torch.randn(
        args.batch, matrix.shape[0], generator=torch.Generator().manual_seed(0),
        dtype=torch.float64))
    if args.kernels:
        kernels(matrix, system.rhs)
        return
    rhs_numpy = system.rhs.numpy()
    k = args.iterations

    def metasolve_cg():
        ms.run(ms.ConjugateGradient(), system, rtol=0.0, maxiter=k)

    def bare():
        bare_cg(system.matrix, system.rhs, k)

    def scipy_cg():
        for b in rhs_numpy:
            scipy.sparse.linalg.cg(matrix, b, rtol=0.0, atol=0.0, maxiter=k)

    contenders = {"metasolve.run(ConjugateGradient())": metasolve_cg, "bare PyTorch loop": bare,
                  "scipy.sparse.linalg.cg": scipy_cg}
    # The answers agree: the same recurrence from the same start.
    ours = ms.run(ms.ConjugateGradient(), system, rtol=0.0, maxiter=k).x.numpy()
    theirs = np.stack([scipy.sparse.linalg.cg(matrix, b, rtol=0.0, atol=0.0, maxiter=k)[0]
                       for b in rhs_numpy])
    difference = np.abs(ours - theirs).max() / np.abs(theirs).max()

    times: dict[str, list[float]] = {name: [] for name in contenders}
    for run_one in contenders.values():  # warm-up
        run_one()
    for _ in range(args.repeats):
        for name, run_one in contenders.items():
            start = time.perf_counter()
            run_one()
            times[name].append(time.perf_counter() - start)
    per = {name: statistics.median(t) / (k * args.batch) for name, t in times.items()}
    scipy_time = per["scipy.sparse.linalg.cg"]
    print(f"2D Poisson, {matrix.shape[0]:,} unknowns, {args.batch} right-hand sides, {k} "
          f"iterations, medians of {args.repeats}; largest relative difference of the "
          f"iterates, metasolve against SciPy: {difference:.1e}")
    print()
    print("| contender | per iteration and right-hand side | / SciPy |")
    print("|---|---|---|")
    for name, value in per.items():
        print(f"| {name} | {value * 1e6:.1f} us | {value / scipy_time:.2f} |")


if __name__ == "__main__":
    main()
