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
