"""map_jobs: in order, in-process or in a spawned pool of one-thread workers."""

from __future__ import annotations

import os

import pytest
from reference import job_threads

from metasolve.parallel import map_jobs


def test_in_process_keeps_order_and_reports_each_job():
    done = []
    assert map_jobs(abs, [-3, 1, -2], workers=1, on_done=done.append) == [3, 1, 2]
    assert done == [3, 1, 2]
    assert map_jobs(abs, [], workers=4) == []


def test_process_pool_keeps_order_and_uses_one_thread_per_worker(monkeypatch):
    # Workers would inherit 2 threads from the environment; the pool must bring them to 1.
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    done = []
    results = map_jobs(job_threads, list(range(6)), workers=2, on_done=done.append)
    assert [job for job, _, _ in results] == list(range(6))
    assert all(threads == 1 for _, threads, _ in results)
    assert os.getpid() not in {pid for _, _, pid in results}
    assert sorted(done) == sorted(results)


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers"):
        map_jobs(abs, [1], workers=0)
