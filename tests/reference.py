"""Reference helpers for the tests: random well-posed systems and a plain-loop Jacobi."""

from __future__ import annotations

import numpy as np
import torch

DTYPE = torch.float64


def diag_dominant(n: int, *, batch: int | None = None, seed: int = 0,
                  margin: float = 1.0) -> torch.Tensor:
    """A random strictly (row) diagonally dominant matrix, ``(n, n)`` or ``(batch, n, n)``."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, n) if batch is None else (batch, n, n)
    a = torch.randn(*shape, generator=g, dtype=DTYPE)
    off = a.abs().sum(-1) - torch.diagonal(a, dim1=-2, dim2=-1).abs()
    sign = torch.where(torch.rand(off.shape, generator=g, dtype=DTYPE) < 0.5, -1.0, 1.0)
    diag = sign * (off + margin + torch.rand(off.shape, generator=g, dtype=DTYPE))
    return a - torch.diag_embed(torch.diagonal(a, dim1=-2, dim2=-1)) + torch.diag_embed(diag)


def randn(*shape, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=DTYPE)


def plain_jacobi(A: np.ndarray, b: np.ndarray, x0: np.ndarray, *, rtol: float, maxiter: int,
                 omega: float = 1.0, xstar: np.ndarray | None = None,
                 stop: bool = True) -> tuple[np.ndarray, int]:
    """One instance of (weighted) Jacobi in a plain Python loop, as the textbook writes it.

    Stops at the first ``k`` with ``||b - A x_k|| <= rtol ||b||`` (or, given ``xstar``,
    ``||x_k - x*|| <= rtol ||x*||``); with ``stop=False`` it runs exactly ``maxiter`` steps.
    Returns ``(x_k, k)``.
    """
    d = np.diag(A)
    x = np.array(x0, dtype=np.float64, copy=True)

    def monitored(x):
        return np.linalg.norm(b - A @ x) if xstar is None else np.linalg.norm(x - xstar)

    reference = np.linalg.norm(b) if xstar is None else np.linalg.norm(xstar)
    k = 0
    while k < maxiter and not (stop and monitored(x) <= rtol * reference):
        x = x + omega * (b - A @ x) / d
        k += 1
    return x, k


def job_threads(job):
    """A picklable job for process-pool tests: echo the job and report the worker's threads."""
    import os

    return job, torch.get_num_threads(), os.getpid()


def plain_ic0(A: np.ndarray, shift: float = 0.0) -> np.ndarray | None:
    """Zero fill-in incomplete Cholesky of ``A + shift I`` in plain loops, as Saad (2003,
    Algorithm 10.4, IKJ variant of ILU(0)) writes it for the symmetric case: Gaussian
    elimination that keeps only the updates landing on the nonzero pattern of ``A``.

    Returns the lower factor ``L`` (``L L^T = A + shift I`` on the pattern), or ``None`` if a
    pivot is not positive.
    """
    n = A.shape[0]
    a = np.array(A, dtype=np.float64, copy=True) + shift * np.eye(n)
    pattern = (A != 0) | np.eye(n, dtype=bool)
    for k in range(n):
        if not a[k, k] > 0:
            return None
        a[k, k] = np.sqrt(a[k, k])
        for i in range(k + 1, n):
            if pattern[i, k]:
                a[i, k] /= a[k, k]
        for j in range(k + 1, n):
            for i in range(j, n):
                if pattern[i, j] and pattern[i, k] and pattern[j, k]:
                    a[i, j] -= a[i, k] * a[j, k]
    return np.tril(a)


def sparse_spd(n: int, *, density: float = 0.3, seed: int = 0,
               margin: float = 0.5) -> np.ndarray:
    """A random sparse symmetric positive definite matrix (diagonally dominant by ``margin``)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)) * (rng.random((n, n)) < density)
    a = np.tril(a, -1)
    a = a + a.T
    return a + np.diag(np.abs(a).sum(1) + margin + rng.random(n))


def job_sleep(seconds):
    """A picklable job that outlives a parent killed under it: report the pid, then sleep."""
    import os
    import sys
    import time

    # One write per line: print() writes the number and the newline separately, and two
    # workers sharing the pipe could interleave them ("123456\n\n").
    sys.stdout.write(f"{os.getpid()}\n")
    sys.stdout.flush()
    time.sleep(seconds)
    return seconds


def job_fail_or_sleep(job):
    """A picklable job for fail-fast tests: ``"fail"`` raises at once, a number sleeps that long
    (standing for a long training)."""
    import time

    if job == "fail":
        raise ValueError("this cell is broken")
    time.sleep(job)
    return job


def job_reporting(steps):
    """A picklable job that reports progress as a training does: a bar of ``steps`` steps (each
    a little slower than the bar's send interval, so every step is sent), then a note."""
    import time

    from metasolve.parallel import report
    from metasolve.training import progress

    with progress.progress_bar(True, total=steps, description="training demo") as bar:
        for _ in range(steps):
            time.sleep(progress.SEND_EVERY * 1.1)
            bar.advance("val 1.0")
    report({"kind": "note", "text": "evaluated"})
    return {"steps": steps, "label": f"{steps} steps"}


def plain_sor(A: np.ndarray, b: np.ndarray, x0: np.ndarray, *, omega: float, sweeps: int,
              symmetric: bool = False) -> np.ndarray:
    """``sweeps`` SOR iterations on one instance in a plain loop over the unknowns, as the
    textbook writes them (each unknown relaxed towards the value that zeroes its row, using the
    newest values of the others); ``symmetric`` adds the backward sweep of SSOR."""
    n = len(b)
    x = np.array(x0, dtype=np.float64, copy=True)

    def relax(i):
        sigma = A[i] @ x - A[i, i] * x[i]
        x[i] = (1 - omega) * x[i] + omega * (b[i] - sigma) / A[i, i]

    for _ in range(sweeps):
        for i in range(n):
            relax(i)
        if symmetric:
            for i in reversed(range(n)):
                relax(i)
    return x
