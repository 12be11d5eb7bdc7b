"""The AutoSpec polynomial preconditioner against the classical Chebyshev preconditioner of the
same degree from the same probe, inside CG, on every transfer matrix of autospec-linear.

Train a degree-8 preconditioner engine (the basis paradigm of the experiment's ``preconditioner``
cell) on synthetic diagonal spectra, with the plain log residual (``--sharpness 0``, what the
experiment trained before it trained inside CG) or the loss relative to Chebyshev on the
probe's interval (``--sharpness 4``, what the solver engines train with), then count CG
iterations to ``--rtol`` on each transfer matrix (8 right-hand sides each) for plain CG, CG with
the Chebyshev polynomial on the probe's interval (the untrained engine) and CG with the learned
polynomial:

    python benchmarks/autospec_preconditioner.py train --size 256 --sharpness 0 --out plain.st
    python benchmarks/autospec_preconditioner.py train --size 4096 --sharpness 4 --out rel.st
    python benchmarks/autospec_preconditioner.py train --size 4096 --through-cg 40 --out cg.st
    python benchmarks/autospec_preconditioner.py measure plain.st rel.st cg.st

``--through-cg M`` trains the polynomial inside CG instead: ``M`` unrolled CG iterations with
``q(A)`` as the preconditioner, the loss relative to CG with the Chebyshev polynomial (the
classical preconditioner, what the bar compares with).

``--modes 0`` makes the engine place only the interval's lower end (within a factor
``--lower-range`` of the probe's), keeping Chebyshev's polynomial on it.

``calibrate MODEL --out LIMITED`` sets the model's condition limit
(:func:`metasolve.calibrate_condition_limit`) on operators held out from the transfer set
(``metasolve.evaluation.spectral.HELD_OUT``: the same kinds at other sizes, parameters and
seeds): above the largest probe condition estimate at which the learned polynomial made no
held-out instance slower, the engine gives Chebyshev's. The recipe that needs no more iterations
than Chebyshev's on every transfer matrix, the experiment's preconditioner cell's
(docs/RESULTS.md):

    python benchmarks/autospec_preconditioner.py train --size 4096 --through-cg 40 --modes 0 \
        --lower-range 3 --lr 3e-4 --n-train 1024 --epochs 8 --batch-size 64 --out interval.st
    python benchmarks/autospec_preconditioner.py calibrate interval.st --out limited.st
    python benchmarks/autospec_preconditioner.py measure limited.st interval.st

``factors`` counts CG iterations with Chebyshev's polynomial on ``[f a_0, u]`` for fixed
factors ``f`` of the probe's lower end, on the held-out operators or (``--spectra N``) on
synthetic spectra of each kind: whether a fixed raise could do without a limit.

``measure`` prints, per matrix, the median iterations of each and how many instances the
learned polynomial needs fewer / as many / more iterations than Chebyshev's on, and on how many
instances each model moved the lower end.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch

import metasolve as ms
from metasolve.evaluation.spectral import HELD_OUT, TRANSFER, evaluation_sets, held_out_sets
from metasolve.experiments import autospec_linear
from metasolve.experiments.autospec_common import (
    make_engine_solver,
    train_engine,
    train_inside_cg,
)
from metasolve.learned.autospec import condition_estimate, split_probe
from metasolve.tasks import SpectrumFamily
from metasolve.tasks.spectra import SPECTRUM_KINDS


def train(args) -> None:
    settings = autospec_linear.FULL
    plan = settings.preconditioner
    training = replace(plan.training, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr)
    family = autospec_linear._family(settings, args.size)
    checkpoint = Path(args.out).with_suffix(".checkpoint")
    engine_options = {"modes": args.modes, "lower_range": math.log(args.lower_range)}
    start = time.perf_counter()
    if args.through_cg:
        solver, info = train_inside_cg(family, settings.preconditioner_degree, settings.hidden,
                                       args.n_train, args.n_validation, training,
                                       settings.seed, checkpoint, True, args.through_cg,
                                       args.sharpness or 4.0, **engine_options)
    else:
        solver, info = train_engine(family, settings.preconditioner_degree, "basis",
                                    settings.hidden, args.n_train, args.n_validation, training,
                                    settings.seed, checkpoint, progress=True,
                                    sharpness=args.sharpness or None, **engine_options)
    solver.save(args.out)
    print(f"trained in {time.perf_counter() - start:.0f} s: {info}; saved {args.out}")


def fixed_factors(args) -> None:
    """Mean CG iterations with Chebyshev's polynomial on ``[f a_0, u]`` for fixed factors ``f``
    (no training: the engine's lower end moved by exactly ``f``), on the held-out operators or
    on synthetic spectra of each kind (``--spectra N`` of ``--size`` eigenvalues); the counts
    as the solves report them (a breakdown at its own iteration)."""
    settings = autospec_linear.FULL
    family = autospec_linear._family(settings, args.size)
    if args.spectra:
        sets = [(kind, SpectrumFamily(size=args.size, probe_steps=settings.probe_steps,
                                      kinds=(kind,)).sample(args.spectra, seed=1))
                for kind in SPECTRUM_KINDS]
    else:
        sets = held_out_sets(family, HELD_OUT, args.rhs)
    solver = make_engine_solver(family, settings.preconditioner_degree, "basis", (1,), modes=0)
    engine, factors = solver.metasolver, sorted({1.0, *args.factors})
    print("| set |" + "".join(f" f = {f:g} |" for f in factors))
    print("|---" * (1 + len(factors)) + "|")
    for name, tasks in sets:
        means = []
        for factor in factors:
            with torch.no_grad():
                engine.net[-1].bias.zero_()
                engine.net[-1].bias[0] = math.atanh(math.log(factor) / engine.lower_range)
                solution = solver.deployed(ms.ConjugateGradient()).solve(
                    tasks, rtol=args.rtol, maxiter=args.maxiter, safeguard=False)
            means.append(float(solution.iterations.double().mean()))
        print(f"| {name} |" + "".join(f" {m:.2f} |" for m in means), flush=True)


def lower_end_factors(model, features) -> torch.Tensor:
    """``(B,)`` the engine's lower end over the probe's (1 where it gives Chebyshev's)."""
    engine = model.metasolver
    with torch.no_grad():
        lower, _, _ = engine.interval(features)
        probe_lower, _ = split_probe(features.to(torch.float64), engine.probe_steps).interval()
    return lower / probe_lower


def calibrate(args) -> None:
    """Choose the model's condition limit on the held-out operators and save it with it."""
    model = ms.load(args.model)
    sets = held_out_sets(model.family, HELD_OUT, args.rhs)
    limit, report = ms.calibrate_condition_limit(model.deployed(ms.ConjugateGradient()), sets,
                                                 rtol=args.rtol, maxiter=args.maxiter)
    print(f"CG iterations to rtol {args.rtol:g}, mean over {args.rhs} right-hand sides "
          f"(unconverged: {args.maxiter}); the learned polynomial everywhere, and only where "
          f"the probe's condition estimate is at most the limit\n")
    print("| operator | probe condition estimates | lower end / probe's | Chebyshev q | learned q "
          "| learned q under the limit (instances) | first slower instance's estimate |")
    print("|---|---|---|---|---|---|---|")
    for (name, tasks), row in zip(sets, report, strict=True):
        estimate = condition_estimate(split_probe(tasks.features.to(torch.float64),
                                                  model.metasolver.probe_steps))
        factors = lower_end_factors(model, tasks.features)
        print(f"| {name} | {estimate.min():.0f} to {estimate.max():.0f} | "
              f"{factors.min():.2f} to {factors.max():.2f} | {row['classical']:.2f} | "
              f"{row['learned']:.2f} | {row['limited']:.2f} ({row['trusted']} / "
              f"{row['instances']}) | "
              + ("-" if row["first_slower"] is None else f"{row['first_slower']:.1f}") + " |")
    print(f"\ncondition limit: {limit:.4g}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": Path(args.model).stem, "rtol": args.rtol,
                                               "rhs": args.rhs, "maxiter": args.maxiter,
                                               "condition_limit": limit, "operators": report},
                                              indent=1) + "\n")
    model.metasolver.condition_limit = limit
    model.save(args.out)
    print(f"saved {args.out}")


def measure(args) -> None:
    models = [ms.load(path) for path in args.models]
    family = models[0].family
    sets = evaluation_sets(family, TRANSFER, 1, args.rhs, seed=0)[1:]
    print(f"CG iterations to rtol {args.rtol:g}, median over {args.rhs} right-hand sides; "
          f"learned against Chebyshev per instance: fewer / as many / more iterations")
    header = "| matrix | CG | CG + Chebyshev q |" + "".join(
        f" CG + learned q ({Path(p).stem}) |" for p in args.models) + \
        " instances moved | probe's lower end / lambda_min |"
    print("\n" + header)
    print("|---" * (5 + len(models)) + "|")
    record = {"rtol": args.rtol, "rhs": args.rhs, "models": [Path(p).stem for p in args.models],
              "matrices": []}
    for name, tasks, extremes in sets:
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
        factors = [lower_end_factors(model, tasks.features) for model in models]
        cells.append(" / ".join(str(int((f != 1).sum())) for f in factors))
        probe_lower, _ = split_probe(tasks.features.to(torch.float64),
                                     models[0].metasolver.probe_steps).interval()
        above = probe_lower / extremes[:, 0]
        cells.append(f"{above.min():.3g} to {above.max():.3g}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        record["matrices"].append({
            "name": name, "cg": _outcome(plain), "chebyshev": _outcome(chebyshev),
            "learned": [{**_outcome(solution), "lower_end_factors": f.tolist()}
                        for solution, f in zip(learned, factors, strict=True)]})
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"\nwrote {args.json}")


def _outcome(solution) -> dict:
    return {"iterations": solution.iterations.tolist(),
            "converged": solution.converged.tolist()}


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
    fit.add_argument("--modes", type=int, default=8,
                     help="smooth modes of the polynomial's correction (0: interval only)")
    fit.add_argument("--lower-range", type=float, default=1e3, metavar="R",
                     help="the learned lower end stays within a factor R of the probe's")
    fit.add_argument("--out", required=True)
    check = commands.add_parser("measure")
    check.add_argument("models", nargs="+")
    check.add_argument("--rtol", type=float, default=1e-8)
    check.add_argument("--rhs", type=int, default=8)
    check.add_argument("--json", help="also write the per-instance results to this file")
    scan = commands.add_parser("calibrate")
    scan.add_argument("model")
    scan.add_argument("--rtol", type=float, default=1e-8)
    scan.add_argument("--rhs", type=int, default=8)
    scan.add_argument("--maxiter", type=int, default=5000)
    scan.add_argument("--out", required=True, help="the model with its limit, saved here")
    scan.add_argument("--json", help="also write the table and the limit to this file")
    fixed = commands.add_parser("factors")
    fixed.add_argument("--factors", type=float, nargs="+", default=[1.05, 1.25, 1.5, 2.0, 3.0])
    fixed.add_argument("--spectra", type=int, default=0,
                       help="synthetic spectra of each kind instead of the held-out operators")
    fixed.add_argument("--size", type=int, default=4096)
    fixed.add_argument("--rtol", type=float, default=1e-8)
    fixed.add_argument("--rhs", type=int, default=8)
    fixed.add_argument("--maxiter", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"train": train, "measure": measure, "calibrate": calibrate,
     "factors": fixed_factors}[args.command](args)


if __name__ == "__main__":
    main()
