"""The SCS iteration's fast paths against the plain ones: the shared sparse matrix (SciPy
products and one SuperLU factor) against dense products and Cholesky, the column layout of the
cone projections against the row layout, compiled kernels against plain ones, and the
compiled-kernel switch itself (metasolve.kernels)."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("cvxpy")

import metasolve as ms  # noqa: E402
from metasolve import kernels, sparse  # noqa: E402
from metasolve.cones import project_cone, project_dual_cone  # noqa: E402
from metasolve.problems import ConeSpec  # noqa: E402
from metasolve.solvers.scs import primal_dual  # noqa: E402
from metasolve.tasks.conic import KalmanFamily, LassoFamily  # noqa: E402

F64 = torch.float64


@pytest.fixture(scope="module")
def kalman():
    return KalmanFamily(steps=6).sample(5, seed=3).problem


def dense_only(monkeypatch):
    """Every shared matrix stays dense (the products and the factor of before)."""
    monkeypatch.setattr(sparse, "SPARSE_DENSITY", -1.0)
    sparse._PER_MATRIX.clear()


def test_kalman_takes_the_sparse_path_and_lasso_the_dense_one(kalman):
    assert isinstance(kalman.operator, sparse.SharedSparseMatrix)
    assert kalman.operator.nnz == int((kalman.matrix != 0).sum())
    assert kalman.operator is kalman.index(torch.tensor([0, 2])).operator  # built once
    lasso = LassoFamily(p=10, q=20).sample(3, seed=0).problem
    assert lasso.sparse is None and lasso.operator is lasso.matrix


def test_shared_sparse_products_and_solves_match_dense(kalman):
    op, a = kalman.operator, kalman.matrix
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(a.shape[1], 7, generator=gen, dtype=F64)
    y = torch.randn(a.shape[0], 7, generator=gen, dtype=F64)
    torch.testing.assert_close(op.apply(x), a @ x, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(op.apply(y, adjoint=True), a.T @ y, rtol=1e-13, atol=1e-13)
    gram = torch.eye(a.shape[1], dtype=F64) + a.T @ a
    torch.testing.assert_close(op.solve_gram(x), torch.linalg.solve(gram, x), rtol=1e-10,
                               atol=1e-12)
    # rows in, as ConeProgram.matvec takes them
    torch.testing.assert_close(kalman.matvec(x.T), x.T @ a.T, rtol=1e-13, atol=1e-13)


def test_gradcheck_through_the_sparse_products_and_solve(kalman):
    op = kalman.operator
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(op.shape[1], 2, generator=gen, dtype=F64, requires_grad=True)
    y = torch.randn(op.shape[0], 2, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(op.apply, (x,))
    assert torch.autograd.gradcheck(lambda t: op.apply(t, adjoint=True), (y,))
    assert torch.autograd.gradcheck(op.solve_gram, (x,))


def test_matrices_that_stay_dense():
    a = torch.zeros(6, 4, dtype=F64)
    a[0, 0] = a[3, 2] = 1.0
    assert sparse.shared_sparse(a) is not None
    assert sparse.shared_sparse(a.requires_grad_()) is None  # differentiated in A
    assert sparse.shared_sparse(torch.ones(6, 4, dtype=F64)) is None  # dense
    assert sparse.shared_sparse(torch.zeros(2, 6, 4, dtype=F64)) is None  # per instance


def test_an_edited_matrix_is_read_again():
    a = torch.zeros(6, 4, dtype=F64)
    a[0, 0] = 1.0
    first = sparse.shared_sparse(a)
    a[5, 3] = 2.0
    second = sparse.shared_sparse(a)
    assert second is not first and second.nnz == 2


def test_sparse_path_iterates_like_the_dense_one(kalman, monkeypatch):
    method = ms.SCS(eps_abs=1e-12, eps_rel=1e-12)
    fast = ms.run(method, kalman, maxiter=60)
    dense_only(monkeypatch)
    program = KalmanFamily(steps=6).sample(5, seed=3).problem
    assert program.sparse is None
    plain = ms.run(method, program, maxiter=60)
    torch.testing.assert_close(fast.x, plain.x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fast.residual_history, plain.residual_history, rtol=1e-8,
                               atol=1e-12)
    assert fast.x.is_contiguous()


def test_stopping_test_in_the_step_is_scs_own(kalman):
    solution = ms.run(ms.SCS(eps_abs=1e-5, eps_rel=1e-5), kalman, maxiter=5000)
    assert bool(solution.converged.all())
    res = primal_dual(kalman, solution.x)
    for name in ("primal", "dual", "gap"):
        assert bool((res[name] <= 1e-5 + 1e-5 * res[f"{name}_scale"]).all())


def test_column_projections_equal_the_row_ones():
    cones = ConeSpec(zero=2, nonneg=3, soc=(3, 3, 5, 2, 1, 3))
    points = torch.randn(9, cones.dim, dtype=F64, generator=torch.Generator().manual_seed(2))
    for project in (project_cone, project_dual_cone):
        torch.testing.assert_close(project(points.T.contiguous(), cones, dim=0).T,
                                   project(points, cones), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="dim"):
        project_cone(points, cones, dim=1)


def test_set_compile_takes_a_bool():
    with pytest.raises(TypeError, match="enabled"):
        kernels.set_compile(1)


def test_a_kernel_that_does_not_compile_runs_plain_and_warns_once(monkeypatch):
    def broken(function):
        def call(*args, **kwargs):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(kernels, "_ENABLED", True)
    double = kernels.compiled(lambda t: 2 * t)
    with pytest.warns(kernels.CompileFallbackWarning, match="no compiler here"):
        assert double(torch.ones(2)).tolist() == [2.0, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert double(torch.ones(1)).tolist() == [2.0]  # plain from now on, silently


def test_an_error_of_the_arguments_is_raised_as_it_is(monkeypatch):
    def compiled_like(function):
        return function

    monkeypatch.setattr(torch, "compile", compiled_like)
    monkeypatch.setattr(kernels, "_ENABLED", True)
    add = kernels.compiled(lambda a, b: a + b)
    with pytest.raises(RuntimeError, match="size"):
        add(torch.ones(2), torch.ones(3))


def test_compiled_kernels_iterate_like_the_plain_ones(kalman, monkeypatch):
    """torch.compile itself (about 15 s); skipped where this machine cannot compile."""
    method = ms.SCS(eps_abs=1e-12, eps_rel=1e-12)
    plain = ms.run(method, kalman, maxiter=40)
    monkeypatch.setattr(kernels, "_ENABLED", True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", kernels.CompileFallbackWarning)
        fast = ms.run(method, kalman, maxiter=40)
    if any(issubclass(w.category, kernels.CompileFallbackWarning) for w in caught):
        pytest.skip("torch.compile is not available here")
    torch.testing.assert_close(fast.x, plain.x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.residual_history, plain.residual_history, rtol=1e-10,
                               atol=1e-14)
    assert torch.equal(fast.status, plain.status)


def test_data_scales_are_kept_per_program_and_not_moved_stale(kalman):
    first = kalman.data_scales()
    assert kalman.data_scales() is first  # computed once
    norms = kalman.data_norms()
    torch.testing.assert_close(norms[0], kalman.rhs.abs().amax(dim=1))
    moved = kalman.to("meta")
    assert moved.data_scales()[0].device.type == "meta"
    graded = ms.ConeProgram(kalman.matrix, kalman.rhs.clone().requires_grad_(), kalman.cost,
                            kalman.cones)
    assert graded.data_scales() is not graded.data_scales()  # a fresh graph each time
