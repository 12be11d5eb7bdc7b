"""Map a function over independent jobs: in-process, in a pool of worker processes, or on Ray.

Jobs run on one intra-op thread: the experiments' problems are small, and torch's thread pool
slows small dense kernels down by orders of magnitude when cores are shared. Each worker is a
fresh (spawned) interpreter, so ``workers`` processes use ``workers`` cores without
oversubscribing them; in-process, the caller's thread count is restored afterwards. On Linux a
worker ends when the process that started it dies, so a killed run leaves no orphans training on.

A job may tell the caller how it is doing: :func:`report` sends an event (a small picklable dict)
to ``map_jobs``'s ``on_event``, directly in-process and through a queue from a worker process;
the caller reads the queue between completions, in its own thread.

Two engines run the jobs (``map_jobs(engine=...)``): ``"local"``, in-process or in the pool on
this machine, and ``"ray"``, one Ray task per job on a local Ray runtime or on a Ray cluster
(the optional extra ``metasolve[ray]``; ray is imported only then). On Ray too, every job runs on
one intra-op thread, results come back in job order, the first failure cancels the other tasks
and raises :class:`JobError`, and :func:`report` reaches ``on_event``: through a Ray queue (an
actor) that the caller drains between completions.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import functools
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
from collections.abc import Callable, Iterable

import torch

from .extras import require
from .validation import check_choice, check_count

__all__ = ["ENGINES", "JobError", "check_engine", "describe_engine", "listening", "map_jobs",
           "report"]

_PR_SET_PDEATHSIG = 1  # prctl(2) option: a signal for this process when its parent exits

#: Where report() sends events: a callable in-process, a queue in a worker process.
_sink: Callable[[dict], None] | None = None
_queue = None
_job: int | None = None  # the index of the job this worker runs

#: The engines of :func:`map_jobs`.
ENGINES = ("local", "ray")


def report(event: dict) -> bool:
    """Send ``event`` (a picklable dict) to the caller of :func:`map_jobs` running this job, as
    ``on_event(index, event)``; returns whether anyone listens (False outside a job, or when the
    caller passed no ``on_event``). Never raises: progress must not break a job."""
    try:
        if _sink is not None:
            _sink(event)
            return True
        if _queue is not None and _job is not None:
            _queue.put((_job, event))
            return True
    except Exception:  # a closed queue or a failing display: the job goes on
        return False
    return False


def listening() -> bool:
    """Whether :func:`report` reaches a caller (the current code runs as a job of a
    :func:`map_jobs` that was given ``on_event``)."""
    return _sink is not None or (_queue is not None and _job is not None)


#: The last event a worker process queues for a job: the caller passes the job's "end" on only
#: after it, since a multiprocessing queue delivers through a feeder thread that may still hold
#: the job's last events when its result is already back.
_FLUSHED = "flushed"


def _run_job(fn: Callable, index: int, job):
    """A worker's job: ``fn(job)``, with :func:`report` addressed to job ``index``."""
    global _job
    _job = index
    try:
        report({"kind": "start"})
        return fn(job)
    finally:
        _job = None
        if _queue is not None:
            _queue.put((index, {"kind": _FLUSHED}))


def _init_worker(parent: int, events=None):
    global _queue
    _queue = events
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


def check_engine(engine: str, address: str | None = None) -> None:
    """Check :func:`map_jobs`'s ``engine`` and ``address`` (an address is for Ray only)."""
    check_choice("engine", engine, ENGINES)
    if address is None:
        return
    if engine != "ray":
        raise ValueError(f"address is for engine='ray' only (a Ray cluster to run on), got "
                         f"address={address!r} with engine={engine!r}")
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"address must name a Ray cluster ('HOST:PORT' or 'auto'), got "
                         f"{address!r}")


def describe_engine(engine: str, workers: int, jobs: int, address: str | None = None) -> str:
    """Where :func:`map_jobs` runs ``jobs`` jobs, in words for a progress line (e.g. ``2 worker
    processes``, ``a local Ray runtime of 2 CPUs``, ``the Ray cluster at head:6379``)."""
    if engine == "local":
        count = min(workers, max(jobs, 1))
        return f"{count} worker process{'es' * (count != 1)}"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return "Ray (the runtime this process is connected to)"
    if address is None:
        return f"a local Ray runtime of {workers} CPU{'s' * (workers != 1)}"
    return f"the Ray cluster at {address}"


def map_jobs(fn: Callable, jobs: Iterable, workers: int = 1,
             on_done: Callable | None = None, name: Callable | None = None,
             on_event: Callable | None = None, engine: str = "local",
             address: str | None = None) -> list:
    """``[fn(job) for job in jobs]``, in order, computed by ``workers`` processes or on Ray.

    ``fn`` must be importable (a module-level function). ``on_done(result)`` is called as each
    job finishes, in completion order (for progress reporting). ``on_event(index, event)``, if
    given, is called in the caller's thread with ``{"kind": "start"}`` when job ``index`` starts,
    with every event the job sends by :func:`report`, and with ``{"kind": "end", "result":
    result}`` when it ends (just before ``on_done``).

    Fails fast: the first job that raises stops the map. Jobs not yet started are cancelled, the
    running workers are terminated (their work is lost unless the job saves it as it goes), and
    :class:`JobError` is raised, naming the job by ``name(job)`` (default: its repr) with the
    original exception as its cause. An interrupt of the caller also terminates the workers.

    ``engine="ray"`` runs each job as a Ray task (1 CPU, no retries) instead, with the same
    contract: results in job order, ``on_done`` and ``on_event`` in the caller's thread, fail
    fast (the other tasks are cancelled, running ones killed). If this process is already
    connected to Ray (``ray.init`` was called), the map uses that connection and leaves it
    open. Otherwise it connects for the map and disconnects after it: to the cluster at
    ``address`` (``"HOST:PORT"`` of its head, or ``"auto"``; ``workers`` is then ignored, the
    cluster's CPUs decide how many jobs run at once), or, with no address, to a local Ray
    runtime of ``workers`` CPUs that it starts and stops. ``fn`` and the jobs are pickled to the
    Ray workers; on a cluster, metasolve must be installed on every node, and the files the jobs
    write land on the node that ran them. ray missing raises an ImportError that names the extra
    ``metasolve[ray]``.
    """
    check_count("workers", workers, minimum=1)
    check_engine(engine, address)
    jobs = list(jobs)
    name = name or _default_name
    if engine == "ray":
        return _map_ray(fn, jobs, workers, on_done, name, on_event, address)
    if workers == 1 or len(jobs) <= 1:
        return _map_here(fn, jobs, on_done, name, on_event)
    context = multiprocessing.get_context("spawn")
    events = context.Queue() if on_event is not None else None
    pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                  initializer=_init_worker, initargs=(os.getpid(), events))
    try:
        futures = {pool.submit(_run_job, fn, i, job): i for i, job in enumerate(jobs)}
        results: list = [None] * len(jobs)
        pending = set(futures)
        flushed: set[int] = set()
        while pending:
            # Wake up now and then to pass the workers' events on, in this thread.
            finished, pending = cf.wait(pending, timeout=0.2 if events else None,
                                        return_when=cf.FIRST_COMPLETED)
            _drain(events, on_event, flushed)
            for future in sorted(finished, key=futures.get):
                i = futures[future]
                error = future.exception()
                if error is not None:
                    raise JobError(jobs[i], i, error, name(jobs[i])) from error
                results[i] = future.result()
                if on_event is not None:
                    _drain(events, on_event, flushed, until=i)
                    on_event(i, {"kind": "end", "result": results[i]})
                if on_done is not None:
                    on_done(results[i])
    except BaseException:
        # A failed job, an interrupt or a failing callback: no worker may train on unobserved.
        _stop(pool)
        raise
    pool.shutdown(wait=True)
    if events is not None:
        events.close()
        events.join_thread()
    return results


def _map_here(fn, jobs, on_done, name, on_event) -> list:
    """map_jobs in this process, on one intra-op thread."""
    global _sink
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = []
    try:
        for i, job in enumerate(jobs):
            if on_event is not None:
                on_event(i, {"kind": "start"})
                _sink = functools.partial(on_event, i)
            try:
                results.append(fn(job))
            except Exception as exc:
                raise JobError(job, i, exc, name(job)) from exc
            finally:
                _sink = None
            if on_event is not None:
                on_event(i, {"kind": "end", "result": results[-1]})
            if on_done is not None:
                on_done(results[-1])
    finally:
        torch.set_num_threads(threads)
    return results


def _drain(events, on_event, flushed: set[int], until: int | None = None) -> None:
    """Pass every queued worker event on to ``on_event``, noting in ``flushed`` the jobs whose
    last event has come; with ``until``, wait (up to ``FLUSH_WAIT`` seconds) for that job's."""
    if events is None:
        return
    while True:
        waiting = until is not None and until not in flushed
        try:
            index, event = events.get(timeout=FLUSH_WAIT) if waiting else events.get_nowait()
        except queue.Empty:
            return
        if event.get("kind") == _FLUSHED:
            flushed.add(index)
        else:
            on_event(index, event)


#: How long the caller waits for a finished job's last events (they are in the queue's pipe by
#: then; this bounds the wait should a worker have died between its result and its marker).
FLUSH_WAIT = 5.0


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


# -- the Ray engine ---------------------------------------------------------------------------

#: Waiting for Ray tasks wakes up this often to pass the tasks' events on (seconds).
RAY_POLL = 0.2


def _run_ray_job(fn: Callable, index: int, job, events=None):
    """A Ray task: ``fn(job)`` on one intra-op thread, :func:`report` sending to ``events``.

    Ray reuses its worker processes from task to task: the thread count and the event sink are
    set for this job and put back afterwards."""
    global _queue, _job
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _queue, _job = events, index
    try:
        report({"kind": "start"})
        return fn(job)
    finally:
        _queue, _job = None, None
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _ray_runtime(address: str | None, workers: int):
    """The ray module, connected for the duration: the caller's existing connection, or one
    made here (to ``address``, or to a local runtime of ``workers`` CPUs) and closed after."""
    ray = require("ray", "the Ray engine (engine='ray', --engine ray)")
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        # "local": a runtime of its own, even where RAY_ADDRESS or `ray start` name a cluster.
        ray.init(address="local", num_cpus=workers, include_dashboard=False,
                 logging_level=logging.WARNING)
    else:
        _check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise ConnectionError unless something listens at ``address`` (``HOST:PORT``): Ray itself
    retries an unreachable head for minutes before it gives up. Other forms (``auto``,
    ``ray://...``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address} ({exc}); start its head "
                              "with `ray start --head`, or check the host and port") from exc


def _map_ray(fn, jobs, workers, on_done, name, on_event, address) -> list:
    """map_jobs on Ray: one task per job, waited for in completion order."""
    with _ray_runtime(address, workers) as ray:
        if not jobs:
            return []
        events = None
        if on_event is not None:
            from ray.util.queue import Queue

            # The queue is an actor; it must not wait for a CPU the jobs hold.
            events = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(_run_ray_job).options(num_cpus=1, max_retries=0)
        refs = {task.remote(fn, i, job, events): i for i, job in enumerate(jobs)}
        results: list = [None] * len(jobs)
        pending = list(refs)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1,
                                             timeout=RAY_POLL if events else None)
                # A task's report() returns once its event is in the queue: every event a
                # finished task sent is drained here, before its end.
                _drain_ray(events, on_event)
                for ref in sorted(finished, key=refs.get):
                    i = refs[ref]
                    try:
                        results[i] = ray.get(ref)
                    except Exception as exc:
                        # A task's exception comes back as a RayTaskError that holds it.
                        error = getattr(exc, "cause", None)
                        error = error if isinstance(error, BaseException) else exc
                        raise JobError(jobs[i], i, error, name(jobs[i])) from error
                    if on_event is not None:
                        on_event(i, {"kind": "end", "result": results[i]})
                    if on_done is not None:
                        on_done(results[i])
        except BaseException:
            # A failed job, an interrupt or a failing callback: no task may run on unobserved.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if events is not None:
                events.shutdown(force=True)
    return results


def _drain_ray(events, on_event) -> None:
    """Pass every event queued by the Ray tasks on to ``on_event``."""
    if events is None:
        return
    count = events.qsize()
    if count:
        for index, event in events.get_nowait_batch(count):
            on_event(index, event)
