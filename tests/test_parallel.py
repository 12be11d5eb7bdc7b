"""map_jobs: in order, in-process or in a spawned pool of one-thread workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reference import job_fail_or_sleep, job_threads

from metasolve.parallel import JobError, map_jobs


def test_in_process_keeps_order_and_reports_each_job():
    done = []
    assert map_jobs(abs, [-3, 1, -2], workers=1, on_done=done.append) == [3, 1, 2]
    assert done == [3, 1, 2]
    assert map_jobs(abs, [], workers=4) == []


def test_process_pool_keeps_order_and_uses_one_thread_per_worker(monkeypatch):
    # Workers would inherit 2 threads from the environment; the pool must bring them to 1.
    # (torch takes the smaller of the two counts, and conftest sets both to 1.)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    done = []
    results = map_jobs(job_threads, list(range(6)), workers=2, on_done=done.append)
    assert [job for job, _, _ in results] == list(range(6))
    assert all(threads == 1 for _, threads, _ in results)
    assert os.getpid() not in {pid for _, _, pid in results}
    assert sorted(done) == sorted(results)


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers"):
        map_jobs(abs, [1], workers=0)


@pytest.mark.parametrize("engine, address, argument", [
    ("dask", None, "engine"), ("Ray", None, "engine"),
    ("local", "head:6379", "address"),  # an address names a Ray cluster: engine='ray' only
    ("ray", "", "address"), ("ray", "  ", "address"), ("ray", 6379, "address")])
def test_bad_engine_or_address(engine, address, argument):
    # Refused before any job runs and before ray is imported.
    ran = []
    with pytest.raises(ValueError, match=f"^{argument} "):
        map_jobs(ran.append, [1], engine=engine, address=address)
    assert ran == []


def test_the_ray_engine_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ImportError, match=r'engine=.ray.*pip install "metasolve\[ray\]"'):
        map_jobs(abs, [1], engine="ray")
    assert map_jobs(abs, [-1], workers=1) == [1]  # the local engine does not need it


def test_a_failing_job_stops_the_pool_at_once():
    # One job fails immediately while the others would sleep for minutes: the map must raise as
    # soon as the failure is known, naming the job, with the original exception as its cause.
    start = time.monotonic()
    with pytest.raises(JobError, match="'fail'.* failed: ValueError: this cell is broken") as info:
        map_jobs(job_fail_or_sleep, [300, "fail", 300, 300], workers=2)
    assert time.monotonic() - start < 60  # spawning two interpreters, not the 300 s sleeps
    assert info.value.index == 1 and info.value.job == "fail"
    assert isinstance(info.value.__cause__, ValueError)


def test_in_process_stops_at_the_first_failure():
    ran = []

    def job(x):
        ran.append(x)
        return job_fail_or_sleep(x)

    with pytest.raises(JobError, match="cell 1 failed: ValueError") as info:
        map_jobs(job, [0, "fail", 0], workers=1, name=lambda j: f"cell {ran.index(j)}")
    assert ran == [0, "fail"]
    assert isinstance(info.value.error, ValueError)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses prctl(PR_SET_PDEATHSIG)")
def test_workers_end_when_the_parent_is_killed(tmp_path):
    # A parent runs two 60 s jobs in a pool and is killed; its workers must not keep running.
    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from reference import job_sleep\n"
        "from metasolve.parallel import map_jobs\n"
        "if __name__ == '__main__':\n"
        "    map_jobs(job_sleep, [60, 60], workers=2)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(parent.stdout.readline()) for _ in range(2)]
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60  # generous: a loaded machine delivers signals late
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by init) counts as ended.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
