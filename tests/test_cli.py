"""The command line: it starts without torch, has --version, -h and `python -m metasolve`,
lists scales and run times, prints tables in full wherever its output goes, and says what it is
doing while it runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import metasolve
from metasolve import api, runner
from metasolve.catalog import CATALOG, format_seconds
from metasolve.cli import app
from metasolve.evaluation.render import Table, print_tables
from metasolve.experiments import EXPERIMENTS

SRC = Path(__file__).resolve().parents[1] / "src"
cli = CliRunner()


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})


# --- a light start -----------------------------------------------------------------------------

def test_importing_the_cli_does_not_import_torch():
    done = _python("import sys, metasolve, metasolve.cli\n"
                   "print(sorted(m for m in ('torch', 'numpy', 'metasolve.runner', "
                   "'metasolve.api') if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["list"], ["--help"], ["-h"], ["--version"],
                                  ["reproduce", "--help"]])
def test_list_help_and_version_run_without_torch(args):
    # The command runs to its exit; an exit hook then reports whether torch was imported.
    done = _python("import atexit, sys\n"
                   "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
                   f"sys.argv = ['metasolve', *{args!r}]\n"
                   "from metasolve.cli import app\n"
                   "app()")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("torch imported: False"), done.stdout
    assert "Traceback" not in done.stderr


def test_python_dash_m_and_version():
    done = subprocess.run([sys.executable, "-m", "metasolve", "--version"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"metasolve {metasolve.__version__}"


def test_dash_h_is_help_and_every_option_has_help():
    result = cli.invoke(app, ["-h"])
    assert result.exit_code == 0 and "Usage" in result.output and "--version" in result.output
    for command in ("list", "reproduce", "bench", "results", "demo"):
        assert cli.invoke(app, [command, "-h"]).exit_code == 0
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            assert getattr(param, "help", None), f"{name} {param.name} has no help text"


def test_the_package_is_light_until_a_public_name_is_read():
    assert sorted(metasolve.__all__) == sorted(api.__all__)
    for name in metasolve.__all__:
        assert getattr(metasolve, name) is getattr(api, name)
    assert "Jacobi" in dir(metasolve)
    with pytest.raises(AttributeError, match="no_such_name"):
        metasolve.no_such_name  # noqa: B018


# --- list: scales and run times ----------------------------------------------------------------

def test_the_catalog_describes_every_experiment_as_its_module_does():
    assert list(CATALOG) == list(EXPERIMENTS)
    for name, entry in CATALOG.items():
        module = EXPERIMENTS[name]
        assert module.__name__ == f"metasolve.experiments.{entry.module}"
        assert module.TITLE == entry.title
        assert list(entry.scales) == list(module.SCALES), name
        for scale, timing in entry.scales.items():
            if timing is not None:
                assert timing.seconds > 0
                assert timing.command.startswith(f"metasolve reproduce {name}")
                flags = {"quick": "--quick", "smoke": "--smoke"}
                if scale == "full":
                    assert "--quick" not in timing.command and "--scale" not in timing.command
                else:
                    assert flags.get(scale, f"--scale {scale}") in timing.command


def test_list_shows_scales_and_measured_times():
    result = cli.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    text = result.output
    for name, entry in CATALOG.items():
        assert name in text and entry.title in text
    assert "scales: full (35.7 min), quick (2.2 min)" in text  # poisson-jacobi, from RESULTS
    assert f"quick ({format_seconds(CATALOG['r2n2-vanderpol'].scales['quick'].seconds)})" in text


def test_the_lasso_title_does_not_claim_the_full_sizes():
    assert "50" not in CATALOG["neural-scs-lasso"].title
    record = {"experiment": "neural-scs-lasso", "method": "scs", "metric":
              "median_fixed_point_residual", "value": 0.5, "paper": None,
              "set": "Lasso p=20, q=40", "iteration": 1}
    table = EXPERIMENTS["neural-scs-lasso"].tables([record])[0]
    assert "Lasso p=20, q=40" in table.title and "p = 50" not in table.title


# --- tables in full ----------------------------------------------------------------------------

LONG = Table("A title\nits second line", ["method", "a rather long column heading", "value"],
             [["SCS+Neural (Alg. 1, GRU), the learned model", "1.123456e-03 (paper 2.0e-03)",
               "x|y"], ["SCS+AA", "-", "12345678901234567890123456789"]], caption="note")


def test_a_table_printed_to_a_non_terminal_is_markdown_with_every_value_in_full():
    stream = io.StringIO()
    assert print_tables([LONG], file=stream) == "markdown"
    text = stream.getvalue()
    assert text.startswith("### A title\n\nits second line\n\nnote\n\n| method |")
    for row in LONG.body:
        for cell in row:
            assert cell.replace("|", "\\|") in text
    assert "…" not in text and "..." not in text


def test_rich_tables_never_cut_a_value_even_when_narrow():
    from rich.console import Console

    from metasolve.evaluation.render import rich_tables

    stream = io.StringIO()
    Console(file=stream, width=50).print(rich_tables([LONG]))
    text = stream.getvalue()
    assert "…" not in text
    # Read each column top to bottom: a wrapped or folded cell continues on the next lines.
    columns = ["", "", ""]
    for line in text.splitlines():
        if line.startswith("│"):
            for j, piece in enumerate(line.split("│")[1:-1]):
                columns[j] += re.sub(r"\s", "", piece)
    for row in LONG.body:
        for j, cell in enumerate(row):
            assert re.sub(r"\s", "", cell) in columns[j], (cell, columns[j])


def test_reproduce_prints_progress_lines_and_a_complete_table_when_piped(tmp_path):
    """What `metasolve reproduce NAME | cat` shows: a line per finished cell on stderr (two
    worker processes), then the complete Markdown table on stdout."""
    result = cli.invoke(app, ["reproduce", "r2n2-vanderpol", "--smoke", "--workers", "2",
                              "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records_path = tmp_path / "r2n2-vanderpol" / "smoke" / "r2n2-vanderpol.json"
    err = result.stderr.splitlines()
    assert err[0].startswith("r2n2-vanderpol (smoke scale): 2 cells on 2 worker processes")
    done = [line for line in err if line.startswith(("[1/2]", "[2/2]"))]
    assert len(done) == 2 and all(f"its records go to {records_path}" in d for d in done)
    assert {d.split()[1] for d in done} == {"p"}  # the cells' labels: "p = 3", "p = 8"
    out = result.stdout
    assert "[1/2]" not in out  # progress stays off standard output
    records = json.loads(records_path.read_text())
    for table in EXPERIMENTS["r2n2-vanderpol"].tables(records):
        assert table.body
        for row in [table.head, *table.body]:
            assert "| " + " | ".join(row) + " |" in out
    assert "…" not in out and "trained on T = 1 step" in out

    again = cli.invoke(app, ["reproduce", "r2n2-vanderpol", "--smoke", "--workers", "1",
                             "--out", str(tmp_path), "--format", "rich"])
    assert again.exit_code == 0, again.output
    assert "reusing 2 checkpoints of an earlier run" in again.stderr
    assert "┃" in again.stdout or "│" in again.stdout  # a rich table, as asked


def test_the_demo_says_its_scale_its_files_and_the_full_command(tmp_path, monkeypatch):
    seen = {}

    def fake_reproduce(name, scale, out_dir, **options):
        seen.update(name=name, scale=scale)
        table = Table("t", ["row", "value"], [["Psi_base", "159.66 (paper 164.41)"]])
        return {"tables": [table], "json": Path(out_dir) / "r.json",
                "plot": Path(out_dir) / "p.png", "seconds": 12.0}

    monkeypatch.setattr(runner, "reproduce", fake_reproduce)
    result = cli.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "poisson-jacobi", "scale": "quick"}
    text = " ".join(result.output.split())
    assert "scale: quick" in text and "expected to miss the paper's" in text
    assert "`metasolve reproduce poisson-jacobi`" in text
    assert str(tmp_path / "poisson-jacobi" / "quick") in text
    assert "| Psi_base | 159.66 (paper 164.41) |" in result.output


def test_results_renders_rich_on_request(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{
        "experiment": "r2n2-vanderpol", "method": "r2n2", "metric": "mean_error_ratio",
        "value": 0.5, "paper": None, "order_p": 3, "steps": 1, "train_steps": 1}]))
    markdown = cli.invoke(app, ["results", str(path)])
    assert markdown.exit_code == 0 and markdown.output.startswith("## r2n2-vanderpol: ")
    boxed = cli.invoke(app, ["results", str(path), "--format", "rich"])
    assert boxed.exit_code == 0, boxed.output
    assert boxed.output.startswith("r2n2-vanderpol: ") and "0.500" in boxed.output


# --- optional extras ---------------------------------------------------------------------------

@pytest.mark.parametrize("module, extra", [("cvxpy", "conic"), ("scs", "conic"),
                                           ("skfem", "fem")])
def test_a_missing_extra_names_what_to_install(monkeypatch, module, extra):
    from metasolve.baselines import solve_with_scs
    from metasolve.tasks import ElasticBeamFamily
    from metasolve.tasks.conic import LassoFamily

    program = LassoFamily(p=3, q=7).sample(1, seed=0).problem  # cvxpy builds it, with scs
    use = {"cvxpy": lambda: LassoFamily(p=3, q=8).sample(1, seed=0),
           "scs": lambda: solve_with_scs(program, 0),
           "skfem": lambda: ElasticBeamFamily()}[module]
    monkeypatch.setitem(sys.modules, module, None)  # as if the package were not installed
    with pytest.raises(ImportError, match=re.escape(f'pip install "metasolve[{extra}]"')):
        use()


def test_the_demo_experiment_runs_without_the_extras(tmp_path):
    """`pip install . && metasolve demo` installs no extra: the Poisson experiment (here its
    smoke scale) must not need cvxpy, scs, scikit-fem or ray."""
    done = _python("import sys\n"
                   "for name in ('cvxpy', 'scs', 'skfem', 'ray'):\n"
                   "    sys.modules[name] = None\n"
                   "from metasolve.runner import reproduce\n"
                   f"result = reproduce('poisson-jacobi', scale='smoke', out_dir={str(tmp_path)!r},"
                   " workers=1, progress=False)\n"
                   "print(len(result['records']) > 0)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


# --- the engine ------------------------------------------------------------------------------

def test_an_address_needs_the_ray_engine(tmp_path):
    result = cli.invoke(app, ["reproduce", "r2n2-vanderpol", "--smoke", "--address", "head:6379",
                              "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "error: --address head:6379 names a Ray cluster; it needs --engine ray" in result.stderr
    assert not (tmp_path / "r2n2-vanderpol").exists()  # refused before any work
    bad = cli.invoke(app, ["reproduce", "r2n2-vanderpol", "--smoke", "--engine", "dask"])
    assert bad.exit_code == 2 and "--engine" in bad.stderr


def test_the_ray_engine_without_ray_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    result = cli.invoke(app, ["reproduce", "r2n2-vanderpol", "--smoke", "--engine", "ray",
                              "--no-progress", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: the Ray engine (engine='ray', --engine ray)")
    assert 'pip install "metasolve[ray]"' in result.stderr
    assert "Traceback" not in result.output
