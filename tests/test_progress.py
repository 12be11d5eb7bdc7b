"""Progress that reads everywhere: events from jobs (in-process and in worker processes) reach
the run's display; the display prints plain lines when it is not on a terminal."""

from __future__ import annotations

import io

from reference import job_reporting

from metasolve.parallel import listening, map_jobs, report
from metasolve.progress import LineBar, RunMonitor, estimate_left
from metasolve.training.progress import progress_bar


def _collect(workers):
    events = []
    results = map_jobs(job_reporting, [2, 3], workers=workers,
                       on_event=lambda i, e: events.append((i, e)))
    return results, events


def _check_events(events, jobs=2):
    for index, steps in enumerate([2, 3][:jobs]):
        mine = [e for i, e in events if i == index]
        kinds = [e["kind"] for e in mine]
        assert kinds[0] == "start" and kinds[-1] == "end", kinds
        bars = [e for e in mine if e["kind"] == "bar"]
        # Opened at 0, sent as it advanced, closed complete.
        assert bars[0]["completed"] == 0 and bars[0]["total"] == steps
        assert bars[-1]["closed"] and bars[-1]["completed"] == steps
        assert any(not e["closed"] and e["completed"] > 0 for e in bars)
        assert {"kind": "note", "text": "evaluated"} in mine
        assert mine[-1]["result"]["label"] == f"{steps} steps"


def test_events_of_in_process_jobs_reach_the_caller():
    results, events = _collect(workers=1)
    assert [r["steps"] for r in results] == [2, 3]
    _check_events(events)
    assert not listening() and report({"kind": "note", "text": "x"}) is False  # outside a job


def test_events_of_worker_processes_reach_the_parent():
    results, events = _collect(workers=2)
    assert [r["steps"] for r in results] == [2, 3]
    _check_events(events)


def test_a_bar_outside_a_run_prints_plain_lines_off_a_terminal(capsys):
    with progress_bar(True, total=3, description="training x", completed=1) as bar:
        for _ in range(2):
            bar.advance()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "training x: 1/3, resumed at 1"
    assert err[-1].startswith("training x: 3/3 in ")
    with progress_bar(False, total=3, description="quiet") as bar:
        bar.advance()
    assert capsys.readouterr().err == ""


def test_a_line_bar_beats_at_most_every_heartbeat():
    stream = io.StringIO()
    bar = LineBar(4, "fit", stream=stream, heartbeat=0.0)
    for _ in range(4):
        bar.advance("val 2")
    bar.close()
    lines = stream.getvalue().splitlines()
    # start, steps 1-3 (the last step is the closing line's), end
    assert lines[0] == "fit: 0/4" and lines[1].startswith("fit: 1/4, val 2 (ETA")
    assert len(lines) == 5 and lines[-1].startswith("fit: 4/4 in")


def test_the_run_monitor_prints_one_line_per_cell_with_its_records():
    stream = io.StringIO()
    monitor = RunMonitor("demo (quick scale)", ["row=a", "row=b"], "out/demo.json", "out",
                         workers=2, reused=3, stream=stream, heartbeat=0.0)
    with monitor:
        monitor.event(0, {"kind": "start"})
        monitor.event(1, {"kind": "start"})
        bar = {"kind": "bar", "bar": 7, "description": "training L", "completed": 5,
               "total": 10, "start": 5, "status": "val 1", "closed": False}
        monitor.event(1, bar)  # a resumed training
        monitor.event(1, {**bar, "completed": 6})
        monitor.event(0, {"kind": "note", "text": "evaluated"})
        monitor.event(0, {"kind": "end", "result": {"label": "A"}})
        monitor.event(0, {**bar, "completed": 9})  # late: ignored
        monitor.event(1, {"kind": "end", "result": {"label": "B"}})
    text = stream.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith("demo (quick scale): 2 cells on 2 worker processes; records go "
                               "to out/demo.json")
    assert any(line.startswith("reusing 3 checkpoints") for line in lines)
    assert "  row=b: training L: resumed from its checkpoint at 5/10" in lines
    assert "  row=b: training L: 6/10, val 1" in lines
    assert "  row=a: evaluated" in lines
    done = [line for line in lines if line.startswith("[")]
    assert done[0].startswith("[1/2] A done in ") and "its records go to out/demo.json" in done[0]
    assert done[1].startswith("[2/2] B done in ") and "2/2 cells done" in done[1]
    assert "9/10" not in text


def test_a_disabled_monitor_is_silent():
    stream = io.StringIO()
    with RunMonitor("x", ["a"], "r.json", ".", 1, enabled=False, stream=stream) as monitor:
        monitor.event(0, {"kind": "start"})
        monitor.event(0, {"kind": "end", "result": {}})
    assert stream.getvalue() == ""


def test_estimate_left():
    assert estimate_left(10.0, 0.5) == 10.0
    assert estimate_left(10.0, 1.0) == 0.0
    assert estimate_left(0.0, 0.5) is None and estimate_left(5.0, 0.001) is None
