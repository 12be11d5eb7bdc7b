"""What every experiment module's worker jobs share."""

from __future__ import annotations

from dataclasses import replace


def job_settings(job: dict):
    """The job's scale settings, with ``reproduce --epochs`` applied to its training config."""
    settings = job["settings"]
    if job.get("epochs") is not None:
        settings = replace(settings, training=replace(settings.training, epochs=job["epochs"]))
    return settings


def rich_table(title: str, head: list[str], body: list[list[str]], label_columns: int = 1):
    """A rich table: the first ``label_columns`` columns left-aligned, the numbers right."""
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(head):
        table.add_column(name, justify="left" if i < label_columns else "right")
    for line in body:
        table.add_row(*line)
    return table


def markdown_table(head: list[str], body: list[list[str]]) -> str:
    """The same rows as a Markdown table, for docs/RESULTS.md."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines) + "\n"
