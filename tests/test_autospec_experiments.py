"""The AutoSpec eigenvalue and matrix-function pieces, and the three experiments at smoke scale."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import torch
from figures import check_run_figure

import metasolve as ms
from metasolve.evaluation.spectral import Operator, exact_inverse_sqrt
from metasolve.probes import lanczos_function, subspace_probe
from metasolve.runner import reproduce
from metasolve.tasks import operators

F64 = torch.float64


def test_filtered_subspace_iteration_finds_the_smallest_eigenpairs():
    a = operators.poisson2d(15)
    system = operators.sparse_system(a, 2, seed=0)
    start = torch.randn(2, 225, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    problem = ms.EigenProblem(system, start, torch.full((2,), 8.0, dtype=F64), wanted=5)
    method = ms.FilteredSubspaceIteration(12)
    solution = ms.run(method, problem, rtol=1e-10, maxiter=200)
    assert bool(solution.converged.all())
    reference = np.sort(spla.eigsh(a.tocsc(), k=5, sigma=0.0, return_eigenvectors=False))
    ritz = torch.linalg.eigvalsh(solution.x.mT @ problem.block_matvec(solution.x))[:, :5]
    np.testing.assert_allclose(ritz.numpy(), np.stack([reference] * 2), rtol=1e-9)
    vectors = solution.x[:, :, :5]
    torch.testing.assert_close(vectors.mT @ vectors, torch.eye(5, dtype=F64).expand(2, 5, 5))
    assert method.products_per_iteration(problem, 13) == 13 * 8
    # Plain subspace iteration (d = 1) makes far less progress in as many products.
    plain = ms.run(ms.FilteredSubspaceIteration(1), problem, rtol=1e-10,
                   maxiter=int(solution.iterations.max()) * 7)
    assert bool((plain.residual > solution.residual).all())


def test_eigen_problem_rejects_bad_input():
    system = operators.sparse_system(operators.poisson2d(4), 1)
    with pytest.raises(ValueError, match="start"):
        ms.EigenProblem(system, torch.ones(1, 15, 3, dtype=F64), torch.ones(1, dtype=F64), 2)
    with pytest.raises(ValueError, match="wanted"):
        ms.EigenProblem(system, torch.ones(1, 16, 3, dtype=F64), torch.ones(1, dtype=F64), 4)


def test_lanczos_function_and_subspace_probe():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=F64))
    lam = torch.logspace(-2, 0, 40, dtype=F64)
    matrix = q @ torch.diag(lam) @ q.T
    b = torch.randn(2, 40, generator=g, dtype=F64)
    exact = (q @ torch.diag(lam.rsqrt()) @ q.T @ b.T).T
    full = lanczos_function(lambda v: v @ matrix, b, 40, torch.rsqrt)
    torch.testing.assert_close(full, exact, rtol=1e-8, atol=1e-10)
    # Exact for polynomials of degree below the number of steps.
    cubic = lanczos_function(lambda v: v @ matrix, b, 5, lambda t: 1 + t ** 3)
    torch.testing.assert_close(cubic, b + (b @ matrix @ matrix @ matrix), rtol=1e-10, atol=1e-12)
    probe = subspace_probe(lambda v: v @ matrix, 40, 6, 8, batch=2)
    assert probe.matvecs == 6 * 9
    assert float(probe.ritz_values[:, -1].min()) > 0.95  # converges to the top
    assert bool((probe.ritz_values <= 1.0 + 1e-12).all())


def test_exact_inverse_sqrt_matches_a_dense_eigendecomposition():
    for operator in (Operator("p2", "poisson2d", {"m": 5}),
                     Operator("an", "anisotropic2d", {"m": 4, "epsilon": 0.1}),
                     Operator("rs", "random_spd", {"n": 20})):
        matrix = operator.matrix()
        b = torch.randn(2, matrix.shape[0], generator=torch.Generator().manual_seed(1),
                        dtype=F64)
        values, vectors = np.linalg.eigh(matrix.toarray())
        reference = (vectors @ np.diag(values ** -0.5) @ vectors.T @ b.numpy().T).T
        np.testing.assert_allclose(exact_inverse_sqrt(operator, matrix, b).numpy(), reference,
                                   rtol=1e-10, atol=1e-12)


def test_filter_gap_loss_and_filter_state_family():
    family = ms.FilterStateFamily(size=40, block=5, degree=4, iterations=2, probe_steps=6)
    tasks = family.sample(6, seed=0)
    assert tasks.features.shape == (6, 11)
    eig = tasks.problem.eigenvalues
    assert bool((eig[:, 1:] >= eig[:, :-1]).all())
    # A hand-made filter: values 2 on the first k, 0.5 beyond the block -> log(0.5 / 2).
    values = torch.ones(1, 10, dtype=F64)
    values[0, :3], values[0, 5:] = 2.0, 0.5
    solution = ms.Solution(x=values, status=torch.zeros(1, dtype=torch.int64),
                           iterations=torch.zeros(1, dtype=torch.int64),
                           residual_history=torch.ones(1, 1, dtype=F64),
                           reference_norm=torch.ones(1, dtype=F64),
                           threshold=torch.ones(1, dtype=F64), wall_time=0.0)
    loss = ms.FilterGapLoss(5, wanted=3, block=5)
    torch.testing.assert_close(loss(solution), torch.log(torch.tensor([0.25], dtype=F64)))
    with pytest.raises(ValueError, match="block"):
        ms.FilterGapLoss(5, wanted=4, block=3)


def test_an_untrained_filter_engine_is_chebyshev_filtering():
    family = ms.FilterStateFamily(size=40, block=5, degree=4, iterations=1, probe_steps=6)
    tasks = family.sample(4, seed=2)
    engine = ms.AutoSpecEngine(5, 4, "filter", modes=0)
    ours = engine(tasks.features)
    reference = ms.chebyshev_filter_rule(4)(tasks.features)
    for name, value in reference.items():
        torch.testing.assert_close(ours[name], value)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("autospec")
    return {name: reproduce(name, scale="smoke", out_dir=out, workers=1, progress=False)
            for name in ("autospec-linear", "autospec-invsqrt", "autospec-eigen")}


def test_autospec_smoke_runs_write_records_plots_and_tables(smoke_runs):
    from rich.console import Console

    for name, result in smoke_runs.items():
        records = result["records"]
        assert records and all(r["experiment"] == name for r in records)
        assert result["json"].exists() and result["plot"].exists()
        check_run_figure(name, result)
        Console(file=io.StringIO()).print(result["table"])
    linear = smoke_runs["autospec-linear"]["records"]
    methods = {r["method"] for r in linear if r["metric"] == "median_relative_residual"}
    assert {"richardson", "chebyshev-estimated", "chebyshev-exact-K", "cg-budget",
            "learned-recurrence", "learned-basis"} <= methods
    pcg = [r for r in linear
           if r["method"] == "pcg-learned" and r["metric"] == "converged_fraction"]
    assert pcg and pcg[0]["value"] == 1.0
    # Against the Chebyshev preconditioner on every transfer matrix, each instance counted once,
    # under the condition limit the run calibrated on its held-out operators.
    for operator in ("poisson2d-16", "random-spd-200"):
        counts = [r["value"] for r in linear if r["method"] == "pcg-learned"
                  and r.get("operator") == operator and r["metric"].startswith("instances_")]
        assert len(counts) == 3 and sum(counts) == 2
    assert all(r["condition_limit"] >= 1 for r in pcg)
    eigen = smoke_runs["autospec-eigen"]["records"]
    converged = {r["method"]: r["value"] for r in eigen if r["metric"] == "converged_fraction"}
    assert converged["chebyshev-filtered"] == 1.0 and converged["learned"] == 1.0
    invsqrt = smoke_runs["autospec-invsqrt"]["records"]
    errors = [r["value"] for r in invsqrt if r["metric"] == "median_relative_error"
              and r["method"] == "chebyshev-exact"]
    assert errors and all(0 < e < 1 for e in errors)


def test_every_stored_record_file_renders_together():
    from pathlib import Path

    from metasolve.evaluation.records import read_records
    from metasolve.runner import render_markdown

    records = []
    for path in sorted((Path(__file__).resolve().parents[1] / "docs" / "results").glob("*.json")):
        records += read_records(path)
    text = render_markdown(records)
    for name in ("autospec-linear", "autospec-eigen", "autospec-invsqrt", "elasticity-iccg"):
        assert f"## {name}:" in text
