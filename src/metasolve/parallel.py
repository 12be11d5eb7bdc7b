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


class JobError(RuntimeError):
    """A job of :func:`map_jobs` raised: ``job`` (and its ``index``) failed with ``error``, which
    is also the ``__cause__``. The message names the job and the original exception in one
    line."""

    def __init__(self, job, index: int, error: BaseException, name: str):
        self.job, self.index, self.error, self.name = job, index, error, name
        text = " ".join(str(error).split())  # one line, whatever the original message was
        super().__init__(f"{name} failed: {type(error).__name__}"
                         + (f": {text}" if text else ""))


def _default_name(job) -> str:
    text = repr(job)
    return f"job {text[:117]}..." if len(text) > 120 else f"job {text}"


def map_jobs(fn: Callable, jobs: Iterable, workers: int = 1,
             on_done: Callable | None = None, name: Callable | None = None) -> list:
    """``[fn(job) for job in jobs]``, in order, computed by ``workers`` processes.

    ``fn`` must be importable (a module-level function). ``on_done(result)`` is called as each
    job finishes, in completion order (for progress reporting).

    Fails fast: the first job that raises stops the map. Jobs not yet started are cancelled, the
    running workers are terminated (their work is lost unless the job saves it as it goes), and
    :class:`JobError` is raised, naming the job by ``name(job)`` (default: its repr) with the
    original exception as its cause. An interrupt of the caller also terminates the workers.
    """
    check_count("workers", workers, minimum=1)
    jobs = list(jobs)
    name = name or _default_name
    if workers == 1 or len(jobs) <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            results = []
            for i, job in enumerate(jobs):
                try:
                    results.append(fn(job))
                except Exception as exc:
                    raise JobError(job, i, exc, name(job)) from exc
                if on_done is not None:
                    on_done(results[-1])
        finally:
            torch.set_num_threads(threads)
        return results
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                  initializer=_init_worker, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        results: list = [None] * len(jobs)
        for future in cf.as_completed(futures):
            i = futures[future]
            error = future.exception()
            if error is not None:
                raise JobError(jobs[i], i, error, name(jobs[i])) from error
            results[i] = future.result()
            if on_done is not None:
                on_done(results[i])
    except BaseException:
        # A failed job, an interrupt or a failing on_done: no worker may train on unobserved.
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    return results


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel the pool's queued jobs and terminate its workers now, not when they finish."""
    # The executor offers no public way to end running jobs before Python 3.14
    # (terminate_workers); its process table is the only handle on them.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join()
