"""Tables and figures from result records, shared by every experiment and benchmark.

An experiment describes its tables as :class:`Table` values built from its records; this module
turns the same values into a rich renderable (the terminal) and Markdown (docs/RESULTS.md), so
the two never disagree. Cells show our number with the paper's beside it where there is one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Table:
    """One table: ``title`` (shown in the terminal; Markdown has its own headings), the column
    ``head``, the ``body`` rows of strings, how many leading ``label_columns`` are labels
    (left-aligned; numbers are right-aligned), and an optional ``caption`` printed above the
    table in both renderings."""

    title: str
    head: Sequence[str]
    body: Sequence[Sequence[str]]
    label_columns: int = 1
    caption: str = ""


def rich_table(table: Table):
    """A rich renderable of ``table``."""
    from rich.table import Table as RichTable

    title = table.title if not table.caption else f"{table.title}\n{table.caption}"
    out = RichTable(title=title)
    for i, name in enumerate(table.head):
        out.add_column(name, justify="left" if i < table.label_columns else "right")
    for line in table.body:
        out.add_row(*line)
    return out


def rich_tables(tables: Sequence[Table]):
    """All of ``tables`` as one rich renderable."""
    from rich.console import Group

    return Group(*(rich_table(t) for t in tables))


def markdown_table(table: Table) -> str:
    """``table`` as Markdown (its caption, if any, as a paragraph above it)."""
    lines = [table.caption, ""] if table.caption else []
    lines += ["| " + " | ".join(table.head) + " |", "|" + "---|" * len(table.head)]
    lines += ["| " + " | ".join(line) + " |" for line in table.body]
    return "\n".join(lines) + "\n"


def markdown_tables(tables: Sequence[Table]) -> str:
    """All of ``tables`` as Markdown, separated by blank lines."""
    return "\n".join(markdown_table(t) for t in tables)


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay out ``fig``, write it as PNG to ``path`` (parents created) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
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


def format_comparison(records: list[dict], experiment: str, method: str, against: str,
                      **where) -> str:
    """A table cell ``"better / tied / worse"`` in percent, read from the three records of
    :func:`~metasolve.evaluation.metrics.comparison_records` (``"-"`` when one is missing)."""
    found = [find_record(records, experiment, f"fraction_{kind}_{against}", method, **where)
             for kind in ("better_than", "tied_with", "worse_than")]
    if any(r is None or r["value"] is None for r in found):
        return "-"
    return " / ".join(f"{r['value']:.0%}" for r in found)


def format_record(r: dict | None, fmt: str = "{:.3f}") -> str:
    """A table cell: the value, with the paper's beside it when there is one."""
    if r is None or r["value"] is None:
        return "-"
    text = fmt.format(r["value"])
    return text if r.get("paper") is None else f"{text} (paper {fmt.format(r['paper'])})"


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the non-interactive backend (experiments run in
    worker processes without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)
