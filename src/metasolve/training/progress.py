"""A progress bar for long work that degrades to nothing when disabled."""

from __future__ import annotations

import contextlib

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class _Bar:
    def __init__(self, progress, task):
        self._progress, self._task = progress, task

    def advance(self, status: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, status=status)


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, description: str, completed: int = 0):
    if not enabled:
        yield _Bar(None, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total, completed=completed, status="")
        yield _Bar(progress, task)
