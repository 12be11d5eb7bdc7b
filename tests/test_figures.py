"""Every experiment's figure, drawn from its committed records (docs/results/*.json) the way
`metasolve results FILE --plot` draws it: labelled axes and legends that name everything."""

from __future__ import annotations

from pathlib import Path

import pytest
from figures import figure_faults
from typer.testing import CliRunner

from metasolve.cli import app
from metasolve.evaluation.records import read_records
from metasolve.runner import EXPERIMENTS, get, plot_records

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
FILES = sorted(RESULTS.glob("*.json"))


def _figure(path: Path):
    records = read_records(path)
    name = records[0]["experiment"]
    return get(name).figure([{"records": records}])


def test_every_experiment_has_committed_records():
    found = {read_records(path)[0]["experiment"] for path in FILES}
    assert found == set(EXPERIMENTS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_figure_from_committed_records_is_labelled(path):
    import matplotlib.pyplot as plt

    fig = _figure(path)
    try:
        assert fig is not None
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert visible and all(ax.has_data() for ax in visible)
        assert figure_faults(fig) == []
    finally:
        plt.close(fig)


def test_faults_are_found():
    """The check itself: an unlabelled line, a missing y label and a labelled band left out of
    the legend are each reported."""
    import matplotlib.pyplot as plt

    from metasolve.evaluation.render import subplots

    fig, ax = subplots()
    ax.plot([0, 1], [1, 0])
    ax.fill_between([0, 1], [0, 0], [1, 1], label="band")
    ax.plot([0, 1], [0, 1], label="line")
    ax.legend(handles=ax.lines[1:])
    ax.set_xlabel("x")
    faults = figure_faults(fig)
    plt.close(fig)
    assert any("no y label" in f for f in faults)
    assert any("without a label" in f for f in faults)
    assert any("'band' is in no legend" in f for f in faults)
    assert not any("'line'" in f for f in faults)


def test_plot_records_writes_a_png(tmp_path):
    path = plot_records(read_records(RESULTS / "r2n2-vanderpol.json"), tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_records_refuses_two_experiments(tmp_path):
    records = (read_records(RESULTS / "r2n2-vanderpol.json")
               + read_records(RESULTS / "r2n2-linear.json"))
    with pytest.raises(ValueError, match="one experiment"):
        plot_records(records, tmp_path / "f.png")


def test_results_command_draws_the_plot(tmp_path):
    out = tmp_path / "vdp.png"
    result = CliRunner().invoke(app, ["results", str(RESULTS / "r2n2-vanderpol.json"),
                                      "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert "r2n2-vanderpol" in result.output and out.read_bytes()[:4] == b"\x89PNG"


def test_results_command_refuses_a_plot_of_two_experiments(tmp_path):
    result = CliRunner().invoke(app, ["results", str(RESULTS / "r2n2-vanderpol.json"),
                                      str(RESULTS / "r2n2-linear.json"),
                                      "--plot", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert not (tmp_path / "x.png").exists()


def test_results_page_shows_every_committed_plot():
    """docs/RESULTS.md shows each plot of docs/results/ (each redrawable from its records) and
    its code fences are closed."""
    import re

    page = (RESULTS.parent / "RESULTS.md").read_text()
    shown = set(re.findall(r"!\[[^\]]*\]\(results/([^)]+\.png)\)", page))
    plots = {path.name for path in RESULTS.glob("*.png")}
    assert shown == plots
    assert {name.removesuffix(".png") for name in plots} <= {path.stem for path in FILES}
    fences = [line.strip() for line in page.splitlines() if line.strip().startswith("```")]
    # A closing fence with text after it does not close: the text below renders as code.
    assert all(re.fullmatch(r"```[\w-]*", fence) for fence in fences)
    assert len(fences) % 2 == 0
