"""The progress of a training loop (epochs, Gauss-Newton iterations), wherever it runs.

Inside a job of a ``reproduce`` run (:func:`metasolve.parallel.map_jobs` with ``on_event``), a bar
sends its state to the run's display in the parent process (:class:`metasolve.progress.
RunMonitor`), at most every :data:`SEND_EVERY` seconds, plus when it opens and closes; elsewhere
it draws itself (:func:`metasolve.progress.standalone_bar`: live on a terminal, plain lines on
standard error otherwise). Disabled, it does nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import time

from ..parallel import listening, report
from ..progress import standalone_bar

#: Seconds between two events of one bar sent to a run's display.
SEND_EVERY = 0.5

_ids = itertools.count()


class _Quiet:
    def advance(self, status: str = "") -> None:
        pass


class _ReportingBar:
    """A bar whose state goes to the caller of the job (see the module docstring)."""

    def __init__(self, total: int, description: str, completed: int):
        self.state = {"kind": "bar", "bar": next(_ids), "description": description,
                      "completed": completed, "total": total, "start": completed, "status": "",
                      "closed": False}
        self.sent = time.monotonic()
        report(dict(self.state))

    def advance(self, status: str = "") -> None:
        self.state["completed"] += 1
        self.state["status"] = status
        now = time.monotonic()
        if now - self.sent >= SEND_EVERY:
            self.sent = now
            report(dict(self.state))

    def close(self) -> None:
        report({**self.state, "closed": True})


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str, completed: int = 0):
    """A bar of ``total`` steps (``completed`` of them done already, e.g. by a resumed
    training); yields an object with ``advance(status="")``, called once per step."""
    if not enabled:
        yield _Quiet()
    elif listening():
        bar = _ReportingBar(total, description, completed)
        try:
            yield bar
        finally:
            bar.close()
    else:
        with standalone_bar(total, description, completed) as bar:
            yield bar
