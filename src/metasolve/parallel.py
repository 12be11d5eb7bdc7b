"""Map a function over independent jobs: in-process, or in a pool of worker processes.

Jobs run on one intra-op thread: the experiments' problems are small, and torch's thread pool
slows small dense kernels down by orders of magnitude when cores are shared. Each worker is a
fresh (spawned) interpreter, so ``workers`` processes use ``workers`` cores without
oversubscribing them; in-process, the caller's thread count is restored afterwards. On Linux a
worker ends when the process that started it dies, so a killed run leaves no orphans training on.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable

import torch

from .validation import check_count

_PR_SET_PDEATHSIG = 1  # prctl(2) option: a signal for this process when its parent exits


def _init_worker(parent: int):
    torch.set_num_threads(1)
    # A long training job must not outlive a `reproduce` that was killed: on Linux, ask the
    # kernel to terminate this worker when the parent process dies (and check that it has not
    # died already, before the request was made).
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)


def map_jobs(fn: Callable, jobs: Iterable, workers: int = 1,
             on_done: Callable | None = None) -> list:
    """``[fn(job) for job in jobs]``, in order, computed by ``workers`` processes.

    ``fn`` must be importable (a module-level function). ``on_done(result)`` is called as each
    job finishes, in completion order (for progress reporting).
    """
    check_count("workers", workers, minimum=1)
    jobs = list(jobs)
    if workers == 1 or len(jobs) <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            results = []
            for job in jobs:
                results.append(fn(job))
                if on_done is not None:
                    on_done(results[-1])
        finally:
            torch.set_num_threads(threads)
        return results
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        results: list = [None] * len(jobs)
        for future in cf.as_completed(futures):
            results[futures[future]] = future.result()
            if on_done is not None:
                on_done(results[futures[future]])
    return results
