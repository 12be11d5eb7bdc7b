"""The Ray engine of map_jobs and reproduce (docs/architecture.md, sec. 9): the same records, in
the same order, as an in-process run; order, fail-fast and progress events as the local engine.

One local Ray runtime of 2 CPUs serves the module; the command-line test starts its own (the path
a user's `metasolve reproduce NAME --engine ray` takes). The checks that need no ray (argument
errors, the message when ray is missing) are in test_parallel.py and test_cli.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs the optional extra metasolve[ray] "
                                        '(pip install "metasolve[ray]")')

from reference import job_fail_or_sleep, job_reporting, job_threads  # noqa: E402

import metasolve  # noqa: E402
from metasolve.evaluation.records import read_records, without_timings  # noqa: E402
from metasolve.parallel import JobError, map_jobs  # noqa: E402
from metasolve.runner import reproduce  # noqa: E402

TESTS = Path(__file__).resolve().parent
SRC = Path(metasolve.__file__).resolve().parents[1]

#: A lean local Ray: no usage statistics, no dashboard (ray.init's include_dashboard below).
LEAN = {"RAY_USAGE_STATS_ENABLED": "0"}


def _worker_path() -> str:
    """PYTHONPATH for Ray's workers: this tree's metasolve and the tests' job functions."""
    return os.pathsep.join(p for p in (str(SRC), str(TESTS), os.environ.get("PYTHONPATH"))
                           if p)


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as patch:
        for key, value in LEAN.items():
            patch.setenv(key, value)
        patch.setenv("PYTHONPATH", _worker_path())  # Ray's workers inherit the environment
        # Workers would start torch on 2 threads (torch takes the smaller of the two): each
        # task must bring it to 1.
        patch.setenv("OMP_NUM_THREADS", "2")
        patch.setenv("MKL_NUM_THREADS", "2")
        patch.delenv("RAY_ADDRESS", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level="warning")
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """Smoke records of an in-process run, by experiment name (computed once)."""
    runs = {}

    def records(name):
        if name not in runs:
            out = tmp_path_factory.mktemp(f"{name}-local")
            runs[name] = reproduce(name, scale="smoke", out_dir=out, workers=1,
                                   progress=False)["records"]
        return runs[name]

    return records


@pytest.mark.parametrize("name", ["r2n2-vanderpol", "poisson-jacobi"])
def test_a_smoke_run_on_ray_writes_the_in_process_records(cluster, in_process, name, tmp_path,
                                                          capsys):
    result = reproduce(name, scale="smoke", out_dir=tmp_path, workers=2, engine="ray")
    assert "cells on Ray" in capsys.readouterr().err  # the progress line names the engine
    expected = without_timings(in_process(name))
    assert expected, f"{name} wrote no records"
    assert without_timings(result["records"]) == expected
    assert without_timings(read_records(result["json"])) == expected
    assert (tmp_path / name / "smoke" / "models").is_dir()  # the cells wrote under out_dir


def test_map_jobs_on_ray_keeps_order_on_one_thread_per_task(cluster):
    done = []
    results = map_jobs(job_threads, list(range(6)), on_done=done.append, engine="ray")
    assert [job for job, _, _ in results] == list(range(6))
    assert all(threads == 1 for _, threads, _ in results)
    assert os.getpid() not in {pid for _, _, pid in results}  # they ran in Ray's workers
    assert sorted(done) == sorted(results)
    assert map_jobs(job_threads, [], engine="ray") == []


def test_a_failing_task_raises_job_error_and_cancels_the_others(cluster):
    with pytest.raises(JobError, match="'fail'.* failed: ValueError: this cell is broken") as info:
        map_jobs(job_fail_or_sleep, [300, "fail", 300], engine="ray")
    assert info.value.index == 1 and info.value.job == "fail"
    assert isinstance(info.value.error, ValueError)
    assert isinstance(info.value.__cause__, ValueError)
    # The 300 s sleepers held both CPUs; cancelled, they give them back (a bound on the wait,
    # not on speed: uncancelled, the CPUs stay taken for five minutes).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ray.available_resources().get("CPU", 0) < 2:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2


def test_reports_from_ray_tasks_reach_the_caller_before_their_end(cluster):
    events = []
    results = map_jobs(job_reporting, [2, 3], engine="ray",
                       on_event=lambda i, e: events.append((i, e)))
    assert [r["steps"] for r in results] == [2, 3]
    for index, steps in enumerate([2, 3]):
        mine = [e for i, e in events if i == index]
        kinds = [e["kind"] for e in mine]
        assert kinds[0] == "start" and kinds[-1] == "end", kinds
        bars = [e for e in mine if e["kind"] == "bar"]
        assert bars[0]["completed"] == 0 and bars[0]["total"] == steps
        assert bars[-1]["closed"] and bars[-1]["completed"] == steps
        assert {"kind": "note", "text": "evaluated"} in mine
        assert mine[-1]["result"]["label"] == f"{steps} steps"


def test_the_command_line_runs_on_a_ray_runtime_of_its_own(cluster, in_process, tmp_path):
    """`metasolve reproduce NAME --engine ray` in a fresh process: it starts a local Ray runtime
    of --workers CPUs (beside the module's), writes the in-process records, and stops it."""
    json_path = tmp_path / "records.json"
    env = {**os.environ, **LEAN, "PYTHONPATH": _worker_path()}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-m", "metasolve", "reproduce", "r2n2-vanderpol", "--scale", "smoke",
         "--engine", "ray", "--workers", "2", "--out", str(tmp_path), "--json", str(json_path)],
        capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "2 cells on a local Ray runtime of 2 CPUs" in done.stderr
    assert "local Ray, 2 CPU(s)" in done.stdout
    assert without_timings(read_records(json_path)) == without_timings(
        in_process("r2n2-vanderpol"))


def test_an_address_where_no_cluster_listens_fails_in_one_line(tmp_path):
    """Ray would retry an unreachable head for minutes; the command says so at once."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **LEAN, "PYTHONPATH": _worker_path()}
    done = subprocess.run(
        [sys.executable, "-m", "metasolve", "reproduce", "r2n2-vanderpol", "--scale", "smoke",
         "--engine", "ray", "--address", f"127.0.0.1:{port}", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr
    assert (f"error: cannot reach the Ray cluster: no Ray cluster answers at 127.0.0.1:{port}"
            in done.stderr)
    assert "Traceback" not in done.stderr
