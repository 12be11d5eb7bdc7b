"""Does the neural-SCS Kalman GRU get better with more training problems at a fixed number of
updates? The road from our 1,024 problems to the neural SCS paper's 50,000, measured.

For each training-set size the recurrent model of ``metasolve reproduce neural-scs-kalman``
(Algorithm 1: a GRU at every SCS iteration, an MLP initializer; the full scale's sizes: 20 time
steps, hidden widths 512 and 256, Adam with its schedule, global batch 32) is trained from the
same start for the same number of Adam updates (``--updates``, 1,280 by default: the full
scale's 40 epochs of 1,024 problems), so a larger set is passed over fewer times (40, 20 and 10
epochs for 1,024, 2,048 and 4,096 problems). The test set (128 programs) and the validation set
(64) are the same for every size. Recorded per size: the median tau-normalised fixed-point
residual on the test set at SCS iterations 1 to 50 (the neural SCS paper's Figure 2b metric;
k = 10 is the one to read), the best epoch, the training time and the seconds per update; and
plain SCS and SCS+AA on the same test set.

The training is data-parallel when launched by torchrun (each rank computes the loss and the
gradient of its half of every batch of 32; :mod:`metasolve.training.distributed`), and
checkpointed every epoch under ``--work``: a killed run resumes when the same command is
launched again. Rank 0 evaluates and writes the records.

    # the study (records in docs/results/scaling/kalman-scaling.json)
    torchrun --standalone --nproc-per-node=2 benchmarks/kalman_scaling.py
    # an end-to-end check at a tiny size (about a minute on 2 cores)
    torchrun --standalone --nproc-per-node=2 benchmarks/kalman_scaling.py \\
        --sizes 64,128 --updates 8 --out /tmp/kalman-scaling --work /tmp/kalman-scaling-work
    # how long the study takes: seconds per update and per validation pass at each size
    torchrun --standalone --nproc-per-node=2 benchmarks/kalman_scaling.py --timing 4

Without torchrun the same commands train in one process.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from metasolve.evaluation.records import record, write_records
from metasolve.experiments import neural_scs_common as common
from metasolve.experiments import neural_scs_kalman as kalman
from metasolve.solvers import SCS, AndersonSCS
from metasolve.tasks.base import make_splits
from metasolve.tasks.conic import KalmanFamily
from metasolve.training import Trainer
from metasolve.training.distributed import destroy_process_group, is_main_process, world_size

EXPERIMENT = "neural-scs-kalman-scaling"
MODEL = "neural_recurrent"
SIZES = (1024, 2048, 4096)
UPDATES = 1280  # the full scale: 40 epochs of 1,024 problems in batches of 32
READ_AT = 10  # the iteration whose median residual the study reports


def settings_for(size: int, updates: int) -> common.Settings:
    """The full scale's settings with ``size`` training problems and as many epochs as make
    ``updates`` Adam updates; ``ValueError`` if they do not divide evenly."""
    base = kalman.FULL
    per_epoch = math.ceil(size / base.training.batch_size)
    if updates % per_epoch:
        raise ValueError(f"{updates} updates are not a whole number of epochs of {size} "
                         f"problems in batches of {base.training.batch_size} ({per_epoch} "
                         "updates per epoch)")
    return replace(base, train=size, models=(MODEL,), deploy=0,
                   training=replace(base.training, epochs=updates // per_epoch))


def prepare(size: int, updates: int, work: Path | None):
    """The splits, the solver and its trainer for ``size`` training problems, built as
    ``neural_scs_common.run_family_cell`` builds them."""
    settings = settings_for(size, updates)
    family = KalmanFamily(**settings.family)
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    splits = make_splits(family, settings.train, settings.validation, settings.test,
                         seed=settings.seed)
    sampling = time.perf_counter() - start
    scale = splits.train.features.std(dim=0).clamp_min(1e-3)
    torch.manual_seed(settings.seed)
    solver, loss = common.build_solver(MODEL, family, splits.test.problem.size, settings, scale)
    checkpoint = None if work is None else work / f"kalman-{size}.safetensors"
    trainer = Trainer(solver, loss, settings.training, checkpoint=checkpoint,
                      progress=is_main_process())
    return settings, splits, solver, trainer, sampling


def setting_keys(settings: common.Settings, splits, **extra) -> dict:
    test = splits.test.problem
    return {"set": kalman.label_of(settings), "train_tasks": settings.train,
            "test_tasks": settings.test, "validation_tasks": settings.validation,
            "variables": test.variables, "constraints": test.constraints, **extra}


def study(sizes, updates: int, work: Path) -> list[dict]:
    records = []
    for i, size in enumerate(sizes):
        settings, splits, solver, trainer, _ = prepare(size, updates, work)
        start = time.perf_counter()
        history = trainer.fit(splits.train, splits.validation)
        seconds = time.perf_counter() - start
        if not is_main_process():
            continue
        keys = setting_keys(settings, splits, updates=updates, epochs=settings.training.epochs,
                            batch_size=settings.training.batch_size, ranks=world_size())
        curves, _ = common.curves_of(None, splits.test.problem, solver, splits.test)
        records += common.curve_records(EXPERIMENT, MODEL, curves, best_epoch=history.best_epoch,
                                        **keys)
        records += [record(EXPERIMENT, MODEL, "train_seconds", seconds, **keys),
                    record(EXPERIMENT, MODEL, "seconds_per_update", seconds / updates, **keys)]
        if i == 0:  # the classical methods on the same test set, once
            for name, method in (("scs", SCS()), ("scs_aa", AndersonSCS(memory=5))):
                curves, _ = common.curves_of(method, splits.test.problem)
                records += common.curve_records(EXPERIMENT, name, curves,
                                                **setting_keys(settings, splits))
        print(f"{size} problems: {settings.training.epochs} epochs, best epoch "
              f"{history.best_epoch}, {seconds:.0f} s, median residual at k={READ_AT} "
              f"{_median_at(records, MODEL, size):.3e}", flush=True)
    return records


def timing(sizes, updates: int, count: int) -> list[dict]:
    """Seconds per update (loss and gradient of this rank's shard, the gradients summed over
    the ranks, the Adam step) and per validation pass, over ``count`` updates at each size; no
    checkpoint, nothing trained to the end."""
    rows = []
    for size in sizes:
        settings, splits, solver, trainer, sampling = prepare(size, updates, None)
        model = solver.model
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.training.lr)
        order = torch.randperm(size, generator=torch.Generator().manual_seed(0))
        spent = []
        for idx in order.split(settings.training.batch_size)[:count]:
            start = time.perf_counter()
            # The steps of Trainer.fit's loop (it has no hook to stop after a few updates).
            local, _ = trainer._loss(splits.train, idx)
            optimizer.zero_grad()
            if local is not None:
                local.backward()
            trainer.parallel.reduce_gradients(model.parameters())
            optimizer.step()
            spent.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            trainer._loss(splits.validation)
        validation = time.perf_counter() - start
        # The first update pays for warming up; the others are the steady state.
        update = float(np.median(spent[1:] if len(spent) > 1 else spent))
        epochs = settings.training.epochs
        estimate = sampling + updates * update + (epochs + 1) * validation
        rows.append({"train_tasks": size, "ranks": world_size(), "sampling_seconds": sampling,
                     "seconds_per_update": update, "validation_seconds": validation,
                     "epochs": epochs, "updates": updates,
                     "estimated_training_seconds": estimate})
        if is_main_process():
            print(f"{size} problems: sampled in {sampling:.1f} s, {update:.2f} s per update, "
                  f"{validation:.2f} s per validation pass; {updates} updates in {epochs} "
                  f"epochs: about {estimate / 60:.0f} min", flush=True)
    return rows


def _median_at(records, method, size) -> float:
    for r in records:
        if (r["method"] == method and r["metric"] == "median_fixed_point_residual"
                and r["iteration"] == READ_AT and r.get("train_tasks") == size):
            return r["value"]
    return float("nan")


def table(records: list[dict], sizes) -> str:
    """The study as a Markdown table."""
    lines = ["| training problems | epochs | best epoch | median residual k=5 | k=10 | k=20 | "
             "s per update |", "|---|---|---|---|---|---|---|"]
    for size in sizes:
        found = {r["iteration"]: r for r in records
                 if r["method"] == MODEL and r.get("train_tasks") == size
                 and r["metric"] == "median_fixed_point_residual"}
        speed = next(r["value"] for r in records if r["method"] == MODEL
                     and r.get("train_tasks") == size and r["metric"] == "seconds_per_update")
        lines.append(f"| {size} | {found[READ_AT]['epochs']} | {found[READ_AT]['best_epoch']} | "
                     f"{found[5]['value']:.3e} | {found[10]['value']:.3e} | "
                     f"{found[20]['value']:.3e} | {speed:.2f} |")
    for name, label in (("scs", "SCS"), ("scs_aa", "SCS+AA")):
        found = {r["iteration"]: r["value"] for r in records if r["method"] == name
                 and r["metric"] == "median_fixed_point_residual"}
        lines.append(f"| {label} (no training) | | | {found[5]:.3e} | {found[10]:.3e} | "
                     f"{found[20]:.3e} | |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="training-set sizes, comma-separated")
    parser.add_argument("--updates", type=int, default=UPDATES,
                        help="Adam updates at every size (a whole number of epochs of each)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/scaling"),
                        help="folder of the records (kalman-scaling.json)")
    parser.add_argument("--work", type=Path, default=Path("metasolve-out/kalman-scaling"),
                        help="folder of the checkpoints (a rerun resumes from them)")
    parser.add_argument("--timing", type=int, default=None, metavar="K",
                        help="only time K updates and a validation pass at each size")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        settings_for(size, args.updates)  # every size a whole number of epochs, before work
    torch.set_num_threads(1)
    try:
        if args.timing is not None:
            rows = timing(sizes, args.updates, args.timing)
            if is_main_process():
                args.out.mkdir(parents=True, exist_ok=True)
                path = args.out / "kalman-scaling-timing.json"
                path.write_text(json.dumps(rows, indent=1) + "\n")
                print(f"timings: {path}")
            return
        records = study(sizes, args.updates, args.work)
        if is_main_process():
            path = write_records(args.out / "kalman-scaling.json", records)
            print(f"\n{table(records, sizes)}\n\nrecords: {path}")
    finally:
        destroy_process_group(wait=sys.exc_info()[0] is None)  # no wait on an error


if __name__ == "__main__":
    main()
