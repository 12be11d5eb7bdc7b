"""Tables and figures from result records, shared by every experiment and benchmark.

An experiment describes its tables as :class:`Table` values built from its records; this module
turns the same values into a rich renderable (the terminal) and Markdown (docs/RESULTS.md), so
the two never disagree. Cells show our number with the paper's beside it where there is one.
"""

from __future__ import annotations

import sys
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
    """A rich renderable of ``table``. No value is ever cut short: where the terminal is too
    narrow, rich wraps a cell at its spaces and folds a long word onto the next line (no
    ellipsis)."""
    from rich.table import Table as RichTable

    title = table.title if not table.caption else f"{table.title}\n{table.caption}"
    out = RichTable(title=title)
    for i, name in enumerate(table.head):
        out.add_column(name, justify="left" if i < table.label_columns else "right",
                       overflow="fold")
    for line in table.body:
        out.add_row(*line)
    return out


def rich_tables(tables: Sequence[Table]):
    """All of ``tables`` as one rich renderable."""
    from rich.console import Group

    return Group(*(rich_table(t) for t in tables))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")  # a bare | would end the Markdown cell


def markdown_table(table: Table, title: bool = False) -> str:
    """``table`` as Markdown, every value in full: its caption, if any, as a paragraph above it,
    and with ``title`` its title above that (the first line as a heading, the others as a
    paragraph; docs/RESULTS.md has headings of its own and leaves titles out)."""
    lines = []
    if title and table.title:
        first, *rest = table.title.splitlines()
        lines += [f"### {first}", ""] + ([" ".join(rest), ""] if rest else [])
    lines += [table.caption, ""] if table.caption else []
    lines += ["| " + " | ".join(map(_cell, table.head)) + " |", "|" + "---|" * len(table.head)]
    lines += ["| " + " | ".join(map(_cell, line)) + " |" for line in table.body]
    return "\n".join(lines) + "\n"


def markdown_tables(tables: Sequence[Table], titles: bool = False) -> str:
    """All of ``tables`` as Markdown, separated by blank lines (with their ``titles``, see
    :func:`markdown_table`)."""
    return "\n".join(markdown_table(t, titles) for t in tables)


#: How :func:`print_tables` renders: ``auto`` is ``rich`` on a terminal and ``markdown``
#: anywhere else (a pipe, a file, a captured stream).
FORMATS = ("auto", "rich", "markdown")


def print_tables(tables: Sequence[Table], format: str = "auto", file=None) -> str:
    """Print ``tables`` to ``file`` (default: the current ``sys.stdout``) as rich tables or as
    Markdown (``format``, one of :data:`FORMATS`); returns the format used. Either way every
    value is printed in full."""
    from rich.console import Console

    file = sys.stdout if file is None else file
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "auto":
        format = "rich" if _is_terminal(file) else "markdown"
    if format == "markdown":
        file.write(markdown_tables(tables, titles=True))
        file.flush()
    else:
        Console(file=file).print(rich_tables(tables))
    return format


def _is_terminal(file) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


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


def setting_values(records: list[dict], experiment: str, key: str) -> list:
    """The distinct values of setting ``key`` in ``experiment``'s records, in order of
    appearance (records without the key are skipped): what a table's title says of the run."""
    values = []
    for r in records:
        if r["experiment"] == experiment and key in r and r[key] not in values:
            values.append(r[key])
    return values


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
