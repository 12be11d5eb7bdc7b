"""Can the Poisson/Jacobi ``Psi_nn`` (16 -> 15 -> 15 -> 16, SiLU) represent the initial guesses
the GBMS paper's Table 3 reports? A diagnostic for issue 2, not part of the experiment.

    python benchmarks/poisson_fit_capacity.py [m] [iterations] [p]

Fits the network, supervised on the training tasks' exact solutions, to ``L_m`` (the squared
relative error after ``m`` Jacobi iterations, built from Jacobi's iteration matrix) with
Levenberg-Marquardt: a Gauss-Newton step on the full Jacobian (16,000 residuals by 751 weights)
with an adaptive diagonal damping. Every 5 iterations it prints the training ``L_m`` and the
mean Jacobi iterations to relative errors 1e-6 and 1e-4 on the 1,000 test tasks, measured with
the project's solver and driver. First-order training (Adam, or L-BFGS on the same loss) stalls
far above what the paper's ``L_m`` rows imply; this shows how low the network itself can go.
"""

from __future__ import annotations

import math
import sys

import torch
from torch.func import functional_call, jacrev

import metasolve as ms
from metasolve.experiments import poisson_jacobi


def main(m: int = 25, iterations: int = 40, p: float = 0.0) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    family = ms.Poisson1DFamily(n=16, p=p)
    splits = ms.make_splits(family, 1000, 1000, 1000, seed=0)
    solver = poisson_jacobi.make_solver(family)
    metasolver = solver.metasolver
    matrix = splits.train.problem.matrix
    matrix = matrix if matrix.ndim == 2 else matrix[0]
    jacobi = torch.eye(16, dtype=torch.float64) - matrix / matrix.diagonal().unsqueeze(1)
    after_m = torch.linalg.matrix_power(jacobi, m)
    features = splits.train.features
    solutions = splits.train.problem.solution
    names = [name for name, _ in metasolver.named_parameters()]
    shapes = [w.shape for w in metasolver.parameters()]

    def unflatten(theta):
        out, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = math.prod(shape)
            out[name] = theta[i:i + size].view(shape)
            i += size
        return out

    def residuals(theta):
        guess = functional_call(metasolver, unflatten(theta), (features,))["x0"]
        error = (guess - solutions) @ after_m.T
        return (error / solutions.norm(dim=1, keepdim=True)).flatten()

    def test_iterations():
        with torch.no_grad():
            for w, value in zip(metasolver.parameters(), unflatten(theta).values(),
                                strict=True):
                w.copy_(value)
            solution = solver.solve(splits.test, rtol=1e-6, maxiter=20000)
        return [float(solution.iterations_to(eps).double().mean()) for eps in (1e-6, 1e-4)]

    theta = torch.cat([w.detach().flatten() for w in metasolver.parameters()])
    r = residuals(theta)
    loss = float((r**2).sum()) / len(features)
    damping = 1e-2
    print(f"p = {p:g}, L_{m}, {theta.numel()} weights; paper's L_m rows (p = 0): m = 25 -> "
          "37.71 at 1e-6, 16.31 at 1e-4")
    for it in range(1, iterations + 1):
        jac = jacrev(residuals)(theta)
        gradient, gauss_newton = jac.T @ r, jac.T @ jac
        scale = torch.diag(gauss_newton.diagonal().clamp_min(1e-12))
        while damping < 1e12:
            step = torch.linalg.solve(gauss_newton + damping * scale, -gradient)
            trial = residuals(theta + step)
            trial_loss = float((trial**2).sum()) / len(features)
            if trial_loss < loss:
                theta, r, loss = theta + step, trial, trial_loss
                damping = max(damping / 3, 1e-12)
                break
            damping *= 4
        if it % 5 == 0 or damping >= 1e12:
            at6, at4 = test_iterations()
            print(f"LM iteration {it}: L_{m} = {loss:.3e}; mean test iterations to 1e-6: "
                  f"{at6:.2f}, to 1e-4: {at4:.2f}", flush=True)
        if damping >= 1e12:
            print("no further decrease")
            break


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 25, int(args[1]) if len(args) > 1 else 40,
         float(args[2]) if len(args) > 2 else 0.0)
