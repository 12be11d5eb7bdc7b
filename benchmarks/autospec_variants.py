"""Side runs on the AutoSpec linear-solve engine's transfer gap (docs/RESULTS.md, autospec-linear).

Train a variant and compare it with the baselines on the held-out synthetic spectra and the
transfer matrices (K = 150 products after a 10-step probe):

    python benchmarks/autospec_variants.py train --modes 0 --n-train 4096 --epochs 20
    python benchmarks/autospec_variants.py train --size 2048 --n-train 1024 --epochs 10
    python benchmarks/autospec_variants.py train --correction 0.1 --n-train 2048 --epochs 15

(those three, with the defaults ``--size 256 --batch-size 128``, trained the engine of an
earlier full run: 256 eigenvalues, the plain log residual). Each of the current engine's two
choices alone, with its training budget (``--sharpness 0``: the plain log residual):

    python benchmarks/autospec_variants.py train --size 4096 --sharpness 0 \
        --n-train 1024 --epochs 12 --batch-size 64
    python benchmarks/autospec_variants.py train --size 256 --sharpness 4 \
        --n-train 1024 --epochs 12 --batch-size 64

Switch parts of a trained recurrence engine off (the learned interval alone, plus the learned
initial coefficient, plus the correction profiles = the engine as trained) on the held-out
synthetic spectra and on 2D and 3D Poisson:

    python benchmarks/autospec_variants.py ablate \
        metasolve-out/autospec-linear/full/models/recurrence.safetensors

Each prints median ratios of the learned relative residual to the baselines'.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

import metasolve as ms
from metasolve.evaluation.metrics import compare_instances
from metasolve.evaluation.spectral import (
    TRANSFER,
    evaluation_sets,
    linear_baselines,
    relative_residual,
)
from metasolve.experiments import autospec_linear
from metasolve.experiments.autospec_common import train_engine
from metasolve.polynomials import chebyshev_recurrence_coefficients


def _report(name, learned, base):
    cheb = base["chebyshev-estimated"]
    richardson = float(learned.median() / base["richardson"].median())
    print(f"{name[:44]:44s} / Richardson {richardson:.3f}"
          f"  / Chebyshev (probe) {float(learned.median() / cheb.median()):.3f}"
          f"  / Chebyshev (exact, K) "
          f"{float(learned.median() / base['chebyshev-exact-K'].median()):.3f}"
          f"  better / tied / worse than Chebyshev (probe): {compare_instances(learned, cheb)}")


def train(args) -> None:
    settings = replace(autospec_linear.FULL, size=args.size, n_test=256)
    family = ms.SpectrumFamily(size=settings.size, probe_steps=settings.probe_steps)
    config = replace(settings.training, epochs=args.epochs, batch_size=args.batch_size)
    solver, info = train_engine(family, settings.degree, args.paradigm, settings.hidden,
                                args.n_train, 512, config, 0, None, False,
                                sharpness=args.sharpness or None, modes=args.modes,
                                correction=args.correction)
    print(vars(args), info)
    with torch.no_grad():
        for name, tasks, extremes in evaluation_sets(family, TRANSFER, 256, 8, 0):
            x = solver.solve(tasks, fixed_iterations=settings.degree, rtol=0.0,
                             divergence_factor=1e300, safeguard=False).x
            _report(name, relative_residual(tasks.problem, x),
                    linear_baselines(tasks, extremes, settings.degree, settings.probe_steps))


def ablate(args) -> None:
    solver = ms.load(args.model)
    engine = solver.metasolver
    settings = replace(autospec_linear.FULL, n_test=256)
    k = engine.degree
    family = ms.SpectrumFamily(size=settings.size, probe_steps=settings.probe_steps)
    sets = evaluation_sets(family, TRANSFER[:2], 256, 8, 0)
    with torch.no_grad():
        for name, tasks, extremes in sets:
            lower, upper, parts = engine.interval(tasks.features)
            base = chebyshev_recurrence_coefficients(lower, upper, k)
            initial = torch.exp(engine.correction * torch.tanh(parts["interval"][:, 1]))
            variants = {"learned interval only": base,
                        "+ learned initial": {**base, "initial": base["initial"] * initial},
                        "+ profiles (as trained)": solver.params(tasks.features)}
            baselines = linear_baselines(tasks, extremes, settings.degree, settings.probe_steps)
            for variant, theta in variants.items():
                x = ms.run(ms.PolynomialRecurrence(), tasks.problem, params=theta,
                           fixed_iterations=k, rtol=0.0, divergence_factor=1e300).x
                _report(f"{name}: {variant}",
                        relative_residual(tasks.problem, x), baselines)


def main() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("train")
    one.add_argument("--paradigm", default="recurrence", choices=("recurrence", "basis"))
    one.add_argument("--modes", type=int, default=8)
    one.add_argument("--correction", type=float, default=0.5)
    one.add_argument("--size", type=int, default=256)
    one.add_argument("--sharpness", type=float, default=0.0,
                     help="beta of the loss relative to Chebyshev; 0: the plain log residual")
    one.add_argument("--n-train", type=int, default=4096)
    one.add_argument("--batch-size", type=int, default=128)
    one.add_argument("--epochs", type=int, default=20)
    one.set_defaults(run=train)
    two = commands.add_parser("ablate")
    two.add_argument("model")
    two.set_defaults(run=ablate)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
