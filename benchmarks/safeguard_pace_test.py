"""The pace test of the learned eigenvalue filter (``metasolve.learned.autospec_filter``) under
other settings, on the saved eigensolver of a ``metasolve reproduce autospec-eigen`` run: the
shifted set of condition numbers 2 to 10 and the model's own held-out spectra (the same tasks and
options as ``--shift ood``).

    OMP_NUM_THREADS=1 metasolve reproduce autospec-eigen --quick --shift ood --workers 1
    OMP_NUM_THREADS=1 python benchmarks/safeguard_pace_test.py metasolve-out quick  # 11 min

The shipped safeguard does not run this model's learned filter at all: on its training spectra
it ties Chebyshev's (``metasolve.learned.safeguard.PAY_MARGIN``). To measure the pace test, this
script sets that margin to minus infinity, so that the learned filter runs under the rest of the
safeguard.

Prints two tables:

* per setting (margin, slack, warm-up steps): the safeguarded mean iterations over the Chebyshev
  filter's, the instances the Chebyshev filter solves and the safeguarded solve does not, the
  instances the pace test switched (``info["rejected_steps"]``), and, run on Chebyshev's filter
  itself (an engine with zero weights, which is Chebyshev's filter), the instances where the
  test refused it;
* for the instances of the first set that the safeguarded solve loses or ends slowest: the
  Chebyshev filter's iterations in all when it takes over after ``k`` learned steps;
* for the worst of them, step by step: the monitored residual's decades below ``||A||`` under
  the safeguarded learned filter and under Chebyshev's, the sum of the Ritz values (lower is
  closer to the wanted eigenvalues) and Chebyshev's projected decades per step from each
  block, and the steps the pace test has switched so far.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import torch

import metasolve as ms
from metasolve.experiments import autospec_eigen as experiment
from metasolve.learned import autospec_filter, safeguard

SETS = ("kappa 2 to 10", "none")
#: (margin, slack, warm-up): the shipped setting first.
SETTINGS = ((0.5, 0.05, 2), (0.35, 0.05, 2), (0.25, 0.05, 2), (0.25, 0.02, 2), (0.35, 0.05, 1))
HANDOVERS = (0, 1, 2, 3, 5, 10, 16, 20, 24, 30)
#: Steps at which the third table reads the worst instance's run.
TRACE = (0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40)


def _mean(solution) -> float:
    return float(solution.iterations.double().mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of the reproduce run")
    parser.add_argument("scale", help="the scale it ran at (quick, full, ...)")
    args = parser.parse_args(argv)
    # The learned filter only ties Chebyshev's on its training spectra: run it anyway.
    safeguard.PAY_MARGIN = -math.inf
    model = ms.load(args.out / experiment.NAME / args.scale / "models" / "eigen.safetensors")
    sets = {s.shift: s for s in experiment.shifted_sets(experiment.SCALES[args.scale], model)}
    # Chebyshev's filter as a learned filter: every weight zero (the engine's zero last layer
    # gives the cut theta_p and no lower-degree terms).
    chebyshev = autospec_filter.LearnedFilterSubspaceIteration(model.method.engine.config())
    with torch.no_grad():
        for weight in chebyshev.engine.parameters():
            weight.zero_()
    shipped = (autospec_filter.PACE_MARGIN, autospec_filter.PACE_SLACK,
               autospec_filter.PACE_WARMUP)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classical = {name: model.solve_baseline(sets[name].tasks, **sets[name].options)
                     for name in SETS}
        print("| margin | slack | warm-up | set | safeguarded / Chebyshev | lost | switched | "
              "Chebyshev refused |")
        print("|---|---|---|---|---|---|---|---|")
        worst = None
        for margin, slack, warmup in SETTINGS:
            (autospec_filter.PACE_MARGIN, autospec_filter.PACE_SLACK,
             autospec_filter.PACE_WARMUP) = margin, slack, warmup
            for name in SETS:
                shifted, reference = sets[name], classical[name]
                guarded = model.solve(shifted.tasks, **shifted.options)
                itself = ms.run(chebyshev.safeguarded(), shifted.tasks.problem, params={},
                             **shifted.options)
                lost = reference.converged & ~guarded.converged
                print(f"| {margin} | {slack} | {warmup} | {name} | "
                      f"{_mean(guarded) / _mean(reference):.3f} | {int(lost.sum())} | "
                      f"{(guarded.info['rejected_steps'] > 0).double().mean():.0%} | "
                      f"{(itself.info['rejected_steps'] > 0).double().mean():.0%} |")
                if (margin, slack, warmup) == shipped and name == SETS[0]:
                    excess = guarded.iterations - reference.iterations
                    excess = torch.where(lost, excess.max() + 1, excess)
                    worst = excess.argsort(descending=True)[:4]
        (autospec_filter.PACE_MARGIN, autospec_filter.PACE_SLACK,
         autospec_filter.PACE_WARMUP) = shipped

        shifted = sets[SETS[0]]
        tasks = shifted.tasks.index(worst)
        cap = shifted.options["maxiter"]
        print()
        print("| instance | " + " | ".join(f"after {k}" for k in HANDOVERS) + " |")
        print("|---|" + "---|" * len(HANDOVERS))
        totals = []
        for k in HANDOVERS:
            start = tasks.problem.start if k == 0 else ms.run(
                model.method, tasks.problem, params={}, fixed_iterations=k,
                rtol=shifted.options["rtol"]).x
            finish = ms.run(model.classical_method, tasks.problem, params={"x0": start},
                         rtol=shifted.options["rtol"], maxiter=2 * cap)
            totals.append(torch.where(finish.converged, finish.iterations + k, -1))
        for row, index in enumerate(worst.tolist()):
            cells = [str(int(t[row])) if int(t[row]) >= 0 else "-" for t in totals]
            print(f"| {index} | " + " | ".join(cells) + " |")

        problem = tasks.index(torch.tensor([0])).problem
        guarded, classical = model.method.safeguarded(), model.classical_method
        mine, theirs = guarded.init(problem, problem.start, {}), \
            classical.init(problem, problem.start, {})
        print()
        print(f"instance {int(worst[0])}: | step | decades, learned | decades, Chebyshev | "
              "Ritz sum, learned - Chebyshev | projected pace, learned block | projected pace, "
              "Chebyshev block | switched steps |")
        print("|---|---|---|---|---|---|---|")
        for step in range(TRACE[-1] + 1):
            if step in TRACE:
                gap = float((mine["ritz"].sum(-1) - theirs["ritz"].sum(-1))[0])
                print(f"| {step} | {float(guarded._level(problem, mine)[0]):.2f} | "
                      f"{float(guarded._level(problem, theirs)[0]):.2f} | {gap:.2e} | "
                      f"{float(guarded.chebyshev_pace(problem, mine)[0]):.3f} | "
                      f"{float(guarded.chebyshev_pace(problem, theirs)[0]):.3f} | "
                      f"{int(mine['rejected_steps'][0])} |")
            mine, theirs = guarded.step(problem, mine, {}), classical.step(problem, theirs, {})


if __name__ == "__main__":
    main()
