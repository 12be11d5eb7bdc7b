"""What every experiment module's worker jobs share: scale settings, tables, figures and record
lookups."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path


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


def save_figure(fig, path: Path) -> Path:
    """Lay out ``fig``, write it as PNG to ``path`` (parents created) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def find_record(records: list[dict], experiment: str, metric: str, method: str,
                **where) -> dict | None:
    """The first record of ``experiment`` with this metric and method matching ``where``."""
    for r in records:
        if (r["experiment"] == experiment and r["metric"] == metric and r["method"] == method
                and all(r.get(k) == v for k, v in where.items())):
            return r
    return None


def format_record(r: dict | None, fmt: str = "{:.3f}") -> str:
    """A table cell: the value, with the paper's beside it when there is one."""
    if r is None or r["value"] is None:
        return "-"
    text = fmt.format(r["value"])
    return text if r.get("paper") is None else f"{text} (paper {fmt.format(r['paper'])})"
