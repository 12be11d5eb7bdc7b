"""The AutoSpec polynomial preconditioner against the classical Chebyshev preconditioner of the
same degree from the same probe, inside CG, on every transfer matrix of autospec-linear.

Train a degree-8 preconditioner engine (the basis paradigm of the experiment's ``preconditioner``
cell) on synthetic diagonal spectra, with the plain log residual (``--sharpness 0``, what the
experiment trains) or the loss relative to Chebyshev on the probe's interval (``--sharpness 4``,
what the solver engines train with), then count CG iterations to ``--rtol`` on each transfer
matrix (8 right-hand sides each) for plain CG, CG with the Chebyshev polynomial on the probe's
interval (the untrained engine) and CG with the learned polynomial:

    python benchmarks/autospec_preconditioner.py train --size 256 --sharpness 0 --out plain.st
    python benchmarks/autospec_preconditioner.py train --size 4096 --sharpness 4 --out rel.st
    python benchmarks/autospec_preconditioner.py train --size 4096 --through-cg 40 --out cg.st
    python benchmarks/autospec_preconditioner.py measure plain.st rel.st cg.st

``--through-cg M`` trains the polynomial inside CG instead: ``M`` unrolled CG iterations with
``q(A)`` as the preconditioner, the loss relative to CG with the Chebyshev polynomial (the
classical preconditioner, what the bar compares with).

``measure`` prints, per matrix, the median iterations of each and how many instances the
learned polynomial needs fewer / as many / more iterations than Chebyshev's on.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

import metasolve as ms
from metasolve.evaluation.spectral import TRANSFER, evaluation_sets
from metasolve.experiments import autospec_linear
from metasolve.experiments.autospec_common import make_engine_solver, train_engine
from metasolve.tasks import make_splits


def train(args) -> None:
    settings = autospec_linear.FULL
    plan = settings.preconditioner
    training = replace(plan.training, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr)
    family = autospec_linear._family(settings, args.size)
    checkpoint = Path(args.out).with_suffix(".checkpoint")
    start = time.perf_counter()
    if args.through_cg:
        splits = make_splits(family, args.n_train, args.n_validation, 1, seed=settings.seed)
        torch.manual_seed(settings.seed)
        engine = make_engine_solver(family, settings.preconditioner_degree, "basis",
                                    settings.hidden)
        solver = engine.deployed(ms.ConjugateGradient())
        loss = ms.RelativeLogResidualLoss(args.through_cg, args.sharpness or 4.0)
        history = ms.Trainer(solver, loss, training, checkpoint=checkpoint,
                             progress=True).fit(splits.train, splits.validation)
        info = {"best_epoch": history.best_epoch,
                "best_validation_loss": history.best_validation_loss}
    else:
        solver, info = train_engine(family, settings.preconditioner_degree, "basis",
                                    settings.hidden, args.n_train, args.n_validation, training,
                                    settings.seed, checkpoint, progress=True,
                                    sharpness=args.sharpness or None)
    solver.save(args.out)
    print(f"trained in {time.perf_counter() - start:.0f} s: {info}; saved {args.out}")


def measure(args) -> None:
    models = [ms.load(path) for path in args.models]
    family = models[0].family
    sets = evaluation_sets(family, TRANSFER, 1, args.rhs, seed=0)[1:]
    print(f"CG iterations to rtol {args.rtol:g}, median over {args.rhs} right-hand sides; "
          f"learned against Chebyshev per instance: fewer / as many / more iterations")
    header = "| matrix | CG | CG + Chebyshev q |" + "".join(
        f" CG + learned q ({Path(p).stem}) |" for p in args.models)
    print("\n" + header)
    print("|---" * (3 + len(models)) + "|")
    for name, tasks, _ in sets:
        cap = 20 * tasks.problem.size
        with torch.no_grad():
            plain = ms.run(ms.ConjugateGradient(), tasks.problem, rtol=args.rtol, maxiter=cap)
            deployed = [model.deployed(ms.ConjugateGradient()) for model in models]
            chebyshev = deployed[0].solve_baseline(tasks, rtol=args.rtol, maxiter=cap)
            learned = [d.solve(tasks, rtol=args.rtol, maxiter=cap, safeguard=False)
                       for d in deployed]
        base = chebyshev.iterations
        cells = [f"{plain.iterations.double().median():.0f}", f"{base.double().median():.0f}"]
        for solution in learned:
            its = solution.iterations
            fewer, same = int((its < base).sum()), int((its == base).sum())
            cells.append(f"{its.double().median():.0f} ({fewer} / {same} / "
                         f"{len(its) - fewer - same})"
                         + ("" if bool(solution.converged.all()) else " not all converged"))
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("train")
    fit.add_argument("--size", type=int, default=256, help="eigenvalues per training spectrum")
    fit.add_argument("--sharpness", type=float, default=0.0,
                     help="0: the plain log residual; > 0: relative to Chebyshev")
    fit.add_argument("--n-train", type=int, default=1024)
    fit.add_argument("--n-validation", type=int, default=256)
    fit.add_argument("--epochs", type=int, default=8)
    fit.add_argument("--batch-size", type=int, default=128)
    fit.add_argument("--lr", type=float, default=1e-3)
    fit.add_argument("--through-cg", type=int, default=0, metavar="M",
                     help="train inside M unrolled CG iterations (0: as a solver)")
    fit.add_argument("--out", required=True)
    check = commands.add_parser("measure")
    check.add_argument("models", nargs="+")
    check.add_argument("--rtol", type=float, default=1e-8)
    check.add_argument("--rhs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"train": train, "measure": measure}[args.command](args)


if __name__ == "__main__":
    main()
