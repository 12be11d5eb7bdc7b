"""Progress of long work that reads on a terminal and in a log or a pipe.

Progress goes to standard error, so standard output keeps only results (tables, paths). On a
terminal it is a live rich display; anywhere else (a pipe, a file, a captured stream) it is plain
lines: one per finished cell of a run, and a heartbeat at most every :data:`HEARTBEAT` seconds
while work goes on, so that a piped run is never silent for long.

* :class:`LineBar` / :func:`standalone_bar`: the bar of one loop (a training's epochs) run
  outside ``metasolve reproduce``.
* :class:`RunMonitor`: the display of a ``reproduce`` run in the parent process: cells done out
  of the total, elapsed time and an estimate of the time left, and the trainings running in each
  cell, whether the cell runs in-process, in a worker process or as a Ray task (the events arrive
  through :func:`metasolve.parallel.map_jobs`'s ``on_event``; see ``training/progress.py`` for
  the sending side).

Events (plain dicts, so they cross process boundaries): ``{"kind": "bar", "bar": id,
"description", "completed", "total", "start", "status", "closed"}`` for a bar's state (``start``:
where it began, more than 0 for a resumed training), ``{"kind": "note", "text"}`` for a one-line
remark, and ``{"kind": "start"}`` / ``{"kind": "end", "result"}`` for a job, sent by ``map_jobs``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Sequence

from .catalog import format_seconds

#: Seconds between two plain progress lines about the same piece of work.
HEARTBEAT = 30.0
#: The share of a cell's time its trainings are taken to be, for the estimate of the time left.
RUNNING_SHARE = 0.8


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for pipes, files, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def estimate_left(elapsed: float, fraction: float) -> float | None:
    """Seconds left if the rest goes at the pace so far, or ``None`` too early to tell.

    >>> estimate_left(30.0, 0.25)
    90.0
    >>> estimate_left(30.0, 0.0) is None
    True
    """
    if fraction < 0.01 or elapsed <= 0:
        return None
    return elapsed * (1.0 - min(fraction, 1.0)) / fraction


def _eta(seconds: float | None) -> str:
    return "ETA unknown" if seconds is None else f"ETA ~{format_seconds(seconds)}"


class LineBar:
    """A bar as plain lines on ``stream``: one when the work starts (or resumes), a heartbeat at
    most every :data:`HEARTBEAT` seconds, and one when it ends."""

    def __init__(self, total: int, description: str, completed: int = 0, stream=None,
                 heartbeat: float | None = None):
        self.total, self.description = total, description
        self.completed = self.start = completed
        self.stream = sys.stderr if stream is None else stream
        self.heartbeat = HEARTBEAT if heartbeat is None else heartbeat
        self.began = self.last = time.monotonic()
        resumed = f", resumed at {completed}" if completed else ""
        self._write(f"{description}: {completed}/{total}{resumed}")

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def advance(self, status: str = "") -> None:
        self.completed += 1
        now = time.monotonic()
        if now - self.last >= self.heartbeat and self.completed < self.total:
            self.last = now
            done = (self.completed - self.start) / max(self.total - self.start, 1)
            self._write(f"{self.description}: {self.completed}/{self.total}"
                        f"{', ' + status if status else ''} "
                        f"({_eta(estimate_left(now - self.began, done))})")

    def close(self) -> None:
        self._write(f"{self.description}: {self.completed}/{self.total} in "
                    f"{format_seconds(time.monotonic() - self.began)}")


class _RichBar:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def advance(self, status: str = "") -> None:
        self._progress.update(self._task, advance=1, status=status)


def _rich_progress(stream):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    console=Console(file=stream), transient=True)


@contextlib.contextmanager
def standalone_bar(total: int, description: str, completed: int = 0, stream=None):
    """A bar for one loop on ``stream`` (default standard error): live on a terminal, plain
    lines elsewhere. Yields an object with ``advance(status="")``."""
    stream = sys.stderr if stream is None else stream
    if not is_terminal(stream):
        bar = LineBar(total, description, completed, stream)
        yield bar
        bar.close()
        return
    with _rich_progress(stream) as progress:
        task = progress.add_task(description, total=total, completed=completed, status="")
        yield _RichBar(progress, task)


class RunMonitor:
    """The progress display of one ``reproduce`` run, in the parent process.

    ``names`` names the jobs (cells) by index, ``title`` the run; ``records`` is where the
    records go and ``folder`` the run folder; ``reused`` the number of checkpoints an earlier
    run left there; ``engine`` says where the cells run, in words (default: ``workers`` worker
    processes; :func:`metasolve.parallel.describe_engine`). Feed it :meth:`event` (``map_jobs``'s
    ``on_event``). Use as a context manager; disabled (``enabled=False``) it prints nothing.
    """

    def __init__(self, title: str, names: Sequence[str], records, folder, workers: int,
                 enabled: bool = True, reused: int = 0, stream=None,
                 heartbeat: float | None = None, engine: str | None = None):
        self.title, self.names = title, list(names)
        self.records, self.folder, self.workers = records, folder, workers
        self.engine = engine
        self.enabled, self.reused = enabled, reused
        self.heartbeat = HEARTBEAT if heartbeat is None else heartbeat
        self.stream = sys.stderr if stream is None else stream
        self.live = enabled and is_terminal(self.stream)
        self.total = len(self.names)
        self.done = 0
        self.began = time.monotonic()
        self._started: dict[int, float] = {}
        self._finished_jobs: set[int] = set()
        self._bars: dict[int, dict] = {}  # job -> the state of its latest bar
        self._tasks: dict[tuple[int, object], object] = {}  # rich tasks of running bars
        self._last_line: dict[object, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._progress = self._overall = self._ticker = None
        self._last_output = self.began

    # -- output --------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                print(text, file=self.stream, flush=True)
            self._last_output = time.monotonic()

    def __enter__(self) -> RunMonitor:
        if not self.enabled:
            return self
        cells = f"{self.total} cell{'s' * (self.total != 1)}"
        where = self.engine or (f"{self.workers} worker process"
                                f"{'es' * (self.workers != 1)}")
        self._say(f"{self.title}: {cells} on {where}; records go to {self.records}, models and "
                  f"checkpoints under {self.folder}")
        if self.reused:
            self._say(f"reusing {self.reused} checkpoint{'s' * (self.reused != 1)} of an "
                      f"earlier run under {self.folder}: finished trainings are not repeated "
                      "and interrupted ones resume (--restart starts over)")
        if self.live:
            self._progress = _rich_progress(self.stream)
            self._progress.start()
            self._overall = self._progress.add_task(self.title, total=self.total, status="")
        else:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # -- state ---------------------------------------------------------------------------------

    def fraction(self) -> float:
        """The share of the run done: finished cells, plus the running cells' current bars."""
        # list() copies at once: the plain-line ticker reads this from its own thread. A cell
        # whose training is over still evaluates: its bar counts for at most RUNNING_SHARE.
        running = sum(bar["completed"] / bar["total"] for job, bar in list(self._bars.items())
                      if job in self._started and bar["total"])
        running *= RUNNING_SHARE
        return min((self.done + running) / max(self.total, 1), 1.0)

    def summary(self) -> str:
        elapsed = time.monotonic() - self.began
        text = f"{self.done}/{self.total} cells done, elapsed {format_seconds(elapsed)}"
        if self.done == self.total:
            return text
        return f"{text}, {_eta(estimate_left(elapsed, self.fraction()))}"

    def event(self, index: int, event: dict) -> None:
        """Take one event of job ``index`` (see the module docstring)."""
        if not self.enabled:
            return
        kind = event.get("kind")
        name = self.names[index]
        if index in self._finished_jobs:
            return  # a worker's late event, queued before its result came back
        if kind == "start":
            self._started[index] = time.monotonic()
        elif kind == "end":
            self._finished(index, name, event.get("result"))
        elif kind == "note":
            self._say(f"  {name}: {event['text']}")
        elif kind == "bar" and index in self._started:
            self._bar(index, name, event)
        self._update_overall()

    def _finished(self, index: int, name: str, result) -> None:
        began = self._started.pop(index, self.began)
        self._finished_jobs.add(index)
        self._bars.pop(index, None)
        for key in [key for key in self._tasks if key[0] == index]:
            self._progress.remove_task(self._tasks.pop(key))
        self.done += 1
        label = result.get("label") if isinstance(result, dict) else None
        self._say(f"[{self.done}/{self.total}] {label or name} done in "
                  f"{format_seconds(time.monotonic() - began)}; its records go to "
                  f"{self.records} ({self.summary()})")

    def _bar(self, index: int, name: str, event: dict) -> None:
        self._bars[index] = event
        key = (index, event["bar"])
        text = f"  {name}: {event['description']}"
        if self._progress is not None:
            if event.get("closed"):
                if key in self._tasks:
                    self._progress.remove_task(self._tasks.pop(key))
                return
            if key not in self._tasks:
                self._tasks[key] = self._progress.add_task(
                    text, total=event["total"], completed=event["completed"], status="")
            self._progress.update(self._tasks[key], completed=event["completed"],
                                  status=event.get("status", ""))
            return
        now = time.monotonic()
        if key not in self._last_line:
            self._last_line[key] = now
            if 0 < event["start"] < event["total"]:
                self._say(f"{text}: resumed from its checkpoint at {event['start']}/"
                          f"{event['total']}")
        elif not event.get("closed") and now - self._last_line[key] >= self.heartbeat:
            self._last_line[key] = now
            status = f", {event['status']}" if event.get("status") else ""
            self._say(f"{text}: {event['completed']}/{event['total']}{status}")

    def _update_overall(self) -> None:
        if self._progress is None:
            return
        self._progress.update(self._overall, completed=self.fraction() * self.total,
                              status=f"{self.done}/{self.total} cells done")

    def _tick(self) -> None:
        """Plain-line mode: say where the run stands when nothing was printed for a while."""
        while not self._stop.wait(min(max(self.heartbeat, 0.05), 1.0)):
            if self.done < self.total and time.monotonic() - self._last_output >= self.heartbeat:
                running = ", ".join(self.names[i] for i in sorted(list(self._started)))
                self._say(f"... {self.summary()}" + (f"; running: {running}" if running else ""))
