"""The ``metasolve`` command: list experiments, reproduce them, bench their models, render
records, run the demo.

Starting it is light: this module imports typer and the experiment catalog only, so ``metasolve
--help``, ``--version`` and ``list`` never import torch; the commands that run or render
experiments import :mod:`metasolve.runner` (and with it torch) when they start.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path

import typer

from ._version import __version__
from .catalog import CATALOG, format_seconds
from .outputs import OutputPathError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Learn to accelerate iterative solvers on a distribution of problems: "
                       "reproduce the papers' experiments and render their results.")

#: Exit codes: 1 for a run that failed, 2 for a usage error (bad arguments or paths), as click.
FAILED, USAGE = 1, 2

DEFAULT_WORKERS = min(2, os.cpu_count() or 1)


class Format(StrEnum):
    """How tables are printed (``--format``)."""

    auto = "auto"
    rich = "rich"
    markdown = "markdown"


class Shift(StrEnum):
    """What ``reproduce --shift`` adds (``metasolve.runner.SHIFTS``)."""

    none = "none"
    ood = "ood"


DEVICE_HELP = ("where the trainings run: 'cpu', 'cuda' (each rank's own GPU under torchrun), "
               "'cuda:1', ...; evaluations stay on the CPU")


class Engine(StrEnum):
    """What runs the cells of ``reproduce`` (``--engine``; ``metasolve.parallel.ENGINES``)."""

    local = "local"
    ray = "ray"


WORKERS_HELP = ("worker processes for the experiment's independent cells; with --engine ray, "
                "the CPUs of the local Ray runtime the run starts (ignored with --address: the "
                "cluster's CPUs decide)")
ENGINE_HELP = ("what runs the cells: 'local', in this process or --workers processes on this "
               "machine, or 'ray', as Ray tasks (needs the extra metasolve[ray]); the records "
               "are the same")
ADDRESS_HELP = ("with --engine ray: the Ray cluster to run on, HOST:PORT of its head (`ray start "
                "--head` prints it) or 'auto' for the cluster this machine has joined; without "
                "it, the run starts a local Ray runtime")

FORMAT_HELP = ("how to print tables: 'rich' (boxed, for a terminal), 'markdown' (plain text, "
               "for files and pipes), or 'auto': rich on a terminal, Markdown otherwise; either "
               "way every value is printed in full")


def _runner():
    """The experiment runner, imported when a command needs it (it imports torch)."""
    # The one function-local import of a metasolve module in this file (tests/test_import_graph
    # allows it): `--help` and `list` must not pay for torch.
    from . import runner

    return runner


def _fail(message: str, code: int):
    """Say what went wrong in one line on stderr and exit with ``code`` (no traceback)."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"metasolve {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """The command's options before any command (``--version``, ``-h``)."""


@app.command("list", help="List the experiments `metasolve reproduce` can run, with their "
                          "scales and the measured wall-clock of each scale on 2 CPU cores.")
def list_experiments() -> None:
    for entry in CATALOG.values():
        typer.echo(f"{entry.name}\n    {entry.title}")
        scales = ", ".join(_scale_text(scale, timing) for scale, timing in entry.scales.items())
        typer.echo(f"    scales: {scales}")
    typer.echo("\nTimes: wall-clock of one run on 2 CPU cores, measured with the command that "
               "src/metasolve/catalog.py gives beside each. `metasolve reproduce NAME` runs the "
               "full scale, --quick the quick one, --scale S any other.")


def _scale_text(scale: str, timing) -> str:
    if timing is not None:
        return f"{scale} ({format_seconds(timing.seconds)})"
    return f"{scale} (the tests' scale)" if scale == "smoke" else f"{scale} (not timed)"


def _check_experiment(name: str, scale: str) -> None:
    if name not in CATALOG:
        _fail(f"unknown experiment {name!r}; available: {sorted(CATALOG)}", USAGE)
    if scale not in CATALOG[name].scales:
        _fail(f"{name} has the scales {sorted(CATALOG[name].scales)}, not {scale!r} (--scale)",
              USAGE)


@app.command(help="Train and evaluate a paper experiment; print our numbers beside the "
                  "paper's.\n\nEvery training checkpoints under --out after each epoch: "
                  "running the same command again resumes an interrupted run and reuses "
                  "finished trainings.",
             short_help="Train and evaluate a paper experiment; print our numbers beside the "
                        "paper's.")
def reproduce(
    name: str = typer.Argument(..., help="experiment name (see `metasolve list`)"),
    quick: bool = typer.Option(False, "--quick",
                               help="the quick scale: reduced settings, seconds to minutes on 2 "
                                    "cores (`metasolve list` gives the times)"),
    smoke: bool = typer.Option(False, "--smoke", hidden=True, help="seconds-long test scale"),
    scale_name: str = typer.Option(None, "--scale",
                                   help="a named scale of the experiment (full, quick, or one "
                                        "it adds; `metasolve list` names them)"),
    json_path: Path = typer.Option(None, "--json",
                                   help="write the result records to this file",
                                   show_default="OUT/NAME/SCALE/NAME.json"),
    out: Path = typer.Option(Path("metasolve-out"), "--out",
                             help="output folder: records, plot, trained models and "
                                  "checkpoints go under OUT/NAME/SCALE"),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers", min=1, help=WORKERS_HELP),
    engine: Engine = typer.Option(Engine.local, "--engine", help=ENGINE_HELP),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="show progress on stderr: live bars on a terminal, "
                                       "otherwise one line per finished cell and a line at "
                                       "least every 30 s"),
    epochs: int = typer.Option(None, "--epochs", min=1,
                               help="override the scale's training epochs (budget runs; "
                                    "for a Gauss-Newton scale, its iterations)"),
    restart: bool = typer.Option(False, "--restart",
                                 help="discard checkpoints of an earlier run instead of resuming"),
    table_format: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP),
    shift: Shift = typer.Option(Shift.none, "--shift",
                                help="ood: after the run, solve the experiment's sets outside "
                                     "its training distribution with every saved model, "
                                     "without and with the safeguard and with the classical "
                                     "method, and add their table"),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    distributed: bool = typer.Option(False, "--distributed",
                                     help="train data-parallel over the processes torchrun "
                                          "started (`torchrun --nproc-per-node=N -m metasolve "
                                          "reproduce NAME --distributed`): every rank runs the "
                                          "cells in turn (--workers is ignored), rank 0 writes "
                                          "the files"),
) -> None:
    if quick + smoke + (scale_name is not None) > 1:
        _fail("choose one of --quick, --smoke and --scale", USAGE)
    scale = scale_name or ("smoke" if smoke else "quick" if quick else "full")
    _check_experiment(name, scale)
    if address is not None and engine is not Engine.ray:
        _fail(f"--address {address} names a Ray cluster; it needs --engine ray", USAGE)
    if address is not None and not address.strip():
        _fail("--address is empty; give HOST:PORT of the Ray head, or 'auto'", USAGE)
    runner = _runner()
    if shift is not Shift.none and not hasattr(runner.get(name), "shifted_sets"):
        _fail(f"{name} has no shifted sets; --shift ood is not available for it", USAGE)
    _check_device(runner, device)
    if distributed and not runner.launched():
        _fail("--distributed trains over the processes torchrun starts, and this process was "
              "not started by torchrun; launch it as `torchrun --nproc-per-node=N -m "
              f"metasolve reproduce {name} ... --distributed`", USAGE)
    if distributed and engine is not Engine.local:
        _fail("--distributed runs the cells on the ranks torchrun started; it does not combine "
              "with --engine ray", USAGE)
    workers = 1 if distributed else workers
    result = _run(runner, name, scale, out, json_path, workers, progress, restart, epochs,
                  shift.value, device, distributed, engine.value, address)
    if result.get("rank", 0) != 0:
        return  # rank 0 prints the run's tables
    how = (f"{result['ranks']} ranks" if distributed
           else f"{workers} worker(s)" if engine is Engine.local
           else f"Ray at {address}" if address is not None else f"local Ray, {workers} CPU(s)")
    _print_result(runner, result, table_format, f"{scale} scale, {how}, trained on {device}")


def _check_device(runner, device: str) -> None:
    """An unavailable or malformed ``--device`` fails in one line before any work."""
    try:
        runner.check_device("--device", device)
    except ValueError as exc:
        _fail(str(exc), USAGE)


def _run(runner, name, scale, out, json_path, workers, progress, restart, epochs,
         shift="none", device="cpu", distributed=False, engine="local", address=None):
    """Run an experiment; expected failures (a bad path, a busy run folder, a failing cell, a
    stale or damaged checkpoint, a missing ray, an unreachable Ray cluster) are reported in one
    line, not dumped as a traceback."""
    try:
        return runner.reproduce(name, scale=scale, out_dir=out, json_path=json_path,
                                workers=workers, progress=progress, epochs=epochs,
                                restart=restart, shift=shift, device=device,
                                distributed=distributed, engine=engine, address=address)
    except OutputPathError as exc:
        _fail(str(exc), USAGE)
    except ImportError as exc:
        if engine != "ray" or "metasolve[ray]" not in str(exc):
            raise
        _fail(str(exc), USAGE)
    except ConnectionError as exc:
        if engine != "ray":
            raise
        _fail(f"cannot reach the Ray cluster: {exc}", FAILED)
    except runner.JobError as exc:
        if isinstance(exc.error, runner.ArtifactError):
            _fail(f"{exc.error} (in {exc.name}); rerun with --restart to start over", FAILED)
        _fail(f"{exc}. Rerunning the same command resumes from the checkpoints under {out}",
              FAILED)


def _print_result(runner, result, table_format: Format, how: str) -> None:
    runner.print_tables(result["tables"], table_format.value)
    typer.echo(f"\nrecords: {result['json']}")
    if result["plot"] is not None:
        typer.echo(f"plot:    {result['plot']}")
    typer.echo(f"took {format_seconds(result['seconds'])} ({how})")


@app.command(help="Render result records (JSON) as tables, ours beside the paper's "
                  "(Markdown by default: docs/RESULTS.md is made this way).",
             short_help="Render result records (JSON) as tables, ours beside the paper's.")
def results(
    paths: list[Path] = typer.Argument(..., help="record files written by `reproduce --json`"),
    table_format: Format = typer.Option(Format.markdown, "--format", help=FORMAT_HELP),
    plot: Path = typer.Option(None, "--plot",
                              help="also draw the experiment's figure from the records into "
                                   "this PNG file (records of one experiment; the panels that "
                                   "need a run's per-instance data are left out)"),
) -> None:
    runner = _runner()
    records = []
    for path in paths:
        try:
            found = runner.read_records(path)
        except (OSError, ValueError) as exc:
            _fail(str(exc) if str(path) in str(exc) else f"{path}: {exc}", USAGE)
        unknown = sorted({r["experiment"] for r in found} - set(CATALOG))
        if unknown:
            _fail(f"{path}: unknown experiment(s) {unknown}; known: {sorted(CATALOG)}", USAGE)
        records += found
    try:
        if table_format is Format.markdown or (table_format is Format.auto
                                               and not sys.stdout.isatty()):
            text = runner.render_markdown(records)
            sections = None
        else:
            sections = runner.record_tables(records)
    except (KeyError, TypeError, ValueError) as exc:
        # A record of a known experiment that lacks a setting key its tables read.
        files = ", ".join(map(str, paths))
        _fail(f"cannot render the records of {files}: {type(exc).__name__}: {exc}", USAGE)
    if plot is not None:
        try:
            runner.plot_records(records, plot)
        except (OSError, ValueError) as exc:
            _fail(f"cannot draw {plot}: {exc}", USAGE)
    if sections is None:
        typer.echo(text, nl=False)
        return
    for heading, tables in sections:
        typer.echo(heading)
        runner.print_tables(tables, "rich")


@app.command(help="Time a trained model end to end against the solvers practitioners run: (1) "
                  "the learned method (safeguarded), (2) the same method with classical "
                  "parameters, (3) the strongest classical solvers of the family (direct "
                  "solves, pyamg-CG, the real scs, SciPy's newton_krylov), (4) the learned part "
                  "deployed into them; medians of interleaved repeats, ratios and the "
                  "break-even number of solves.\n\nWith NAME it uses the model `metasolve "
                  "reproduce NAME` saved under --out at the scale asked (--quick, --scale); "
                  "with --model FILE, a saved model on tasks drawn from its stored family.",
             short_help="Time a trained model against the strongest classical solvers.")
def bench(
    name: str = typer.Argument(None, help="experiment name (see `metasolve list`); omit it "
                                          "with --model"),
    quick: bool = typer.Option(False, "--quick", help="the model of the quick scale"),
    scale_name: str = typer.Option(None, "--scale",
                                   help="the model of this scale (default: quick)"),
    out: Path = typer.Option(Path("metasolve-out"), "--out",
                             help="the output folder `reproduce` wrote: the model is read "
                                  "from OUT/NAME/SCALE/models"),
    model: Path = typer.Option(None, "--model",
                               help="a saved model (.safetensors) to bench instead of an "
                                    "experiment's, on tasks from its stored family"),
    count: int = typer.Option(None, "--count", min=1,
                              help="instances to solve (an experiment's case has its default; "
                                   "--model: 64)"),
    seed: int = typer.Option(12345, "--seed", help="with --model: the seed of its tasks"),
    rtol: float = typer.Option(None, "--rtol",
                               help="with --model: the tolerance (default 1e-6; a neural SCS "
                                    "model uses its own)"),
    maxiter: int = typer.Option(None, "--maxiter", min=1,
                                help="with --model: the iteration cap of metasolve's solves"),
    repeats: int = typer.Option(5, "--repeats", min=1,
                                help="timed rounds (after one warm-up), each contender once per "
                                     "round in rotated order; medians are reported"),
    threads: str = typer.Option("1", "--threads",
                                help="threads of torch and of NumPy/SciPy's BLAS: a count, "
                                     "'default', or both as '1,default'"),
    json_path: Path = typer.Option(None, "--json", help="write the records to this file",
                                   show_default="OUT/NAME/SCALE/NAME-bench.json, or "
                                                "FILE-bench.json beside --model"),
    plot: Path = typer.Option(None, "--plot", help="draw bars per case into this PNG file"),
    table_format: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="show progress on stderr"),
) -> None:
    if (name is None) == (model is None):
        _fail("give an experiment NAME or --model FILE (one of them)", USAGE)
    if quick and scale_name is not None:
        _fail("choose one of --quick and --scale", USAGE)
    scale = scale_name or "quick"
    if name is not None:
        _check_experiment(name, scale)
    runner = _runner()
    try:
        if model is not None:
            result = runner.bench_saved_model(model, count=count or 64, seed=seed,
                                              repeats=repeats, threads=threads,
                                              json_path=json_path, plot=plot,
                                              progress=progress, rtol=rtol or 1e-6,
                                              maxiter=maxiter)
        else:
            result = runner.bench(name, scale, out, repeats=repeats, threads=threads,
                                  count=count, json_path=json_path, plot=plot,
                                  progress=progress)
    except (runner.BenchUnsupported, runner.MissingModel, OutputPathError) as exc:
        _fail(str(exc), USAGE)
    except runner.ArtifactError as exc:
        _fail(str(exc), USAGE)
    except FileNotFoundError as exc:
        _fail(f"cannot read the model: {exc}", USAGE)
    except ValueError as exc:
        if "threads" not in str(exc):
            raise
        _fail(str(exc), USAGE)
    runner.print_tables(result["tables"], table_format.value)
    typer.echo(f"\nrecords: {result['json']}")
    if result["plot"] is not None:
        typer.echo(f"plot:    {result['plot']}")
    typer.echo(f"model:   {result['model']}")


DEMO = "poisson-jacobi"


@app.command(help="Run the quick Poisson/Jacobi reproduction (GBMS paper, Table 3): say "
                  "what it runs and where its files go, print its table beside the paper's.",
             short_help="Run the quick Poisson/Jacobi reproduction (GBMS paper, Table 3).")
def demo(
    out: Path = typer.Option(Path("metasolve-out"), "--out",
                             help="output folder: the demo's files go under "
                                  "OUT/poisson-jacobi/quick"),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers", min=1,
                                help="worker processes for the experiment's independent cells"),
    table_format: Format = typer.Option(Format.auto, "--format", help=FORMAT_HELP),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
) -> None:
    entry = CATALOG[DEMO]
    quick, full = entry.scales["quick"], entry.scales["full"]
    folder = out / DEMO / "quick"
    typer.echo(f"metasolve demo: learning initial guesses for Jacobi on 1D Poisson (GBMS "
               f"paper, Table 3)\n"
               f"  scale: quick, {format_seconds(quick.seconds)} on 2 CPU cores when measured "
               f"({quick.command}); fewer models and training iterations than the paper\n"
               f"  files: records, plot, trained models and checkpoints go under {folder}\n"
               f"  note:  the quick scale is expected to miss the paper's numbers; the full "
               f"run, `metasolve reproduce {DEMO}` ({format_seconds(full.seconds)} on 2 cores), "
               f"gives the ones to compare with the paper (docs/RESULTS.md)\n")
    runner = _runner()
    _check_device(runner, device)
    result = _run(runner, DEMO, "quick", out, None, workers, True, False, None,
                  device=device)
    runner.print_tables(result["tables"], table_format.value)
    typer.echo(f"\nrecords (JSON):             {result['json']}")
    typer.echo(f"iteration histograms (PNG): {result['plot']}")
    typer.echo(f"trained models:             {folder / 'models'}")
    typer.echo(f"took {format_seconds(result['seconds'])} (quick scale, {workers} worker(s)); "
               f"for the numbers to compare with the paper's, run `metasolve reproduce {DEMO}`")
