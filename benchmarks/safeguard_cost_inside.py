"""What the safeguard costs in distribution, told apart: on a saved model's own test set (the
first set of ``metasolve reproduce NAME --shift ood``), the mean iterations unguarded and
safeguarded over all instances, and over the instances the unguarded learned solve converges on
(where a difference is the safeguard's cost, not an instance it rescued).

    metasolve reproduce elasticity-iccg --quick
    python benchmarks/safeguard_cost_inside.py \\
        metasolve-out/elasticity-iccg/quick/models/L_eps-1e-06.safetensors elasticity-iccg quick
"""

from __future__ import annotations

import argparse
import warnings

import torch

import metasolve as ms
from metasolve.experiments import get


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model file the reproduce run saved")
    parser.add_argument("name", help="its experiment (one with shifted sets)")
    parser.add_argument("scale", help="the scale it ran at (quick, full, ...)")
    args = parser.parse_args(argv)
    module = get(args.name)
    model = ms.load(args.model)
    own = module.shifted_sets(module.SCALES[args.scale], model)[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unguarded = model.solve(own.tasks, safeguard=False, **own.options)
        guarded = model.solve(own.tasks, **own.options)
    solved = unguarded.converged
    failed = (~solved).nonzero().flatten().tolist()
    print(f"{len(own.tasks)} instances of the set {own.shift!r}")
    print(f"all: unguarded {unguarded.iterations.double().mean():.2f}, safeguarded "
          f"{guarded.iterations.double().mean():.2f}")
    print(f"the {int(solved.sum())} the unguarded solve converges on: unguarded "
          f"{unguarded.iterations[solved].double().mean():.2f}, safeguarded "
          f"{guarded.iterations[solved].double().mean():.2f}")
    for i in failed:
        print(f"instance {i}: unguarded {unguarded.status_names()[i]} after "
              f"{int(unguarded.iterations[i])} iterations; safeguarded "
              f"{guarded.status_names()[i]} after {int(guarded.iterations[i])}")


if __name__ == "__main__":
    main()
