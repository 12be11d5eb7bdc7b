"""What every experiment figure must satisfy, checked on the matplotlib Figure, not on pixels."""

from __future__ import annotations


def figure_faults(fig) -> list[str]:
    """The faults of ``fig``: a visible panel without an x or y label, an artist (line, band,
    marker, bar set, patch) without a label, or a labelled one that no legend shows."""
    from matplotlib.cbook import flatten

    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    shown = {text.get_text() for legend in legends for text in legend.get_texts()}
    faults = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        name = ax.get_title().split("\n")[0] or "untitled panel"
        if not ax.get_xlabel().strip():
            faults.append(f"{name}: no x label")
        if not ax.get_ylabel().strip():
            faults.append(f"{name}: no y label")
        grouped = {id(a) for c in ax.containers for a in flatten(c) if a is not None}
        drawn = [a for a in (*ax.lines, *ax.collections, *ax.patches) if id(a) not in grouped]
        for artist in [*drawn, *ax.containers]:
            label = _label(artist)
            if label.startswith("_") or not label.strip():
                faults.append(f"{name}: a {type(artist).__name__} without a label")
            elif label not in shown:
                faults.append(f"{name}: {label!r} is in no legend")
    return faults


def _label(artist) -> str:
    """The label a legend shows for ``artist``; a histogram labels the first patch of its
    bars, not their container."""
    from matplotlib.container import Container

    label = artist.get_label() or ""
    if isinstance(artist, Container) and label.startswith("_"):
        label = next((c.get_label() for c in artist if not c.get_label().startswith("_")),
                     label)
    return label


def check_run_figure(name: str, result: dict) -> None:
    """The figure of a ``reproduce`` result (``name``'s records plus the run's per-instance
    data) is labelled throughout, and has the panels the records alone cannot draw."""
    import matplotlib.pyplot as plt

    from metasolve.runner import get

    module = get(name)
    full = module.figure(result["results"])
    bare = module.figure([{"records": result["records"]}])
    try:
        for fig in (full, bare):
            faults = figure_faults(fig)
            assert not faults, faults
        visible = [ax for ax in full.axes if ax.get_visible()]
        assert len(visible) >= len([ax for ax in bare.axes if ax.get_visible()])
    finally:
        plt.close(full)
        plt.close(bare)
