"""A learned initial guess that transfers across grid sizes, on the structured-grid diffusion
family (:class:`metasolve.GridDiffusionFamily`): trained at ``n = 32`` only, applied unchanged at
``n = 64, 128, 256``.

The learned part reads ``log k`` on the family's fixed 16 x 16 reference grid
(``features="field"``, the same numbers at every ``n``) and predicts the first 12 x 12 sine
coefficients of the solution on the unit square (:class:`metasolve.GridSineHead`); the guess on
an ``n x n`` grid is that sine series at the grid's points. A network of two hidden layers of
256 (SiLU) is trained with :class:`metasolve.Trainer` on the relative error of the guess itself
(``FixedIterationLoss(m=0)`` under the error monitor, GBMS paper sec. 2.2.1), against exact
solutions from a sparse LU, on 8,000 tasks at ``n = 32``.

``measure`` compares, per grid size, the same classical method from the zero guess and from the
learned guess: SOR with Young's factor ``2 / (1 + sin(pi h))`` at that size (the best constant
factor of the Laplacian; tuned at ``n = 32`` it would be far from optimal at larger ``n``,
see ``grid_transfer.py``), and CG. Mean iterations to ``rtol = 1e-6`` (relative to ``||b||``),
the guess's relative error against the exact solution, and end-to-end wall-clock: features,
inference, the guess's evaluation on the grid and the solve, against the zero guess's solve,
as the median of ``--repeats`` interleaved rounds on one torch thread.

Commands (the tables in docs/RESULTS.md come from them)::

    python benchmarks/grid_guess.py train --out grid_guess.safetensors
    python benchmarks/grid_guess.py measure --model grid_guess.safetensors \\
        --sizes 32 64 128 256 --repeats 3 --json grid-guess-fourier.json
    python benchmarks/grid_guess.py table grid-guess-fourier.json
    # the same design, unchanged, trained on another coefficient distribution
    python benchmarks/grid_guess.py train --coefficient fourier --modes 5 --amplitude 1.5 \\
        --out grid_guess_rough.safetensors
    python benchmarks/grid_guess.py measure --model grid_guess_rough.safetensors \\
        --sizes 32 64 128 256 --repeats 3 --json grid-guess-rough.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from grid_transfer import summary, textbook

import metasolve as ms

TRAIN_SIZE = 32


def family(args_or_config, n: int, **overrides) -> ms.GridDiffusionFamily:
    """The family of the command's (or a model's stored) settings at grid size ``n``."""
    get = args_or_config.get if isinstance(args_or_config, dict) else \
        lambda key: getattr(args_or_config, key)
    settings = {"coefficient": get("coefficient"), "modes": get("modes"),
                "amplitude": get("amplitude"), "features": "field", **overrides}
    return ms.GridDiffusionFamily(n=n, **settings)


def train(args) -> None:
    torch.manual_seed(args.seed)
    fam = family(args, TRAIN_SIZE, exact=True)
    start = time.perf_counter()
    splits = ms.make_splits(fam, n_train=args.tasks, n_validation=args.validation, n_test=1,
                            seed=args.seed)
    print(json.dumps({"tasks_built_s": round(time.perf_counter() - start, 1)}), flush=True)
    psi = ms.NetworkMetaSolver(fam.feature_dim, {"x0": ms.GridSineHead(args.sine_modes)},
                               hidden=tuple(args.hidden), zero_init=True)
    settings = {"training_size": TRAIN_SIZE, "loss": "relative error of the guess (m = 0)",
                "tasks": args.tasks, "epochs": args.epochs, "lr": args.lr,
                "batch_size": args.batch_size, "sine_modes": args.sine_modes}
    # The method is the one the guess was built for; ``measure`` deploys the same meta-solver
    # into SOR with each grid's factor and into CG.
    solver = ms.LearnedSolver(ms.SOR(textbook(TRAIN_SIZE)), psi, family=fam, monitor="error",
                              settings=settings)
    config = ms.TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               plateau_patience=args.patience, seed=args.seed)

    def report(epoch, history):
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            print(json.dumps({"epoch": epoch + 1,
                              "train": round(history.train_loss[-1], 5),
                              "validation": round(history.validation_loss[-1], 5),
                              "lr": history.lr[-1], "seconds": round(history.seconds, 1)}),
                  flush=True)

    history = ms.Trainer(solver, ms.FixedIterationLoss(m=0, squared=False), config,
                         checkpoint=args.checkpoint, progress=False,
                         on_epoch=report).fit(splits.train, splits.validation)
    solver.settings["training_seconds"] = round(history.seconds, 1)
    solver.settings["best_validation_error"] = history.best_validation_loss
    solver.save(args.out)
    print(json.dumps({"saved": str(args.out), "best_epoch": history.best_epoch,
                      "best_validation_error": round(history.best_validation_loss, 5),
                      "training_s": round(history.seconds, 1)}), flush=True)


def measure(args) -> list[dict]:
    solver = ms.load(args.model)
    stored = solver.family.config()
    rows = []
    for n in args.sizes:
        fam = family(stored, n)
        batch = args.batch if n < 256 else max(1, args.batch // 2)
        params = fam.sample_parameters(batch, torch.Generator().manual_seed(args.seed))
        tasks = fam.tasks_for(params)
        exact = fam.exact_solutions(tasks.problem.matrix, tasks.problem.rhs)
        row = {"coefficient": stored["coefficient"], "modes": stored["modes"],
               "amplitude": stored["amplitude"], "n": n, "batch": batch}
        with torch.no_grad():
            guess = solver.params(tasks.features, tasks.problem)["x0"]
            error = (guess - exact).norm(dim=1) / exact.norm(dim=1)
            row["guess_relative_error"] = round(float(error.mean()), 5)
            start = (tasks.problem.residual(guess).norm(dim=1) / tasks.problem.rhs.norm(dim=1))
            row["guess_relative_residual"] = round(float(start.mean()), 3)
        for name, method, cap in (("sor_young", ms.SOR(textbook(n)), args.maxiter),
                                  ("cg", ms.ConjugateGradient(), args.maxiter)):
            learned = solver.deployed(method)
            times = {"learned": [], "classical": []}
            for _ in range(args.repeats):  # interleaved rounds
                with torch.no_grad():
                    begin = time.perf_counter()
                    features = fam.features_of(params)
                    feature_time = time.perf_counter() - begin
                    sol = learned.solve(ms.TaskBatch(tasks.problem, features), rtol=args.rtol,
                                        maxiter=cap, monitor="residual")
                    times["learned"].append(feature_time + sol.wall_time)
                    base = ms.run(method, tasks.problem, rtol=args.rtol, maxiter=cap)
                    times["classical"].append(base.wall_time)
            row[name] = {
                "learned": summary(sol), "zero_guess": summary(base),
                "saving": round(1 - float(sol.iterations.double().mean())
                                / float(base.iterations.double().mean()), 3),
                "fallback": int(sol.fallback.sum()),
                "end_to_end_s": {k: round(statistics.median(v), 3) for k, v in times.items()}}
            if name == "sor_young":
                row[name]["omega"] = round(textbook(n), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    print(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table of ``measure``'s records (docs/RESULTS.md)."""
    lines = ["| n | tasks | guess's relative error | SOR, zero guess | SOR, learned guess | "
             "saving | SOR wall-clock, learned / zero guess | CG, zero guess | "
             "CG, learned guess | saving | CG wall-clock, learned / zero guess |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [str(row["n"]), str(row["batch"]), f"{row['guess_relative_error']:.4f}"]
        for name in ("sor_young", "cg"):
            part = row[name]
            seconds = part["end_to_end_s"]
            cells += [_count(part["zero_guess"], row["batch"]),
                      _count(part["learned"], row["batch"]),
                      f"{-100 * part['saving']:+.1f}%",
                      f"{seconds['learned'] / seconds['classical']:.2f} "
                      f"({seconds['learned']:.2f} / {seconds['classical']:.2f} s)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _count(summary: dict, batch: int) -> str:
    """Mean iterations, and how many converged where not all did (their count is the cap)."""
    converged = summary["converged"]
    return f"{summary['iterations_mean']}" + (
        "" if converged == batch else f" ({converged}/{batch} converged)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("train")
    p.add_argument("--out", default="grid_guess.safetensors")
    p.add_argument("--checkpoint", default=None, help="resume file (optional)")
    p.add_argument("--coefficient", choices=("sincos", "fourier"), default="fourier")
    p.add_argument("--modes", type=int, default=3, help="modes per axis of a fourier field")
    p.add_argument("--amplitude", type=float, default=1.0)
    p.add_argument("--tasks", type=int, default=8000)
    p.add_argument("--validation", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--sine-modes", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    q = sub.add_parser("measure")
    q.add_argument("--model", default="grid_guess.safetensors")
    q.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    q.add_argument("--batch", type=int, default=8, help="tasks per size (half at n = 256)")
    q.add_argument("--rtol", type=float, default=1e-6)
    q.add_argument("--maxiter", type=int, default=5000)
    q.add_argument("--repeats", type=int, default=1)
    q.add_argument("--seed", type=int, default=7)
    q.add_argument("--json", default=None, help="write the records there")
    t = sub.add_parser("table", help="the Markdown table of records written by measure --json")
    t.add_argument("records")
    for sp in (p, q, t):
        sp.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "train":
        train(args)
    elif args.mode == "measure":
        measure(args)
    else:
        with open(args.records) as handle:
            print(table(json.load(handle)))


if __name__ == "__main__":
    main()
