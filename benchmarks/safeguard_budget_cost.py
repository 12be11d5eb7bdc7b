"""Wall-clock of a safeguarded fixed-budget solve against the unguarded one on a saved model's own
test set, medians of 7 interleaved repeats, one thread. At a fixed budget the safeguard runs the
classical method on the same budget too and keeps the better result per instance
(``check_budget="always"``); ``check_budget="never"`` keeps only the safeguard's other tests
(neural SCS's step test, the non-finite fallback).

    metasolve reproduce neural-scs-kalman --quick --out OUT
    python benchmarks/safeguard_budget_cost.py neural-scs-kalman quick \\
        "OUT/neural-scs-kalman/quick/models/Kalman,_12_steps-neural_recurrent.safetensors"
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
import warnings

import torch

from metasolve.api import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="an experiment with shifted sets, e.g. neural-scs-lasso")
    parser.add_argument("scale", help="the scale the model was trained at, e.g. quick")
    parser.add_argument("model", help="a model file the run saved")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    module = importlib.import_module(
        f"metasolve.experiments.{args.experiment.replace('-', '_')}")
    model = load(args.model)
    test = module.shifted_sets(module.SCALES[args.scale], model)[0]  # the model's own test set
    if test.options.get("fixed_iterations") is None:
        raise SystemExit(f"{args.experiment} solves to a tolerance, not at a fixed budget")
    runs = {"unguarded": {"safeguard": False}, "safeguarded": {},
            "check_budget=never": {"check_budget": "never"}, "classical": None}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.repeats):
            for name, options in runs.items():
                start = time.perf_counter()
                if options is None:
                    model.solve_baseline(test.tasks, **test.options)
                else:
                    model.solve(test.tasks, **options, **test.options)
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.experiment}, {len(test.tasks)} test instances, "
          f"{test.options['fixed_iterations']} iterations (median of {args.repeats}):")
    for name, seconds in median.items():
        print(f"  {name:20s} {seconds * 1e3:9.1f} ms  "
              f"{seconds / median['unguarded']:5.2f} x unguarded")


if __name__ == "__main__":
    main()
