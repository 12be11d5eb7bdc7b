"""Can a one-shot learned initializer warm-start the real scs on robust Kalman filtering?

A warm start costs wall-clock only if the model that computes it is cheaper than the scs
iterations it saves. An MLP evaluated once per instance is cheap; the iterated models of
``metasolve reproduce neural-scs-kalman`` are not (on a CPU their PyTorch iterations cost more
than scs's whole solve). This script asks how accurate a one-shot model can be made at this
scale, with the most direct training there is: supervised regression of scs's solution
``(x, y, s)`` (solved to 1e-9) on the measurements, by ridge regression and by an MLP (2 hidden
layers, Adam, mean squared error of standardized targets). It prints the median relative error
of the prediction on held-out problems and scs's mean iterations (eps 1e-4) from a cold start,
from each prediction, and from scs's own solution with random errors of relative size 1e-1,
1e-2 and 1e-3 (how accurate a start must be).

    python benchmarks/kalman_initializer.py [TRAIN_PROBLEMS] [EPOCHS] [HIDDEN]
    python benchmarks/kalman_initializer.py 4096 100 512     # 3 to 4 min on 2 cores
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from metasolve.baselines.scs_reference import solve_batch_with_scs, solve_with_scs
from metasolve.tasks.conic import KalmanFamily

STEPS = 20  # the time steps of the neural-scs-kalman full scale


def solutions(program) -> np.ndarray:
    out = solve_batch_with_scs(program, eps_abs=1e-9, eps_rel=1e-9, reuse=True)
    return np.stack([np.concatenate([o["x"], o["y"], o["s"]]) for o in out])


def main(n_train: int = 4096, epochs: int = 100, hidden: int = 512, n_test: int = 100) -> None:
    torch.manual_seed(0)
    family = KalmanFamily(steps=STEPS)
    start = time.perf_counter()
    train, test = family.sample(n_train, seed=11), family.sample(n_test, seed=12)
    x_train, x_test = train.features, test.features
    y_train = torch.tensor(solutions(train.problem))
    y_test = torch.tensor(solutions(test.problem))
    print(f"{n_train} training and {n_test} test problems solved to 1e-9 in "
          f"{time.perf_counter() - start:.0f} s")
    scale = x_train.std(0).clamp_min(1e-3)
    mean, spread = y_train.mean(0), y_train.std(0).clamp_min(1e-6)

    def relative_error(prediction):
        return float((torch.linalg.vector_norm(prediction - y_test, dim=1)
                      / torch.linalg.vector_norm(y_test, dim=1)).median())

    def design(x):  # standardized features and a constant column
        return torch.cat([x / scale, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)

    fit = design(x_train)
    weights = torch.linalg.solve(fit.T @ fit + 1e-6 * torch.eye(fit.shape[1],
                                                                dtype=torch.float64),
                                 fit.T @ y_train)
    ridge = design(x_test) @ weights
    net = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, y_train.shape[1])).double()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(n_train).split(128):
            loss = ((net(x_train[idx] / scale) - (y_train[idx] - mean) / spread) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    with torch.no_grad():
        mlp = net(x_test / scale) * spread + mean
    print(f"MLP trained in {time.perf_counter() - start:.0f} s")
    n, m = test.problem.variables, test.problem.constraints
    rows = {"cold start": None, "ridge regression": ridge, "MLP": mlp}
    # How accurate a start must be: scs's solution with a random error of a given relative size.
    noise = torch.randn(y_test.shape, generator=torch.Generator().manual_seed(3),
                        dtype=torch.float64)
    noise *= (torch.linalg.vector_norm(y_test, dim=1)
              / torch.linalg.vector_norm(noise, dim=1)).unsqueeze(1)
    for size in (1e-1, 1e-2, 1e-3):
        rows[f"solution + {size:g} error"] = y_test + size * noise
    for name, prediction in rows.items():
        iterations = []
        for i in range(n_test):
            warm = None if prediction is None else {
                "x": prediction[i, :n].numpy(), "y": prediction[i, n:n + m].numpy(),
                "s": prediction[i, n + m:].numpy()}
            iterations.append(solve_with_scs(test.problem, i, warm_start=warm)["iterations"])
        error = "-" if prediction is None else f"{relative_error(prediction):.3f}"
        print(f"{name:18s} median relative error {error:>6s}   scs mean iterations "
              f"{np.mean(iterations):.1f}")


if __name__ == "__main__":
    main(*(int(v) for v in sys.argv[1:4]))
