"""Running a paper experiment: its jobs, the worker pool, the records, tables and plot
(``metasolve reproduce``; docs/architecture.md, sec. 9). The experiments themselves are settings,
cells and paper numbers (:mod:`metasolve.experiments`).
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .artifact import ArtifactError
from .benchmark import BenchUnsupported, MissingModel, bench, bench_saved_model
from .evaluation.bench import bench_tables, split_bench_records
from .evaluation.records import read_records, write_records
from .evaluation.render import Table, markdown_tables, print_tables, rich_tables, save_figure
from .evaluation.shifts import evaluate_saved_models, shift_table, split_shift_records
from .experiments import EXPERIMENTS, get
from .outputs import RunLock, check_file_target, prepare_directory
from .parallel import JobError, check_engine, describe_engine, map_jobs
from .progress import RunMonitor
from .training.distributed import (
    destroy_process_group,
    fit_device,
    init_process_group,
    launched,
    rank,
    world_size,
)
from .validation import check_choice, check_count, check_device

# The command line imports this module only inside its commands (it imports torch); what it
# needs besides reproduce comes from here too: the errors it reports and the records and table
# helpers.
__all__ = ["EXPERIMENTS", "ArtifactError", "BenchUnsupported", "JobError", "MissingModel",
           "bench", "bench_saved_model", "check_device", "get", "jobs_of",
           "launched", "plot_records", "print_tables", "read_records", "record_tables",
           "render_markdown", "reproduce"]


def jobs_of(module, scale: str, out_dir: Path, epochs: int | None = None) -> list[dict]:
    """The worker jobs of ``module`` at ``scale``: each of its cells with the scale's settings,
    the output folder and the ``--epochs`` override (which
    :func:`metasolve.experiments.common.job_settings` applies)."""
    settings = module.SCALES[scale]
    cells = module.cells(settings) if hasattr(module, "cells") else [{}]
    return [{"settings": settings, "out_dir": str(out_dir), "scale": scale, "epochs": epochs,
             **cell} for cell in cells]


#: The keys ``jobs_of`` adds to every cell; the others say which cell a job is.
RUN_KEYS = ("settings", "out_dir", "scale", "epochs", "progress")


def cell_name(job: dict) -> str:
    """The cell a job runs, by its own keys (e.g. ``cell p=0.01, rows=[('L_m', 5)]``)."""
    keys = ", ".join(f"{k}={v!r}" for k, v in job.items() if k not in RUN_KEYS)
    return f"cell {keys}" if keys else "the experiment's cell"


def short_name(job: dict) -> str:
    """A job's name in progress lines, by its own keys (e.g. ``p=0.01 rows=L_m 5``)."""
    def text(value):
        if isinstance(value, (list, tuple)):
            return " ".join(map(text, value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    return " ".join(f"{k}={text(v)}" for k, v in job.items() if k not in RUN_KEYS) or "cell"


#: What ``reproduce(..., shift=)`` adds: nothing, or the saved models on the experiment's
#: shifted sets (the safeguard's evaluation, :mod:`metasolve.evaluation.shifts`).
SHIFTS = ("none", "ood")


def reproduce(name: str, scale: str = "full", out_dir="metasolve-out", json_path=None,
              workers: int = 1, progress: bool = True, epochs: int | None = None,
              restart: bool = False, shift: str = "none", device=None,
              distributed: bool = False, engine: str = "local",
              address: str | None = None) -> dict:
    """Run experiment ``name`` at ``scale``; write records (JSON) and its plot under ``out_dir``.

    Returns a dict with ``records``, ``tables`` (:class:`~metasolve.evaluation.render.Table`
    values), ``table`` (the same as a rich renderable), ``json`` and ``plot`` paths and
    ``seconds``. Interrupted runs resume: each training checkpoints under ``out_dir``.
    ``progress`` shows the run's progress on standard error (live on a terminal; elsewhere one
    line per finished cell, and a line at least every 30 s while cells run), with the
    trainings inside the cells, in worker processes too.
    ``epochs`` overrides the scale's training epochs (a budget run; records carry the value);
    ``restart`` discards the checkpoints of an earlier run first. ``shift="ood"`` then solves
    the experiment's shifted sets with every model the run saved, unguarded, safeguarded and
    with the classical method (:mod:`metasolve.evaluation.shifts`), and adds those records
    (each with a ``shift`` key) and their table.

    ``engine`` runs the cells: ``"local"`` in-process (``workers=1``) or in ``workers`` worker
    processes, ``"ray"`` as Ray tasks (:func:`metasolve.parallel.map_jobs`): on a local Ray
    runtime of ``workers`` CPUs that the run starts, or, with ``address`` (``"HOST:PORT"`` of a
    cluster's head, or ``"auto"``), on that cluster, whose CPUs then decide how many cells run at
    once. The records are the same whichever engine runs the cells. On a cluster of several
    machines, ``out_dir`` must be a folder every node sees at the same path (the cells write
    their checkpoints and models there).

    Before any work, the arguments and every output path are checked (the run folder
    ``out_dir/name/scale`` is created, the records and plot files must be writable): a bad one
    raises :class:`~metasolve.outputs.OutputPathError` (a ValueError). The run folder is locked
    for the run; a second run on it meanwhile raises :class:`~metasolve.outputs.OutputBusyError`.
    The first cell that fails stops the run with :class:`~metasolve.parallel.JobError` naming the
    cell (its exception as the cause); the other cells' checkpoints stay for a rerun.

    ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``) is where the experiment's trainings run
    (:func:`metasolve.training.distributed.fit_device`; their weights come back to the CPU
    after each fit, where the evaluations run); ``None``: the CPU. ``distributed`` trains
    data-parallel over the ranks ``torchrun`` started (see :func:`reproduce_distributed`).
    """
    if distributed:
        if engine != "local":
            raise ValueError(f"engine={engine!r}: a distributed run (distributed=True) runs its "
                             "cells on the ranks torchrun started; use the local engine")
        return reproduce_distributed(name, scale, out_dir, json_path, progress=progress,
                                     epochs=epochs, restart=restart, shift=shift,
                                     device=device)
    module = get(name)
    check_choice("scale", scale, tuple(module.SCALES))
    check_count("epochs", epochs, minimum=1, allow_none=True)
    check_count("workers", workers, minimum=1)
    check_choice("shift", shift, SHIFTS)
    run_cell = module.run_cell
    if device is not None:
        run_cell = functools.partial(run_on_device, run_cell, str(check_device("device", device)))
    check_engine(engine, address)
    if shift != "none" and not hasattr(module, "shifted_sets"):
        raise ValueError(f"{name} has no shifted sets; shift must be 'none' for it")
    prepare_directory("output directory", out_dir)
    out_dir = prepare_directory("run folder", Path(out_dir) / name / scale)
    json_path = check_file_target("records file",
                                  json_path or out_dir / f"{name}.json")
    plot_path = check_file_target("plot file", out_dir / f"{name}.png")
    with RunLock(out_dir):
        # Under the lock: a concurrent run's checkpoints are never deleted beneath it.
        if restart:
            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        start = time.perf_counter()
        # A Ray task may run on another node, in another folder: it gets the absolute path.
        jobs = jobs_of(module, scale, out_dir.absolute() if engine == "ray" else out_dir, epochs)
        for job in jobs:
            job["progress"] = progress  # the cells' trainings report to the monitor below
        reused = len(list((out_dir / "checkpoints").glob("**/*.safetensors")))
        monitor = RunMonitor(f"{name} ({scale} scale)", [short_name(job) for job in jobs],
                             json_path, out_dir, min(workers, len(jobs)), enabled=progress,
                             reused=reused,
                             engine=describe_engine(engine, workers, len(jobs), address))
        with monitor:
            results = map_jobs(run_cell, jobs, workers=workers, name=cell_name,
                               on_event=monitor.event, engine=engine, address=address)
        records = [r for result in results for r in result["records"]]
        if shift == "ood":
            records += evaluate_saved_models(module, module.SCALES[scale], out_dir / "models")
        seconds = time.perf_counter() - start
        write_records(json_path, records)
        plot_path = save_figure(module.figure(results), plot_path)
    tables = experiment_tables(module, records)
    return {"records": records, "tables": tables, "table": rich_tables(tables),
            "json": json_path, "plot": plot_path, "seconds": seconds, "results": results}


def run_on_device(run_cell, device: str, job: dict) -> dict:
    """``run_cell(job)`` with its trainings on ``device`` (a worker's job: module level)."""
    with fit_device(device):
        return run_cell(job)


def reproduce_distributed(name: str, scale: str = "full", out_dir="metasolve-out",
                          json_path=None, progress: bool = True, epochs: int | None = None,
                          restart: bool = False, shift: str = "none", device=None) -> dict:
    """:func:`reproduce` in every process ``torchrun`` started (``torchrun --nproc-per-node=N
    -m metasolve reproduce NAME --distributed``), its trainings data-parallel over them.

    Every rank runs the experiment's cells in turn, in-process; each fit in them joins the
    process group and trains on its shard of every batch (:mod:`metasolve.training.
    distributed`), the rest of a cell (sampling, evaluation) runs on every rank alike. Rank 0
    writes the run folder as :func:`reproduce` does (checkpoints, models, records, plot; it
    reads the checkpoints too, so only its machine needs to see ``out_dir``); the other ranks
    write theirs into a temporary folder that is deleted at the end, show no progress, and
    return their own copy of the result (``result["rank"]`` says whose, ``result["ranks"]``
    how many there were). A killed run resumes when the same command is
    launched again. ``device="cuda"`` trains each rank on its own GPU (nccl), otherwise on the
    CPU (gloo).
    """
    created = init_process_group(device)
    try:
        me, ranks = rank(), world_size()
        if me == 0:
            result = reproduce(name, scale, out_dir, json_path, workers=1, progress=progress,
                               epochs=epochs, restart=restart, shift=shift, device=device)
        else:
            with tempfile.TemporaryDirectory(prefix=f"metasolve-rank{me}-") as scratch:
                result = reproduce(name, scale, scratch, None, workers=1, progress=False,
                                   epochs=epochs, restart=False, shift=shift, device=device)
        return {**result, "rank": me, "ranks": ranks}
    finally:
        if created:
            destroy_process_group(wait=sys.exc_info()[0] is None)  # no wait on an error


def experiment_tables(module, records: list[dict]) -> list[Table]:
    """The experiment's own tables, then the shifted sets' table and the ``metasolve bench``
    tables if ``records`` hold any."""
    own, shifted = split_shift_records([r for r in records if r["experiment"] == module.NAME])
    own, benched = split_bench_records(own)
    return ((module.tables(own) if own else []) + ([shift_table(shifted)] if shifted else [])
            + (bench_tables(benched) if benched else []))


def record_tables(records: list[dict]) -> list[tuple[str, list[Table]]]:
    """``(heading, tables)`` for every experiment present in ``records``, by name."""
    return [(f"{name}: {get(name).TITLE}", experiment_tables(get(name), records))
            for name in sorted({r["experiment"] for r in records})]


def render_markdown(records: list[dict]) -> str:
    """Markdown tables for every experiment present in ``records`` (for docs/RESULTS.md)."""
    return "\n".join(f"## {heading}\n\n{markdown_tables(tables)}"
                      for heading, tables in record_tables(records))


def plot_records(records: list[dict], path) -> Path | None:
    """Draw the figure of the one experiment in ``records`` from the records alone (the panels
    that need a run's per-instance data are left out) and write it as PNG to ``path``; ``None``
    if the records give nothing to draw. A ValueError if they hold no or several experiments."""
    names = sorted({r["experiment"] for r in records})
    if len(names) != 1:
        raise ValueError(f"a figure shows one experiment; these records hold {names or 'none'}")
    return save_figure(get(names[0]).figure([{"records": records}]), Path(path))
