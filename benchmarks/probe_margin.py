"""How often the Lanczos probe's upper end lies below ``lambda_max``, and what margin fixes it.

:meth:`metasolve.probes.Probe.interval` returns ``theta_s + rho_s`` (the top Ritz value widened by
its residual norm) as the upper end. That is an estimate: the residual bound only says that *some*
eigenvalue lies within ``rho_s`` of ``theta_s``. This script measures, on SPD matrices inside and
outside the AutoSpec transfer set, how often the upper end falls below the exact ``lambda_max``
for ``upper_margin`` in ``--margins`` (the upper end times ``1 + margin``), and how often the
Zhou-Li estimate ``theta_s + beta_s`` (``beta_s = ||f_s||``, the norm of the Lanczos residual
vector, which the probe's residual norms determine) does.

A "failure" is ``lambda_max > upper (1 + tolerance)``: an upper end below ``lambda_max`` by less
than ``--tolerance`` (1e-10, relative) is round-off of a probe that has converged to the top
eigenvalue, and below the accuracy of the reference ``lambda_max``; the per-matrix table also
counts those.

Matrices:

* the transfer set (:data:`metasolve.evaluation.spectral.TRANSFER`, at its own sizes;
  ``--small`` uses :data:`TRANSFER_SMOKE` instead);
* outside it: scikit-fem P1/Q1 Laplacians (Dirichlet-condensed, or Neumann plus a small mass
  term) on uniform, graded, perturbed and curved meshes in 2D and 3D; graph Laplacians
  ``L + delta I`` of random geometric, grid, Erdos-Renyi and hub graphs; random sparse SPD.

For each matrix, each probe length in ``--steps`` (10: autospec-linear's probe; 20:
autospec-eigen's; 32: the Lanczos baseline of autospec-invsqrt) and ``--starts`` random start
vectors, the upper end is compared with ``lambda_max`` (``numpy.linalg.eigvalsh`` up to 1500
unknowns or on a grid Laplacian its closed form, else ``scipy.sparse.linalg.eigsh``,
``which="LA"``). Then Chebyshev iteration (``--chebyshev-steps`` steps, two Gaussian right-hand
sides) on the probe's interval, with margin 0 and with ``--recommend``, on every matrix that
failed at the AutoSpec probe length (the first of ``--steps``).

    python benchmarks/probe_margin.py                 # about 2 CPU-minutes
    python benchmarks/probe_margin.py --small         # the transfer set at smoke sizes
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy.spatial import cKDTree

import metasolve as ms
from metasolve.evaluation.spectral import TRANSFER, TRANSFER_SMOKE, exact_extremes
from metasolve.probes import lanczos_probe
from metasolve.tasks.operators import random_spd, to_torch_csr

MARGINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)


# --- matrices outside the transfer set ------------------------------------------------------

def _fem(mesh, element, dirichlet: bool, mass_shift: float = 1e-2) -> sp.csr_matrix:
    """The stiffness matrix of ``element`` on ``mesh``: boundary unknowns removed, or (Neumann,
    singular) plus ``mass_shift`` times the mass matrix, so that it is SPD either way."""
    from skfem import Basis, asm
    from skfem.models.poisson import laplace, mass

    basis = Basis(mesh, element)
    stiffness = asm(laplace, basis)
    stiffness = (stiffness + stiffness.T) / 2  # quadrature leaves round-off asymmetry in 3D
    if dirichlet:
        interior = basis.complement_dofs(basis.get_dofs())
        return stiffness[interior][:, interior].tocsr()
    weights = asm(mass, basis)
    return (stiffness + mass_shift * (weights + weights.T) / 2).tocsr()


def _perturbed(mesh, amount: float, seed: int):
    """``mesh`` with interior nodes moved randomly by ``amount`` times the local edge length
    (an unstructured-looking mesh whose small elements give an uneven top of the spectrum)."""
    rng = np.random.default_rng(seed)
    p = mesh.p.copy()
    boundary = np.zeros(p.shape[1], dtype=bool)
    boundary[mesh.boundary_nodes()] = True
    h = np.min(np.linalg.norm(p[:, mesh.facets[0]] - p[:, mesh.facets[1]], axis=0))
    p[:, ~boundary] += amount * h * rng.uniform(-1, 1, size=(p.shape[0], int((~boundary).sum())))
    return type(mesh)(p, mesh.t)


def fem_matrices() -> list[tuple[str, sp.csr_matrix]]:
    from skfem import (
        ElementHex1,
        ElementQuad1,
        ElementTetP1,
        ElementTriP1,
        ElementTriP2,
        MeshHex,
        MeshQuad,
        MeshTet,
        MeshTri,
    )

    graded = np.geomspace(1e-3, 1.0, 30)
    graded = np.concatenate([[0.0], graded])
    out = []
    for k in (3, 4, 5):
        out.append((f"fem-tri-square-r{k}-dir", _fem(MeshTri().refined(k), ElementTriP1(), True)))
    out.append(("fem-tri-square-r4-neu", _fem(MeshTri().refined(4), ElementTriP1(), False)))
    for k in (3, 4):
        out.append((f"fem-tri-circle-r{k}-dir", _fem(MeshTri.init_circle(k), ElementTriP1(),
                                                     True)))
    out.append(("fem-tri-circle-r4-neu", _fem(MeshTri.init_circle(4), ElementTriP1(), False)))
    out.append(("fem-tri-lshape-r4-dir", _fem(MeshTri.init_lshaped().refined(4), ElementTriP1(),
                                              True)))
    out.append(("fem-tri-sym-r4-dir", _fem(MeshTri.init_symmetric().refined(4), ElementTriP1(),
                                           True)))
    for seed in (0, 1):
        out.append((f"fem-tri-perturbed{seed}-dir",
                    _fem(_perturbed(MeshTri().refined(5), 0.3, seed), ElementTriP1(), True)))
    out.append(("fem-tri-graded-dir", _fem(MeshTri.init_tensor(graded, graded), ElementTriP1(),
                                           True)))
    out.append(("fem-tri-graded-neu", _fem(MeshTri.init_tensor(graded, graded), ElementTriP1(),
                                           False)))
    out.append(("fem-tri-p2-r3-dir", _fem(MeshTri().refined(3), ElementTriP2(), True)))
    out.append(("fem-quad-r4-dir", _fem(MeshQuad().refined(4), ElementQuad1(), True)))
    out.append(("fem-quad-graded-dir", _fem(MeshQuad.init_tensor(graded, graded), ElementQuad1(),
                                            True)))
    for k in (3, 4):
        out.append((f"fem-tet-cube-r{k}-dir", _fem(MeshTet().refined(k), ElementTetP1(), True)))
    out.append(("fem-tet-cube-r3-neu", _fem(MeshTet().refined(3), ElementTetP1(), False)))
    out.append(("fem-tet-ball-r2-dir", _fem(MeshTet.init_ball(2), ElementTetP1(), True)))
    out.append(("fem-hex-r3-dir", _fem(MeshHex().refined(3), ElementHex1(), True)))
    return out


def _laplacian(n: int, rows, cols, shift: float) -> sp.csr_matrix:
    """``L + shift I`` of the undirected graph with edges ``(rows, cols)`` (unit weights)."""
    adjacency = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    adjacency.setdiag(0.0)
    adjacency.eliminate_zeros()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return (sp.diags(degree + shift) - adjacency).tocsr()


def graph_matrices() -> list[tuple[str, sp.csr_matrix]]:
    out = []
    for dim, n, radius, seed in ((2, 1500, 0.05, 0), (2, 3000, 0.035, 1), (3, 2000, 0.12, 2),
                                 (2, 2000, 0.08, 3)):
        points = np.random.default_rng(seed).uniform(size=(n, dim))
        pairs = np.array(sorted(cKDTree(points).query_pairs(radius)))
        out.append((f"graph-geometric{dim}d-{n}", _laplacian(n, pairs[:, 0], pairs[:, 1], 1e-2)))
    for m in (30, 60):
        idx = np.arange(m * m).reshape(m, m)
        rows = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
        cols = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
        out.append((f"graph-grid-{m}x{m}", _laplacian(m * m, rows, cols, 1e-2)))
    for n, p, seed in ((2000, 4e-3, 4), (3000, 2e-3, 5)):
        rng = np.random.default_rng(seed)
        count = rng.binomial(n * (n - 1) // 2, p)
        rows, cols = rng.integers(0, n, count), rng.integers(0, n, count)
        out.append((f"graph-erdos-renyi-{n}", _laplacian(n, rows, cols, 1e-1)))
    for n, hubs, seed in ((2000, 3, 6), (3000, 1, 7)):
        # A sparse random graph plus a few hub vertices joined to a random fifth of the rest:
        # each hub adds an eigenvalue near its degree, far above the bulk.
        rng = np.random.default_rng(seed)
        rows, cols = list(rng.integers(0, n, 3 * n)), list(rng.integers(0, n, 3 * n))
        for h in range(hubs):
            linked = rng.choice(n, n // 5, replace=False)
            rows += [h] * len(linked)
            cols += list(linked)
        out.append((f"graph-hubs{hubs}-{n}", _laplacian(n, np.array(rows), np.array(cols), 1e-2)))
    # A preferential-attachment tree (few high-degree vertices, heavy-tailed degrees).
    rng = np.random.default_rng(8)
    parents = [0]
    targets = [0]
    for v in range(1, 3000):
        parent = targets[rng.integers(len(targets))]
        parents.append(parent)
        targets += [v, parent]
    out.append(("graph-pref-attachment-3000",
                _laplacian(3000, np.arange(1, 3000), np.array(parents[1:]), 1e-2)))
    return out


def random_matrices() -> list[tuple[str, sp.csr_matrix]]:
    out = [(f"random-spd-{n}-s{seed}", random_spd(n, per_row=per_row, seed=seed))
           for n, per_row, seed in ((1500, 3, 11), (2500, 6, 12), (1000, 2, 13))]
    rng = np.random.default_rng(14)
    n = 2000
    # Diagonally dominant with log-uniform diagonal over four decades.
    off = sp.random(n, n, density=2e-3, random_state=15)
    off = off + off.T
    diagonal = 10 ** rng.uniform(0, 4, n) + np.asarray(abs(off).sum(axis=1)).ravel()
    out.append(("random-diag-dominant-2000", (sp.diags(diagonal) - off).tocsr()))
    return out


# --- the measurement ------------------------------------------------------------------------

def lambda_max(matrix: sp.csr_matrix) -> float:
    if matrix.shape[0] <= 1500:
        return float(np.linalg.eigvalsh(matrix.toarray())[-1])
    return float(spla.eigsh(matrix, k=1, which="LA", tol=1e-12,
                            return_eigenvectors=False)[0])


def probe_of(matrix: torch.Tensor, size: int, steps: int, starts: int, seed: int):
    return lanczos_probe(lambda v: (matrix @ v.T).T, size=size, steps=steps, batch=starts,
                         seed=seed)


def measure(name: str, group: str, csr: sp.csr_matrix, top: float, args) -> list[dict]:
    matrix = to_torch_csr(csr)
    rows = []
    for steps in args.steps:
        probe = probe_of(matrix, csr.shape[0], steps, args.starts, args.seed)
        _, upper = probe.interval()
        beta = torch.linalg.vector_norm(probe.residual_norms, dim=1)  # ||f_s||
        for start in range(args.starts):
            rows.append({"name": name, "group": group, "steps": steps, "start": start,
                         "top": top, "upper": float(upper[start]),
                         "zhou_li": float(probe.ritz_values[start, -1] + beta[start])})
    return rows


def chebyshev_residuals(csr: sp.csr_matrix, top: float, steps: int, args) -> dict:
    """Worst final relative residual over the start vectors and two right-hand sides, for
    Chebyshev on the probe's interval with margin 0, with the recommended margin, and on
    ``[lower, lambda_max]``."""
    matrix = to_torch_csr(csr)
    n = csr.shape[0]
    probe = probe_of(matrix, n, steps, args.starts, args.seed)
    out = {}
    rhs = torch.randn(2, n, generator=torch.Generator().manual_seed(args.seed + 1),
                      dtype=torch.float64)
    system = ms.LinearSystem(matrix, rhs)
    for label, margin in (("0", 0.0), ("recommended", args.recommend), ("exact top", None)):
        worst = 0.0
        for start in range(args.starts):
            lower, upper = probe.interval(upper_margin=0.0 if margin is None else margin)
            low, high = lower[start], upper[start] if margin is not None else torch.tensor(top)
            params = {"lower": low.expand(2).contiguous(),
                      "upper": torch.as_tensor(high, dtype=torch.float64).expand(2).contiguous()}
            x = ms.run(ms.Chebyshev(), system, params=params, fixed_iterations=args.chebyshev_steps,
                       rtol=0.0, divergence_factor=1e300).x
            residual = (torch.linalg.vector_norm(system.residual(x), dim=1)
                        / torch.linalg.vector_norm(rhs, dim=1))
            worst = max(worst, float(residual.max()))
        out[label] = worst
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 32],
                        help="Lanczos probe lengths (the first is used for the Chebyshev runs)")
    parser.add_argument("--starts", type=int, default=8, help="random start vectors per matrix")
    parser.add_argument("--margins", type=float, nargs="+", default=list(MARGINS))
    parser.add_argument("--recommend", type=float, default=0.05,
                        help="the margin whose Chebyshev residuals are reported")
    parser.add_argument("--chebyshev-steps", type=int, default=100)
    parser.add_argument("--small", action="store_true",
                        help="the transfer set at smoke sizes (TRANSFER_SMOKE)")
    parser.add_argument("--tolerance", type=float, default=1e-10,
                        help="relative shortfall counted as round-off, not as a failure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()

    matrices = []
    for operator in (TRANSFER_SMOKE if args.small else TRANSFER):
        csr = operator.matrix()
        grid = operator.builder in ("poisson2d", "poisson3d", "anisotropic2d")
        top = exact_extremes(operator, csr)[1] if grid else lambda_max(csr)
        matrices.append((operator.name, "transfer", csr, top))
    for name, csr in fem_matrices() + graph_matrices() + random_matrices():
        matrices.append((name, "outside", csr, lambda_max(csr)))
    outside = sum(group == "outside" for _, group, _, _ in matrices)
    print(f"{len(matrices) - outside} transfer matrices, {outside} outside; probe lengths "
          f"{args.steps}, {args.starts} starts each")

    rows = []
    for name, group, csr, top in matrices:
        rows += measure(name, group, csr, top, args)

    def summary(estimate, selected):
        ratios = np.array([r["top"] / estimate(r) for r in selected])
        return f"{(ratios > 1 + args.tolerance).mean():.1%}", f"{ratios.max():.4f}"

    def table(selected_rows, label):
        print(f"\n{label}\n")
        print("| upper end | failures, transfer | worst lambda_max / upper, transfer "
              "| failures, outside | worst lambda_max / upper, outside |")
        print("|---|---|---|---|---|")
        transfer = [r for r in selected_rows if r["group"] == "transfer"]
        other = [r for r in selected_rows if r["group"] == "outside"]
        for margin in args.margins:
            def estimate(r, m=margin):
                return r["upper"] * (1 + m)
            print(f"| (theta_s + rho_s)(1 + {margin:g}) | {' | '.join(summary(estimate, transfer))}"
                  f" | {' | '.join(summary(estimate, other))} |")
        print(f"| theta_s + beta_s (Zhou-Li) | "
              f"{' | '.join(summary(lambda r: r['zhou_li'], transfer))} | "
              f"{' | '.join(summary(lambda r: r['zhou_li'], other))} |")

    table(rows, f"All probe lengths {args.steps}, {args.starts} starts each:")
    for steps in args.steps:
        table([r for r in rows if r["steps"] == steps], f"Probe length s = {steps}:")

    print("\nMatrices where margin 0 fails (probe starts, over all lengths):\n")
    print("| matrix | N | failures | below by round-off only | worst lambda_max / upper "
          "| worst, Zhou-Li |")
    print("|---|---|---|---|---|---|")
    sizes = {name: csr.shape[0] for name, _, csr, _ in matrices}
    for name in sizes:
        mine = [r for r in rows if r["name"] == name]
        failed = [r for r in mine if r["top"] > r["upper"] * (1 + args.tolerance)]
        rounding = [r for r in mine if r["upper"] < r["top"] <= r["upper"] * (1 + args.tolerance)]
        if failed or rounding:
            print(f"| {name} | {sizes[name]} | {len(failed)}/{len(mine)} | {len(rounding)} | "
                  f"{max(r['top'] / r['upper'] for r in mine):.4f} | "
                  f"{max(r['top'] / r['zhou_li'] for r in mine):.4f} |")

    s = args.steps[0]
    failing = [m for m in matrices
               if any(r["name"] == m[0] and r["steps"] == s
                      and r["top"] > r["upper"] * (1 + args.tolerance) for r in rows)]
    print(f"\nChebyshev, {args.chebyshev_steps} steps on the s = {s} probe's interval, worst "
          f"final relative residual over {args.starts} starts x 2 right-hand sides, on the "
          "matrices where margin 0 fails at that length:\n")
    print(f"| matrix | margin 0 | margin {args.recommend:g} | upper = lambda_max |")
    print("|---|---|---|---|")
    for name, _, csr, top in failing:
        res = chebyshev_residuals(csr, top, s, args)
        print(f"| {name} | {res['0']:.3g} | {res['recommended']:.3g} | {res['exact top']:.3g} |")
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
