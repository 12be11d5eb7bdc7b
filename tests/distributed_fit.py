"""A small fit of every kind (Adam, then L-BFGS, then Gauss-Newton) that tests/test_distributed.py
runs data-parallel under torchrun and, for the reference, in one process (it imports ``fit``).

    python -m torch.distributed.run --standalone --nproc-per-node=2 tests/distributed_fit.py \\
        OUT [--stages adam,lbfgs,gauss-newton] [--stop-after K]

Every rank writes its weights after each stage to ``OUT/STAGE-rankR.safetensors``; rank 0 also
writes the histories to ``OUT/histories.json``. ``--stop-after K`` kills rank 0 (SIGKILL, as
an out-of-memory kill or a lost node would) right after the Adam checkpoint of epoch ``K`` is
written: torchrun then stops the other ranks, and the same command without it resumes.

The sizes split unevenly on purpose: batches of 10, 10 and 1 training tasks (the last leaves
rank 0 an empty shard), 13 validation tasks, 6 Gauss-Newton chunks of 4 and one of 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

import metasolve as ms
from metasolve.training.distributed import destroy_process_group, is_main_process, rank

N = 8
TRAIN, VALIDATION = 21, 13
STAGES = ("adam", "lbfgs", "gauss-newton")


def splits():
    return ms.make_splits(ms.Poisson1DFamily(n=N, p=0.0), TRAIN, VALIDATION, 4, seed=0)


def solver():
    torch.manual_seed(0)
    psi = ms.NetworkMetaSolver(N, {"x0": ms.BasisHead(ms.sine_basis(N))}, hidden=(12,))
    return ms.LearnedSolver(ms.Jacobi(), psi, family=ms.Poisson1DFamily(n=N, p=0.0),
                            monitor="error")


def trainer(learned, checkpoint=None, on_epoch=None, distributed=None):
    config = ms.TrainingConfig(epochs=4, batch_size=10, lr=0.05, seed=1, plateau_patience=0,
                               plateau_factor=0.5)
    return ms.Trainer(learned, ms.FixedIterationLoss(2), config, checkpoint=checkpoint,
                      progress=False, on_epoch=on_epoch, device="cpu", distributed=distributed)


def fit(out: Path | None, stages=STAGES, stop_after: int | None = None,
        distributed: bool | None = None) -> dict:
    """Run the stages; returns ``{stage: weights}`` and ``{"histories": ...}``."""
    data = splits()
    learned = solver()

    def on_epoch(epoch, history):
        if stop_after is not None and epoch + 1 == stop_after and is_main_process():
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint = None if out is None else out / "adam.checkpoint.safetensors"
    fits = trainer(learned, checkpoint, on_epoch, distributed)
    results, histories = {}, {}
    for stage in stages:
        if stage == "adam":
            histories[stage] = asdict(fits.fit(data.train, data.validation))
        elif stage == "lbfgs":
            histories[stage] = {"kept": fits.refine_lbfgs(data.train, data.validation,
                                                          iterations=6),
                                **learned.settings["training"]["lbfgs"]}
        elif stage == "gauss-newton":
            histories[stage] = asdict(fits.refine_gauss_newton(
                data.train, data.validation, ms.GaussNewtonConfig(iterations=2, chunk_size=4)))
        else:
            raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
        results[stage] = {k: v.detach().clone() for k, v in learned.model.state_dict().items()}
        if out is not None:
            save_file(results[stage], str(out / f"{stage}-rank{rank()}.safetensors"))
    if out is not None and is_main_process():
        (out / "histories.json").write_text(json.dumps(histories))
    return {"weights": results, "histories": histories}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--stop-after", type=int, default=None)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fit(args.out, args.stages.split(","), args.stop_after)
    destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
