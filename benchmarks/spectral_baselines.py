"""Fixed-polynomial baselines at equal matrix-vector products on 2D Poisson, at a budget of your
choice (the learned polynomials are compared with the same baselines in
``metasolve reproduce autospec-linear``).

For the 5-point Laplacian on an m x m grid (N = m^2 unknowns) and a batch of random right-hand
sides, every method gets the same budget of products with A, the Lanczos probe's included:

* Richardson with the probe's optimal step ``2 / (lower + upper)`` on the probe's interval;
* Chebyshev iteration on the probe's interval (:meth:`metasolve.probes.Probe.interval`);
* Chebyshev iteration on the exact extreme eigenvalues (known in closed form here): the minimax
  optimum on the interval, the limit of any fixed polynomial that sees only the interval;
* conjugate gradients (SciPy's ``cg``), adaptive, for reference.

    python benchmarks/spectral_baselines.py [m] [budget] [probe_steps]

Prints the median relative residual ``||b - A x|| / ||b||`` over the batch for each method.
"""

from __future__ import annotations

import math
import sys

import scipy.sparse.linalg as spla
import torch

import metasolve as ms
from metasolve.probes import lanczos_probe
from metasolve.tasks.operators import poisson2d, to_torch_csr


def main(m: int = 100, budget: int = 200, probe_steps: int = 20, batch: int = 8) -> None:
    torch.set_num_threads(1)
    a = poisson2d(m)
    n = a.shape[0]
    matrix = to_torch_csr(a)
    rhs = torch.randn(batch, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    system = ms.LinearSystem(matrix, rhs)
    probe = lanczos_probe(system.matvec, size=n, steps=probe_steps, batch=batch, seed=1)
    lower, upper = probe.interval()
    steps = budget - probe.matvecs
    exact_low = 8 * math.sin(math.pi / (2 * (m + 1))) ** 2
    exact_high = 8 * math.cos(math.pi / (2 * (m + 1))) ** 2

    def relative(x):
        return (torch.linalg.vector_norm(system.residual(x), dim=1)
                / torch.linalg.vector_norm(rhs, dim=1))

    step = 2 / (lower + upper)
    richardson = {"initial": step, "momentum": torch.zeros(batch, steps, dtype=torch.float64),
                  "step": step.unsqueeze(1).expand(batch, steps).contiguous()}
    results = {
        "Richardson, probe step": ms.run(ms.PolynomialRecurrence(), system, params=richardson,
                                         fixed_iterations=steps, rtol=0.0).x,
        "Chebyshev, probe interval": ms.run(ms.Chebyshev(), system,
                                            params={"lower": lower, "upper": upper},
                                            fixed_iterations=steps, rtol=0.0).x,
        "Chebyshev, exact interval": ms.run(ms.Chebyshev(exact_low, exact_high), system,
                                            fixed_iterations=budget, rtol=0.0).x,
    }
    cg = []
    for b in range(batch):
        x, _ = spla.cg(a, rhs[b].numpy(), rtol=1e-300, atol=0.0, maxiter=budget)
        cg.append(torch.tensor(x))
    results["CG (SciPy), adaptive"] = torch.stack(cg)
    print(f"2D Poisson, N = {n}, {batch} right-hand sides, {budget} matvecs each "
          f"(probe: {probe.matvecs}; exact-interval Chebyshev and CG need no probe)")
    print(f"probe interval median [{float(lower.median()):.3e}, {float(upper.median()):.4f}], "
          f"exact [{exact_low:.3e}, {exact_high:.4f}]")
    for name, x in results.items():
        print(f"{name:28s} median relative residual {float(relative(x).median()):.3e}")


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:4]))
