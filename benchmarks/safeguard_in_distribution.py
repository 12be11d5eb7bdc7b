"""What the safeguard costs in distribution: the saved models of a `metasolve reproduce` run of the
GBMS experiments (poisson-jacobi, robertson-newton-sor, elasticity-iccg), solved on their own
test sets with and without the safeguard, to each experiment's test tolerance.

    metasolve reproduce poisson-jacobi --quick          # (and the other two), then
    python benchmarks/safeguard_in_distribution.py metasolve-out quick

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


def poisson_tests(settings, model):
    family = ms.Poisson1DFamily(n=16, p=model.family.p)
    splits = ms.make_splits(family, settings.n_train, settings.n_validation, settings.n_test,
                            seed=settings.seed)
    return splits.test, {"rtol": 1e-6, "maxiter": poisson_jacobi.TEST_CAP}


def robertson_tests(settings, model):
    family = ms.RobertsonFamily(steps=settings.steps)
    splits = ms.make_splits(family, settings.train_sets * settings.steps,
                            settings.validation_sets * settings.steps,
                            settings.test_sets * settings.steps, seed=settings.seed)
    return splits.test, {"rtol": robertson_newton_sor.TEST_EPS, "maxiter": settings.test_cap}


def elasticity_tests(settings, model):
    family = ms.ElasticBeamFamily(cells=settings.cells)
    splits = ms.make_splits(family, settings.n_train, settings.n_validation, settings.n_test,
                            seed=settings.seed)
    return splits.test, {"rtol": elasticity_iccg.TEST_EPS, "maxiter": family.size}


EXPERIMENTS = {"poisson-jacobi": (poisson_jacobi, poisson_tests),
               "robertson-newton-sor": (robertson_newton_sor, robertson_tests),
               "elasticity-iccg": (elasticity_iccg, elasticity_tests)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of the reproduce runs")
    parser.add_argument("scale", help="the scale they ran at (quick, full, ...)")
    parser.add_argument("--chunk", type=int, default=250, help="instances per solve")
    args = parser.parse_args(argv)
    print("| experiment | model | unguarded | safeguarded | ratio | converged, unguarded | "
          "converged, safeguarded | guesses replaced | fallback | out of distribution |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (module, tests) in EXPERIMENTS.items():
        settings = module.SCALES[args.scale]
        for path in sorted((args.out / name / args.scale / "models").glob("*.safetensors")):
            model = ms.load(path)
            test, options = tests(settings, model)
            raw, guarded, replaced, fallback, outside = [], [], [], [], []
            raw_ok, guarded_ok = [], []
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for start in range(0, len(test), args.chunk):
                    part = test.index(slice(start, start + args.chunk))
                    unguarded = model.solve(part, safeguard=False, **options)
                    raw.append(unguarded.iterations)
                    raw_ok.append(unguarded.converged)
                    solution = model.solve(part, **options)
                    guarded.append(solution.iterations)
                    guarded_ok.append(solution.converged)
                    replaced.append(solution.info["guess_rejected"])
                    fallback.append(solution.fallback)
                    outside.append(solution.out_of_distribution)
            raw_mean = float(torch.cat(raw).double().mean())
            guarded_mean = float(torch.cat(guarded).double().mean())
            print(f"| {name} | {path.stem} | {raw_mean:.2f} | {guarded_mean:.2f} | "
                  f"{guarded_mean / raw_mean:.4f} | "
                  f"{float(torch.cat(raw_ok).double().mean()):.1%} | "
                  f"{float(torch.cat(guarded_ok).double().mean()):.1%} | "
                  f"{float(torch.cat(replaced).double().mean()):.1%} | "
                  f"{float(torch.cat(fallback).double().mean()):.1%} | "
                  f"{float(torch.cat(outside).double().mean()):.1%} |", flush=True)


if __name__ == "__main__":
    main()
