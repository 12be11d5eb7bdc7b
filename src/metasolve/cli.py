"""The ``metasolve`` command: list experiments, reproduce them, run the demo."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

from .artifact import ArtifactError
from .evaluation.records import read_records
from .outputs import OutputPathError
from .parallel import JobError
from .runner import EXPERIMENTS, get, plot_records, render_markdown
from .runner import reproduce as run_experiment

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Learn to accelerate iterative solvers on a distribution of problems.")
console = Console()

#: Exit codes: 1 for a run that failed, 2 for a usage error (bad arguments or paths), as click.
FAILED, USAGE = 1, 2


def _fail(message: str, code: int):
    """Say what went wrong in one line on stderr and exit with ``code`` (no traceback)."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


@app.command("list")
def list_experiments() -> None:
    """List the paper experiments that `metasolve reproduce` can run."""
    for name, module in EXPERIMENTS.items():
        console.print(f"[bold]{name}[/bold]  {module.TITLE}")


@app.command()
def reproduce(
    name: str = typer.Argument(..., help="experiment name (see `metasolve list`)"),
    quick: bool = typer.Option(False, "--quick", help="reduced settings, minutes on 2 cores"),
    smoke: bool = typer.Option(False, "--smoke", hidden=True, help="seconds-long test scale"),
    scale_name: str = typer.Option(None, "--scale",
                                   help="a named scale of the experiment (full, quick, or one "
                                        "it adds; see its module)"),
    json_path: Path = typer.Option(None, "--json", help="write result records to this file"),
    out: Path = typer.Option(Path("metasolve-out"), "--out", help="output directory"),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", min=1,
                                help="worker processes for independent trainings"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    epochs: int = typer.Option(None, "--epochs", min=1,
                               help="override the scale's training epochs (budget runs; "
                                    "for a Gauss-Newton scale, its iterations)"),
    restart: bool = typer.Option(False, "--restart",
                                 help="discard checkpoints of an earlier run instead of resuming"),
) -> None:
    """Train and evaluate a paper experiment; print our numbers beside the paper's.

    Every training checkpoints under --out after each epoch; running the same command again
    resumes an interrupted run.
    """
    if name not in EXPERIMENTS:
        _fail(f"unknown experiment {name!r}; available: {sorted(EXPERIMENTS)}", USAGE)
    if quick + smoke + (scale_name is not None) > 1:
        _fail("choose one of --quick, --smoke and --scale", USAGE)
    scale = scale_name or ("smoke" if smoke else "quick" if quick else "full")
    if scale not in get(name).SCALES:
        _fail(f"{name} has the scales {sorted(get(name).SCALES)}, not {scale!r} (--scale)", USAGE)
    result = _run(name, scale, out, json_path, workers, progress, restart, epochs)
    console.print(result["table"])
    console.print(f"records: {result['json']}")
    if result["plot"] is not None:
        console.print(f"plot:    {result['plot']}")
    console.print(f"took {result['seconds']:.1f} s ({scale} scale, {workers} worker(s))")


def _run(name, scale, out, json_path, workers, progress, restart, epochs):
    """Run an experiment; expected failures (a bad path, a busy run folder, a failing cell, a
    stale or damaged checkpoint) are reported in one line, not dumped as a traceback."""
    try:
        return run_experiment(name, scale=scale, out_dir=out, json_path=json_path,
                              workers=workers, progress=progress, epochs=epochs,
                              restart=restart)
    except OutputPathError as exc:
        _fail(str(exc), USAGE)
    except JobError as exc:
        if isinstance(exc.error, ArtifactError):
            _fail(f"{exc.error} (in {exc.name}); rerun with --restart to start over", FAILED)
        _fail(f"{exc}. Rerunning the same command resumes from the checkpoints under {out}",
              FAILED)


@app.command()
def results(
    paths: list[Path] = typer.Argument(..., help="record files written by `reproduce --json`"),
    plot: Path = typer.Option(None, "--plot",
                              help="also draw the experiment's figure from the records into "
                                   "this PNG file (records of one experiment)"),
) -> None:
    """Render result records (JSON) as Markdown tables, ours beside the paper's; with --plot,
    draw the figure too (the panels that need a run's per-instance data are left out)."""
    records = []
    for path in paths:
        try:
            found = read_records(path)
        except (OSError, ValueError) as exc:
            _fail(str(exc) if str(path) in str(exc) else f"{path}: {exc}", USAGE)
        unknown = sorted({r["experiment"] for r in found} - set(EXPERIMENTS))
        if unknown:
            _fail(f"{path}: unknown experiment(s) {unknown}; known: {sorted(EXPERIMENTS)}",
                  USAGE)
        records += found
    try:
        text = render_markdown(records)
    except (KeyError, TypeError, ValueError) as exc:
        # A record of a known experiment that lacks a setting key its tables read.
        files = ", ".join(map(str, paths))
        _fail(f"cannot render the records of {files}: {type(exc).__name__}: {exc}", USAGE)
    if plot is not None:
        try:
            plot_records(records, plot)
        except (OSError, ValueError) as exc:
            _fail(f"cannot draw {plot}: {exc}", USAGE)
    typer.echo(text, nl=False)


@app.command()
def demo(
    out: Path = typer.Option(Path("metasolve-out"), "--out", help="output directory"),
    workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", min=1),
) -> None:
    """Run the quick Poisson/Jacobi reproduction and say where its table and plot are."""
    console.print("metasolve demo: learning initial guesses for Jacobi on 1D Poisson "
                  "(GBMS paper, Table 3, quick scale)")
    result = _run("poisson-jacobi", "quick", out, None, workers, True, False, None)
    console.print(result["table"])
    console.print(f"table records (JSON): {result['json']}")
    console.print(f"iteration histograms (PNG): {result['plot']}")
    console.print(f"took {result['seconds']:.1f} s")
