"""Memory, time per iteration and answers of the classical methods on a batch of per-instance
sparse matrices (:class:`metasolve.SparseBatch`): the 2D variable-coefficient diffusion
``-div(k grad u) = 1`` on the unit square, zero Dirichlet data, 5-point finite differences on an
``n x n`` interior grid, ``k = exp(a1 sin(pi x) + a2 cos(pi y))`` with ``a1, a2`` drawn per
instance from ``U(-1, 1)`` (face coefficients ``k`` at the face midpoints).

Commands (the numbers in the report of the sparse-operators work come from them)::

    # memory and time per iteration at 256 x 256, batch 32 (20 iterations of each method,
    # one torch thread)
    python benchmarks/sparse_batch.py memory --n 256 --batch 32 --iterations 20
    # answers against scipy.sparse.linalg.spsolve (each method run to rtol)
    python benchmarks/sparse_batch.py answers --n 256 --batch 32 --rtol 1e-6 \\
        --methods cg cg-jacobi cg-ic0 bicgstab sor chebyshev

``memory`` runs every method in a fresh process: it builds the batch, then reads the process's
peak resident memory over the solve, and over a second solve of the same batch, which reuses
the level schedules the first built from the pattern (Linux: ``/proc/self/clear_refs`` resets
the peak, ``VmHWM`` reads it; torch's CPU allocations are invisible to ``tracemalloc``), and
reports it
against the batch's CSR storage (``B nnz`` values and the shared ``nnz + N + 1`` indices).
``answers`` solves each instance with SciPy's sparse direct solver and reports the largest
relative difference and the largest true relative residual of each method's answer.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from _memory import lean_allocator, reset_peak, resident_mib, settle

import metasolve as ms

#: "gmres" is GMRES(20); "gmres-8" and "gmres-4" GMRES(8) and GMRES(4): GMRES(m) keeps m + 1
#: basis vectors, each a fifth of the CSR storage here.
METHODS = ("jacobi", "sor", "ssor", "cg", "cg-jacobi", "cg-ic0", "bicgstab", "chebyshev",
           "gmres", "gmres-8", "gmres-4")


def diffusion_batch(n: int, batch: int, seed: int = 0, dtype=torch.float64):
    """``(matrices, rhs, coefficients)``: the family of the module docstring, assembled on its
    shared 5-point pattern with per-instance values (never as dense matrices)."""
    rng = np.random.default_rng(seed)
    coeffs = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(batch, 2)))
    h = 1.0 / (n + 1)
    t = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    eye = scipy.sparse.eye(n)
    laplacian = (scipy.sparse.kron(eye, t) + scipy.sparse.kron(t, eye)).tocsr()
    laplacian.sort_indices()
    crow = torch.from_numpy(laplacian.indptr.astype(np.int64))
    col = torch.from_numpy(laplacian.indices.astype(np.int64))
    pattern = ms.SparsePattern(crow, col)
    rows = pattern.rows

    def position(index):  # unknown r = j n + i sits at x = (i + 1) h, y = (j + 1) h
        return (index % n + 1).double() * h, (index // n + 1).double() * h

    def k(x, y):  # (B, len(x))
        a1, a2 = coeffs[:, :1], coeffs[:, 1:]
        return torch.exp(a1 * torch.sin(math.pi * x) + a2 * torch.cos(math.pi * y))

    xr, yr = position(rows)
    xc, yc = position(col)
    off = k((xr + xc) / 2, (yr + yc) / 2)  # the face between row and column unknowns
    x, y = position(torch.arange(n * n))
    diagonal = (k(x - h / 2, y) + k(x + h / 2, y) + k(x, y - h / 2) + k(x, y + h / 2))
    values = torch.where(rows == col, diagonal[:, rows], -off) / h ** 2
    matrices = ms.SparseBatch(pattern, values.to(dtype))
    rhs = torch.ones(batch, n * n, dtype=dtype)
    return matrices, rhs, coeffs


def method_for(name: str, matrices: ms.SparseBatch, coeffs: torch.Tensor, n: int):
    """``(method, params)``; SOR's factor is Young's optimum for the Laplacian on this grid,
    Chebyshev's bounds are rigorous (``lambda_min >= k_min lambda_min(L_h)``, Gershgorin)."""
    h = 1.0 / (n + 1)
    if name == "jacobi":
        return ms.Jacobi(), {}
    if name == "sor":
        return ms.SOR(omega=2.0 / (1.0 + math.sin(math.pi * h))), {}
    if name == "ssor":
        return ms.SSOR(omega=2.0 / (1.0 + math.sqrt(2.0 * (1.0 - math.cos(math.pi * h))))), {}
    if name == "cg":
        return ms.ConjugateGradient(), {}
    if name == "cg-jacobi":
        return ms.ConjugateGradient(preconditioner="jacobi"), {}
    if name == "cg-ic0":
        return ms.ConjugateGradient(preconditioner="ic0"), {}
    if name == "bicgstab":
        return ms.BiCGStab(), {}
    if name == "gmres":
        return ms.GMRES(restart=20), {}
    if name.startswith("gmres-"):
        return ms.GMRES(restart=int(name.split("-")[1])), {}
    if name == "chebyshev":
        k_min = torch.exp(torch.clamp(coeffs[:, 0], max=0.0) - coeffs[:, 1].abs())
        lower = k_min * 8.0 / h ** 2 * math.sin(math.pi * h / 2) ** 2
        upper = 2.0 * matrices.diagonal().amax(dim=1)
        return ms.Chebyshev(), {"lower": lower.to(matrices.dtype),
                                "upper": upper.to(matrices.dtype)}
    raise ValueError(f"unknown method {name!r}; one of {METHODS}")


def measure_one(name: str, n: int, batch: int, iterations: int, part: str) -> dict:
    """One method in this process, from a fresh batch: ``part="memory"``, the peak memory of
    ``iterations`` iterations (the level schedules of SOR/SSOR are built inside them), with
    glibc returning every freed block of 1 MiB or more at once (``mallopt``), so that the
    resident size follows the live tensors; ``part="time"``, the time per iteration of a second
    run, with the allocator as it comes."""
    if part == "memory":
        lean_allocator()
    matrices, rhs, coeffs = diffusion_batch(n, batch)
    method, params = method_for(name, matrices, coeffs, n)
    problem = ms.LinearSystem(matrices, rhs)
    row = {"method": name, "n": n, "batch": batch, "threads": torch.get_num_threads()}
    if part == "time":
        with torch.no_grad():
            ms.run(method, problem, params=params, fixed_iterations=1)  # schedules, warm-up
            start = time.perf_counter()
            sol = ms.run(method, problem, params=params, fixed_iterations=iterations)
            seconds = time.perf_counter() - start
        return {**row, "seconds_per_iteration": round(seconds / iterations, 4),
                "finite": bool(torch.isfinite(sol.x).all()),
                "levels": matrices.pattern.levels() if name in ("sor", "ssor", "cg-ic0")
                else None}
    settle()
    before, _ = resident_mib()
    peaks = []
    for _ in range(2):  # the first solve builds the pattern's plans; a second reuses them
        reset_peak()
        with torch.no_grad():
            ms.run(method, problem, params=params, fixed_iterations=iterations)
        peaks.append(resident_mib()[1])
        settle()
    csr = matrices.storage_bytes() / 2 ** 20
    data = rhs.numel() * rhs.element_size() / 2 ** 20
    working, again = peaks[0] - before, peaks[1] - before
    return {**row, "unknowns": n * n, "nnz": matrices.pattern.nnz, "csr_mib": round(csr, 1),
            "rhs_mib": round(data, 1), "vector_mib": round(data, 1),
            "working_peak_mib": round(working, 1), "working_over_csr": round(working / csr, 2),
            "total_over_csr": round((csr + data + working) / csr, 2),
            "second_solve_working_over_csr": round(again / csr, 2)}


def memory(args) -> list[dict]:
    rows = []
    for name in args.methods:
        row = {}
        for part in ("memory", "time"):
            command = [sys.executable, __file__, "one", name, "--part", part, "--n", str(args.n),
                       "--batch", str(args.batch), "--iterations", str(args.iterations),
                       "--threads", str(args.threads)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            row.update(json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def answers(args) -> list[dict]:
    matrices, rhs, coeffs = diffusion_batch(args.n, args.batch)
    start = time.perf_counter()
    crow = matrices.pattern.crow_indices.numpy()
    col = matrices.pattern.col_indices.numpy()
    reference = torch.from_numpy(np.stack([
        scipy.sparse.linalg.spsolve(scipy.sparse.csr_matrix(
            (values.numpy(), col, crow), shape=(args.n ** 2,) * 2).tocsc(), b.numpy())
        for values, b in zip(matrices.values, rhs, strict=True)]))
    print(json.dumps({"spsolve_seconds": round(time.perf_counter() - start, 2)}), flush=True)
    problem = ms.LinearSystem(matrices, rhs)
    rows = []
    for name in args.methods:
        method, params = method_for(name, matrices, coeffs, args.n)
        with torch.no_grad():
            sol = ms.run(method, problem, params=params, rtol=args.rtol, maxiter=args.maxiter)
            residual = torch.linalg.vector_norm(problem.residual(sol.x), dim=1) \
                / torch.linalg.vector_norm(rhs, dim=1)
        error = torch.linalg.vector_norm(sol.x - reference, dim=1) \
            / torch.linalg.vector_norm(reference, dim=1)
        rows.append({"method": name, "n": args.n, "batch": args.batch, "rtol": args.rtol,
                     "converged": int(sol.converged.sum()),
                     "iterations_mean": round(float(sol.iterations.double().mean()), 1),
                     "max_relative_residual": float(residual.max()),
                     "max_relative_difference_to_spsolve": float(error.max()),
                     "seconds": round(sol.wall_time, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    for mode in ("memory", "answers", "one"):
        p = sub.add_parser(mode)
        if mode == "one":
            p.add_argument("method", choices=METHODS)
        else:
            p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
        p.add_argument("--n", type=int, default=256)
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--iterations", type=int, default=20)
        p.add_argument("--rtol", type=float, default=1e-6)
        p.add_argument("--maxiter", type=int, default=5000)
        p.add_argument("--threads", type=int, default=1,
                       help="torch intra-op threads (default 1: on a shared machine more "
                            "threads than free cores slow everything down)")
        if mode == "one":
            p.add_argument("--part", choices=("memory", "time"), default="memory")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "one":
        print(json.dumps(measure_one(args.method, args.n, args.batch, args.iterations,
                                     args.part)))
    elif args.mode == "memory":
        memory(args)
    else:
        answers(args)


if __name__ == "__main__":
    main()
