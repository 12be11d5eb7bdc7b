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


#: Notes on the direction of a plotted quantity, shown in panel titles.
LOWER, HIGHER = "lower is better", "higher is better"
#: The marker and colour of the paper's numbers in every figure.
PAPER_STYLE = {"marker": "D", "markerfacecolor": "none", "markeredgecolor": "black",
               "linestyle": "none", "markersize": 7}


def save_figure(fig, path: Path, dpi: int = 110) -> Path | None:
    """Write ``fig`` as PNG to ``path`` (parents created) and close it; ``None`` for no figure."""
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def panels(count: int, columns: int = 3, size: tuple[float, float] = (4.6, 3.6),
           title: str | None = None):
    """A figure of ``count`` panels in rows of at most ``columns`` (constrained layout, unused
    cells hidden): ``(fig, axes)`` with ``axes`` a flat list of the ``count`` panels."""
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    fig, grid = subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows),
                         squeeze=False, layout="constrained")
    flat = [ax for line in grid for ax in line]
    for ax in flat[count:]:
        ax.set_visible(False)
    if title:  # wrapped to the figure's width (about 10 characters an inch)
        import textwrap

        fig.suptitle(textwrap.fill(title, int(10 * size[0] * columns)))
    return fig, flat[:count]


def set_title(ax, title: str, better: str | None = None) -> None:
    """``title`` on ``ax``, with a second line saying which way is better when given."""
    ax.set_title(title if better is None else f"{title}\n({better})", fontsize=10)


def bar_panel(ax, labels, values, *, xlabel: str, ylabel: str, title: str, better: str,
              paper=None, errors=None, log: bool = False, color="tab:orange",
              label: str = "ours", reference: float | None = None,
              reference_label: str | None = None, fmt: str = "{:.3g}") -> None:
    """Horizontal bars, one per entry of ``labels`` (top to bottom); the paper's numbers (where
    not ``None``) as hollow diamonds, or else each value written at its bar's end; optional error
    bars and an optional dashed reference line. A legend under the panel names every element."""
    import numpy as np

    y = np.arange(len(labels))[::-1]
    heights = np.array([np.nan if v is None else v for v in values], dtype=float)
    colors = color if isinstance(color, str) else list(color)
    ax.barh(y, np.nan_to_num(heights), color=colors, alpha=0.85, label=label)
    if errors is not None:
        ax.errorbar(np.nan_to_num(heights), y, xerr=[0 if e is None else e for e in errors],
                    fmt="none", ecolor="black", elinewidth=1, capsize=2,
                    label="± 1 standard deviation")
    if paper is None:  # the values, where no paper's marker would collide with them
        for yi, v in zip(y, heights, strict=True):
            if np.isfinite(v):
                ax.annotate(fmt.format(v), (v, yi), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=8)
    if paper is not None and any(p is not None for p in paper):
        py = [yi for yi, p in zip(y, paper, strict=True) if p is not None]
        ax.plot([p for p in paper if p is not None], py, label="paper", **PAPER_STYLE)
    if reference is not None:
        ax.axvline(reference, color="black", linestyle="--", linewidth=1, label=reference_label)
    ax.set_yticks(y, labels)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.margins(x=0.18)
    set_title(ax, title, better)
    below(ax)


def legend_entries(*axes) -> tuple[list, list[str]]:
    """The legend entries of ``axes``, one per distinct label (artists drawn alike share
    one)."""
    found = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            found.setdefault(label, handle)
    return list(found.values()), list(found)


def below(ax, columns: int = 3) -> None:
    """The legend of ``ax`` under its x label, where it hides no data."""
    ax.legend(*legend_entries(ax), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=columns, frameon=False)


def beside(ax) -> None:
    """The legend of ``ax`` right of it, where it hides no data."""
    ax.legend(*legend_entries(ax), fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5),
              frameon=False)


def histogram_panel(ax, data, *, xlabel: str, title: str, bins=40, color="tab:blue",
                    log_x: bool = False, what: str = "test tasks") -> None:
    """A histogram of per-instance counts (``data``) with its mean as a dashed line; the y axis
    counts ``what`` on a log scale."""
    mean = sum(data) / len(data)
    ax.hist(data, bins=bins, color=color, alpha=0.85, label=what)
    ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3g}")
    if log_x:
        ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{what} (log scale)")
    set_title(ax, title, "further left is better")
    ax.legend(fontsize=8)


def find_record(records: list[dict], experiment: str, metric: str, method: str,
                **where) -> dict | None:
    """The first record of ``experiment`` with this metric and method matching ``where``."""
    for r in records:
        if (r["experiment"] == experiment and r["metric"] == metric and r["method"] == method
                and all(r.get(k) == v for k, v in where.items())):
            return r
    return None


def percent(fraction: float) -> str:
    """A fraction as a percentage: ``"0%"`` and ``"100%"`` only when exact, one decimal
    otherwise (one instance in 300 shows as 0.3%, not as 0%)."""
    return f"{fraction:.0%}" if fraction in (0.0, 1.0) else f"{fraction:.1%}"


def format_comparison(records: list[dict], experiment: str, method: str, against: str,
                      **where) -> str:
    """A table cell ``"better / tied / worse"`` in percent, read from the three records of
    :func:`~metasolve.evaluation.metrics.comparison_records` (``"-"`` when one is missing)."""
    found = [find_record(records, experiment, f"fraction_{kind}_{against}", method, **where)
             for kind in ("better_than", "tied_with", "worse_than")]
    if any(r is None or r["value"] is None for r in found):
        return "-"
    return " / ".join(percent(r["value"]) for r in found)


def setting_values(records: list[dict], experiment: str, key: str,
                   metric: str | None = None) -> list:
    """The distinct values of setting ``key`` in ``experiment``'s records (those of ``metric``
    only, if given), in order of appearance (records without the key are skipped): what a
    table's title says of the run, or the rows (operators, sets) a table has."""
    values = []
    for r in records:
        if (r["experiment"] == experiment and key in r and r[key] not in values
                and (metric is None or r["metric"] == metric)):
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
