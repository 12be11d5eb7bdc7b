"""A trained AutoSpec linear-solve engine against Chebyshev on the probe's interval, per
synthetic spectrum shape (the training distribution's five kinds, held-out draws).

    python benchmarks/autospec_per_kind.py [MODEL] [count]

MODEL defaults to the full run's recurrence engine,
``metasolve-out/autospec-linear/full/models/recurrence.safetensors`` (written by
``metasolve reproduce autospec-linear``). Prints, per kind, the median and the geometric mean of
the per-instance ratio learned / Chebyshev (relative residuals after ``K`` products), the
fractions of instances where the learned method is better than, tied with (within 1%) and worse
than Chebyshev, and the median ratio to Richardson.
"""

from __future__ import annotations

import sys

import torch

import metasolve as ms
from metasolve.evaluation.metrics import compare_instances
from metasolve.evaluation.spectral import linear_baselines, relative_residual
from metasolve.experiments import autospec_linear
from metasolve.tasks import SPECTRUM_KINDS


def main(model: str = "metasolve-out/autospec-linear/full/models/recurrence.safetensors",
         count: int = 256) -> None:
    torch.set_num_threads(1)
    solver = ms.load(model)
    settings = autospec_linear.FULL
    degree = solver.metasolver.degree
    print(f"{model}: degree {degree}, {count} held-out spectra per kind")
    for kind in SPECTRUM_KINDS:
        family = ms.SpectrumFamily(size=settings.size, probe_steps=settings.probe_steps,
                                   kinds=(kind,))
        tasks = family.sample(count, seed=99)
        eig = tasks.problem.eigenvalues
        extremes = torch.stack([eig.min(1).values, eig.max(1).values], dim=1)
        with torch.no_grad():
            x = solver.solve(tasks, fixed_iterations=degree, rtol=0.0,
                             divergence_factor=1e300, safeguard=False).x
            learned = relative_residual(tasks.problem, x)
            base = linear_baselines(tasks, extremes, settings.degree, settings.probe_steps)
        ratio = learned / base["chebyshev-estimated"]
        print(f"{kind:10s} learned / Chebyshev: median {float(ratio.median()):.3f}, geometric "
              f"mean {float(ratio.log().mean().exp()):.3f}, better / tied / worse "
              f"{compare_instances(learned, base['chebyshev-estimated'])}; "
              f"learned / Richardson median "
              f"{float((learned / base['richardson']).median()):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:2], *(int(v) for v in sys.argv[2:3]))
