"""The safeguard on the GBMS experiments: the saved models of a `metasolve reproduce` run
(poisson-jacobi, robertson-newton-sor, elasticity-iccg), with and without the safeguard, against
the classical method (``solve_baseline``), to each experiment's test tolerance, on their own test
sets and on sets outside the training distribution:

* Poisson: sources drawn from ``P1`` only (the hard modes; the ``p = 0`` models saw ``P2`` only),
  and ``P2`` sources ten times larger;
* Robertson: rate constants ten to a hundred times above their ranges, and time steps reaching
  ``t = 1e5`` instead of ``1e3``;
* beams: widths in [0.3, 1] and in [0.001, 0.003] (trained on [0.003, 0.3]).

    metasolve reproduce poisson-jacobi --quick          # (and the other two), then
    python benchmarks/safeguard_gbms.py metasolve-out quick

Per model: mean iterations unguarded and safeguarded (an unconverged instance counts the
iterations it ran), their ratio, the converged shares, and the shares of guesses replaced,
fallbacks and instances outside the training envelope.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

import metasolve as ms
from metasolve.experiments import elasticity_iccg, poisson_jacobi, robertson_newton_sor


def poisson_sets(settings, model, count):
    """``(label, tasks)``: the experiment's test set, then the shifted ones."""
    family = ms.Poisson1DFamily(n=16, p=model.family.p)
    test = ms.make_splits(family, settings.n_train, settings.n_validation, settings.n_test,
                          seed=settings.seed).test
    hard = ms.Poisson1DFamily(n=16, p=1.0).sample(count, seed=77)
    large = family.sample(count, seed=78)
    large = ms.TaskBatch(ms.LinearSystem(large.problem.matrix, 10 * large.problem.rhs,
                                         10 * large.problem.solution), 10 * large.features)
    return [("test set", test), ("P1 sources", hard), ("10x sources", large)]


def robertson_sets(settings, model, count):
    family = ms.RobertsonFamily(steps=settings.steps)
    test = ms.make_splits(family, settings.train_sets * settings.steps,
                          settings.validation_sets * settings.steps,
                          settings.test_sets * settings.steps, seed=settings.seed).test
    sets = max(1, count // settings.steps)
    generator = torch.Generator().manual_seed(79)
    fast = family.sample_rates(sets, generator) * 10.0 ** (1 + torch.rand(
        sets, 3, generator=generator, dtype=torch.float64))
    longer = ms.RobertsonFamily(steps=settings.steps, t_last=1e5).sample(
        sets * settings.steps, seed=80)
    return [("test set", test), ("rates x10-x100", family.tasks_from_rates(fast)),
            ("steps to t = 1e5", longer)]


def elasticity_sets(settings, model, count):
    family = ms.ElasticBeamFamily(cells=settings.cells)
    test = ms.make_splits(family, settings.n_train, settings.n_validation, settings.n_test,
                          seed=settings.seed).test
    wide = ms.ElasticBeamFamily(cells=settings.cells, width_range=(0.3, 1.0))
    thin = ms.ElasticBeamFamily(cells=settings.cells, width_range=(0.001, 0.003))
    return [("test set", test), ("W in [0.3, 1]", wide.sample(count, seed=81)),
            ("W in [0.001, 0.003]", thin.sample(count, seed=82))]


def options_of(name, settings, tasks):
    if name == "poisson-jacobi":
        return {"rtol": 1e-6, "maxiter": poisson_jacobi.TEST_CAP}
    if name == "robertson-newton-sor":
        return {"rtol": robertson_newton_sor.TEST_EPS, "maxiter": settings.test_cap}
    return {"rtol": elasticity_iccg.TEST_EPS, "maxiter": tasks.problem.size}


EXPERIMENTS = {"poisson-jacobi": (poisson_jacobi, poisson_sets),
               "robertson-newton-sor": (robertson_newton_sor, robertson_sets),
               "elasticity-iccg": (elasticity_iccg, elasticity_sets)}


def _measure(model, tasks, options, chunk):
    """Per-instance results of the unguarded, safeguarded and classical solves, in chunks."""
    keys = ("raw", "raw_ok", "guarded", "guarded_ok", "classical", "classical_ok",
            "fallback", "outside", "replaced")
    out = {k: [] for k in keys}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(tasks), chunk):
            part = tasks.index(slice(start, start + chunk))
            raw = model.solve(part, safeguard=False, **options)
            guarded = model.solve(part, **options)
            classical = model.solve_baseline(part, **options)
            for key, value in (("raw", raw.iterations), ("raw_ok", raw.converged),
                               ("guarded", guarded.iterations),
                               ("guarded_ok", guarded.converged),
                               ("classical", classical.iterations),
                               ("classical_ok", classical.converged),
                               ("fallback", guarded.fallback),
                               ("outside", guarded.out_of_distribution),
                               ("replaced", guarded.info["guess_rejected"])):
                out[key].append(value)
    return {k: torch.cat(v).double() for k, v in out.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of the reproduce runs")
    parser.add_argument("scale", help="the scale they ran at (quick, full, ...)")
    parser.add_argument("--count", type=int, default=200, help="tasks per shifted set")
    parser.add_argument("--chunk", type=int, default=250, help="instances per solve")
    args = parser.parse_args(argv)
    print("| experiment | model | set | unguarded | safeguarded | classical | safeguarded / "
          "classical | converged: unguarded, safeguarded, classical | fallback | guesses "
          "replaced | out of distribution |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (module, sets_of) in EXPERIMENTS.items():
        settings = module.SCALES[args.scale]
        for path in sorted((args.out / name / args.scale / "models").glob("*.safetensors")):
            model = ms.load(path)
            for label, tasks in sets_of(settings, model, args.count):
                r = _measure(model, tasks, options_of(name, settings, tasks), args.chunk)
                mean = {k: float(r[k].mean()) for k in r}
                print(f"| {name} | {path.stem} | {label} | {mean['raw']:.2f} | "
                      f"{mean['guarded']:.2f} | {mean['classical']:.2f} | "
                      f"{mean['guarded'] / mean['classical']:.3f} | {mean['raw_ok']:.1%}, "
                      f"{mean['guarded_ok']:.1%}, {mean['classical_ok']:.1%} | "
                      f"{mean['fallback']:.1%} | {mean['replaced']:.1%} | "
                      f"{mean['outside']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
