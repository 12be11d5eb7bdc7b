"""Memory and time of a saved learned solver on a million instances: the safeguarded solve in
one call, in chunks, and in chunks without the residual history.

    metasolve reproduce poisson-jacobi --quick          # the model (also made by `metasolve demo`)
    python benchmarks/million_instances.py \\
        metasolve-out/poisson-jacobi/quick/models/p0-L_eps-1e-06.safetensors --count 1000000

Each configuration runs in a fresh process, one torch thread, with glibc returning freed large
blocks at once (so that the resident size follows the live tensors): it samples ``--count``
tasks of the model's family (seeded; 1D Poisson with 16 unknowns for the poisson-jacobi
models), then solves them with ``LearnedSolver.solve`` (features, inference, safeguard) to
``--rtol``, and reports the tasks' own tensors, the peak resident memory over the solve above
the resident memory before it (the solve's working memory: its iterates, residual history and
results), the process's peak, the wall time, and the mean iterations (equal in every
configuration: chunks do not change the iteration).

Configurations: ``one call`` (``solve(tasks)``), ``chunks`` (``chunk_size=--chunk``) and
``chunks, no history`` (``chunk_size=--chunk, history=False``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings

import torch
from _memory import lean_allocator, reset_peak, resident_mib, settle

import metasolve as ms

CONFIGURATIONS = {"one call": {}, "chunks": {"chunk": True},
                  "chunks, no history": {"chunk": True, "history": False}}


def _tensor_mib(tasks) -> float:
    """MiB held by the tensors of ``tasks`` (problem fields and features)."""
    problem = tasks.problem
    tensors = [value for value in vars(problem).values() if isinstance(value, torch.Tensor)]
    tensors.append(tasks.features)
    seen, total = set(), 0
    for tensor in tensors:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total / 2 ** 20


def measure_one(args) -> dict:
    lean_allocator()
    torch.set_num_threads(1)
    model = ms.load(args.model)
    tasks = model.family.sample(args.count, seed=args.seed)
    config = CONFIGURATIONS[args.configuration]
    options = {"rtol": args.rtol, "maxiter": args.maxiter}
    if config.get("chunk"):
        options["chunk_size"] = args.chunk
    if "history" in config:
        options["history"] = config["history"]
    settle()
    before, _ = resident_mib()
    reset_peak()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = model.solve(tasks, **options)
    seconds = time.perf_counter() - start
    _, peak = resident_mib()
    return {"configuration": args.configuration, "count": args.count,
            "tasks_mib": round(_tensor_mib(tasks), 1),
            "resident_before_mib": round(before, 1), "working_peak_mib": round(peak - before, 1),
            "peak_mib": round(peak, 1), "seconds": round(seconds, 1),
            "mean_iterations": round(float(solution.iterations.double().mean()), 3),
            "converged": round(float(solution.converged.double().mean()), 4),
            "history_rows": int(solution.residual_history.shape[0])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved learned solver (.safetensors)")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--maxiter", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--configuration", choices=list(CONFIGURATIONS),
                        help="measure this one configuration in this process")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGURATIONS),
                        default=list(CONFIGURATIONS), help="the configurations to run")
    args = parser.parse_args(argv)
    if args.configuration is not None:
        print(json.dumps(measure_one(args)), flush=True)
        return
    rows = []
    for name in args.only:
        command = [sys.executable, __file__, args.model, "--count", str(args.count),
                   "--chunk", str(args.chunk), "--rtol", str(args.rtol), "--maxiter",
                   str(args.maxiter), "--seed", str(args.seed), "--configuration", name]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| configuration | instances | tasks' tensors, MiB | solve's working peak, MiB | "
          "process peak, MiB | seconds | mean iterations |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['configuration']} | {row['count']:,} | {row['tasks_mib']} | "
              f"{row['working_peak_mib']} | {row['peak_mib']} | {row['seconds']} | "
              f"{row['mean_iterations']} |")


if __name__ == "__main__":
    main()
