"""Map a function over independent jobs: in-process, or in a pool of worker processes.

Jobs run on one intra-op thread: the experiments' problems are small, and torch's thread pool
slows small dense kernels down by orders of magnitude when cores are shared. Each worker is a
fresh (spawned) interpreter, so ``workers`` processes use ``workers`` cores without
oversubscribing them; in-process, the caller's thread count is restored afterwards.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Iterable

import torch

from .validation import check_count


def _init_worker():
    torch.set_num_threads(1)


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
                                initializer=_init_worker) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        results: list = [None] * len(jobs)
        for future in cf.as_completed(futures):
            results[futures[future]] = future.result()
            if on_done is not None:
                on_done(results[futures[future]])
    return results
