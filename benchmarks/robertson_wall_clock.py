"""Wall-clock of trained Newton-SOR meta-solvers against Psi_base, in one quiet process.

`metasolve reproduce robertson-newton-sor` times each learned row inside its worker, beside
other workers' training, so its ratios carry that contention. This script reloads the trained
models that run saved and times them on the same test tasks, one after the other, with
the meta-solver's inference reported separately.

    python benchmarks/robertson_wall_clock.py metasolve-out/robertson-newton-sor/full [REPEATS]

Prints, per model: mean iterations, median wall-clock of the learned solve (inference
included), of its inference alone, and of Psi_base, and the ratio learned / base.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from _timing import median_seconds

import metasolve as ms
from metasolve.experiments import robertson_newton_sor as experiment


def main(out_dir: str, repeats: int = 5) -> None:
    torch.set_num_threads(1)
    scale = Path(out_dir).name  # `reproduce` names the run's folder after its scale
    if scale not in experiment.SCALES:
        raise SystemExit(f"{out_dir} is not a run folder of robertson-newton-sor: its name "
                         f"must be one of the scales {sorted(experiment.SCALES)}")
    settings = experiment.SCALES[scale]
    family = ms.RobertsonFamily(steps=settings.steps)
    splits = ms.make_splits(family, settings.train_sets * settings.steps,
                            settings.validation_sets * settings.steps,
                            settings.test_sets * settings.steps, seed=settings.seed)
    test = splits.test
    models = sorted(Path(out_dir, "models").glob("*.safetensors"))
    if not models:
        raise SystemExit(f"no trained models under {out_dir}/models")
    r_base = ms.load(models[0]).settings["r_base"]
    baseline = ms.NewtonSOR(relaxation=r_base)
    cap, eps = settings.test_cap, experiment.TEST_EPS
    with torch.no_grad():
        base_iters = ms.run(baseline, test.problem, rtol=eps, maxiter=cap).iterations
        base_time = median_seconds(lambda: ms.run(baseline, test.problem, rtol=eps,
                                                  maxiter=cap), repeats)
        print(f"{len(test)} test tasks, r_base = {r_base}, threads = 1, median of {repeats}")
        print(f"{'model':28s} {'mean it':>8s} {'solve s':>8s} {'infer s':>8s} {'base s':>8s} "
              f"{'ratio':>6s}")
        print(f"{'Psi_base':28s} {base_iters.double().mean():8.2f} {base_time:8.3f}")
        for path in models:
            solver = ms.load(path)
            iters = solver.solve(test, rtol=eps, maxiter=cap).iterations
            learned = median_seconds(lambda s=solver: s.solve(test, rtol=eps, maxiter=cap),
                                     repeats)
            infer = median_seconds(lambda s=solver: s.params(test.features), repeats)
            base_now = median_seconds(lambda: ms.run(baseline, test.problem, rtol=eps,
                                                     maxiter=cap), repeats)
            print(f"{path.stem:28s} {iters.double().mean():8.2f} {learned:8.3f} {infer:8.3f} "
                  f"{base_now:8.3f} {learned / base_now:6.3f}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
