"""Learned iterates as warm starts of the real ``scs`` package (neural SCS paper, sec. 6):
the deployment protocol, with the references a practitioner would use instead (a cold start,
scs's own Anderson acceleration, as many plain SCS iterations in PyTorch, the previous
instance's solution). Iteration counts and wall-clock are per instance; a start computed in
PyTorch carries its share of one batched call. The learned starts are the models' unguarded
iterates (``safeguard=False``), as the paper deploys them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ..baselines import solve_with_scs
from ..learned import LearnedSolver
from ..solvers import run
from ..solvers.scs import SCS, primal_dual
from .records import record


def iterate_start(solve, program) -> tuple[dict, float]:
    """``(x, y, s)`` of the iterate ``solve()`` returns, as numpy arrays per instance, and the
    seconds it took (one batched call, amortised over the batch by the caller)."""
    start = time.perf_counter()
    with torch.no_grad():
        res = primal_dual(program, solve().x)
    seconds = time.perf_counter() - start
    return {key: res[key].numpy() for key in ("x", "y", "s")}, seconds


#: scs's own Anderson acceleration for the second SCS+AA reference (scs's default lookback).
SCS_LOOKBACK = 10


def warm_start_records(experiment: str, solvers: dict[str, LearnedSolver], tasks, count: int,
                       deploy_iterations: Sequence[int], **setting) -> tuple[list[dict], dict]:
    """Real scs (eps 1e-4, its Anderson acceleration off unless stated) on the first ``count``
    of ``tasks`` from a cold start, warm-started by each learned model after each of
    ``deploy_iterations`` of its own
    iterations, warm-started by as many plain PyTorch SCS iterations (what the model's
    iterations alone would give), and warm-started from the previous test instance's solution;
    plus cold starts with scs's own Anderson acceleration (lookback 10), the second SCS+AA
    reference. A PyTorch start's time is one batched call divided by the instances, and its
    records carry ``deploy_iterations``; ``scs_total_iterations`` adds those iterations to
    scs's."""
    count = min(count, len(tasks))
    tasks = tasks.index(torch.arange(count))
    program = tasks.problem
    starts: dict[tuple[str, int], dict | None] = {("cold", 0): None, ("cold_scs_aa", 0): None}
    overhead: dict[tuple[str, int], float] = {}
    for k in deploy_iterations:
        for kind, solver in solvers.items():
            starts[(kind, k)], seconds = iterate_start(
                lambda solver=solver, k=k: solver.solve(tasks, fixed_iterations=k, rtol=0.0,
                                                        safeguard=False),
                program)
            overhead[(kind, k)] = seconds / count
        starts[("torch_scs", k)], seconds = iterate_start(
            lambda k=k: run(SCS(), program, fixed_iterations=k, rtol=0.0), program)
        overhead[("torch_scs", k)] = seconds / count
    starts[("previous", 0)] = None
    iterations = {key: [] for key in starts}
    seconds = {key: [] for key in starts}
    previous = None
    for i in range(count):
        for key, start in starts.items():
            if key[0] == "previous":
                if previous is None:
                    continue
                warm = previous
            else:
                warm = None if start is None else {name: v[i] for name, v in start.items()}
            lookback = SCS_LOOKBACK if key[0] == "cold_scs_aa" else 0
            out = solve_with_scs(program, i, warm_start=warm, acceleration_lookback=lookback)
            iterations[key].append(out["iterations"])
            seconds[key].append(out["wall_time"] + overhead.get(key, 0.0))
            if key[0] == "cold":
                solved = {name: out[name] for name in ("x", "y", "s")}
        previous = solved  # the next instance starts from this one's solution
    records = []
    cold_its, cold_secs = np.mean(iterations[("cold", 0)]), np.sum(seconds[("cold", 0)])
    for (name, k), its in iterations.items():
        its, secs = np.array(its, float), np.array(seconds[(name, k)], float)
        used = {"instances": int(its.size), **setting}
        if k:
            used["deploy_iterations"] = k
        method = f"scs_{name}"
        records += [record(experiment, method, "scs_mean_iterations", its.mean(), **used),
                    record(experiment, method, "scs_median_seconds", np.median(secs), **used),
                    record(experiment, method, "iteration_ratio_to_cold", its.mean() / cold_its,
                           **used)]
        if k:
            records += [record(experiment, method, "scs_total_iterations", its.mean() + k,
                               **used),
                        record(experiment, method, "pytorch_seconds_per_instance",
                               overhead[(name, k)], **used)]
        if name != "previous":
            records.append(record(experiment, method, "wall_time_ratio_to_cold",
                                  secs.sum() / cold_secs, **used))
    return records, {f"{name}/{k}" if k else name: list(map(int, v))
                     for (name, k), v in iterations.items()}
