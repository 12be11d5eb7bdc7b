"""CG's fast path on a large shared sparse matrix: SciPy's products with the batch held as
columns, the product written into a kept buffer, and in-place steps; each against SciPy's own
CG (the same recurrence) and the plain path."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

import metasolve as ms
from metasolve.problems import SCIPY_MIN_ROWS
from metasolve.tasks.operators import poisson2d, to_torch_csr

F64 = torch.float64


@pytest.fixture(scope="module")
def grid():
    matrix = poisson2d(48)  # 2,304 unknowns: above SCIPY_MIN_ROWS
    assert matrix.shape[0] >= SCIPY_MIN_ROWS
    rhs = torch.randn(3, matrix.shape[0], dtype=F64, generator=torch.Generator().manual_seed(4))
    return matrix, ms.LinearSystem(to_torch_csr(matrix), rhs)


def test_large_csr_systems_go_through_scipy(grid):
    matrix, system = grid
    assert system.scipy_operator is not None
    small = ms.LinearSystem(to_torch_csr(poisson2d(8)), torch.ones(2, 64, dtype=F64))
    assert small.scipy_operator is None  # below SCIPY_MIN_ROWS: PyTorch's product
    dense = ms.LinearSystem(torch.eye(4, dtype=F64), torch.ones(2, 4, dtype=F64))
    assert dense.scipy_operator is None
    graded = ms.LinearSystem(to_torch_csr(matrix).requires_grad_(), system.rhs)
    assert graded.scipy_operator is None  # differentiated in the matrix


def test_products_with_and_without_a_buffer_match_scipy(grid):
    matrix, system = grid
    x = system.rhs.T.contiguous().T  # held with the batch fastest
    expected = torch.from_numpy((matrix @ system.rhs.numpy().T).T)
    torch.testing.assert_close(system.matvec(system.rhs), expected, rtol=1e-14, atol=1e-14)
    buffer = torch.empty_like(x)
    out = system.matvec(x, out=buffer)
    assert out.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=1e-14)
    # a row-major buffer cannot take SciPy's columns: a new tensor, the same values
    rows = torch.empty_like(system.rhs)
    other = system.matvec(x, out=rows)
    assert other.data_ptr() != rows.data_ptr()
    torch.testing.assert_close(other, expected, rtol=1e-14, atol=1e-14)


def test_cg_iterates_like_scipy_and_leaves_x0_alone(grid):
    matrix, system = grid
    x0 = (0.1 * system.rhs).T.contiguous().T
    kept = x0.clone()
    solution = ms.run(ms.ConjugateGradient(), system, x0=x0, rtol=0.0, maxiter=25)
    assert torch.equal(x0, kept)
    assert solution.x.is_contiguous()
    theirs = np.stack([scipy.sparse.linalg.cg(matrix, b, x0=s, rtol=0.0, atol=0.0,
                                              maxiter=25)[0]
                       for b, s in zip(system.rhs.numpy(), kept.numpy(), strict=True)])
    np.testing.assert_allclose(solution.x.numpy(), theirs, rtol=1e-9, atol=1e-11)


def test_in_place_steps_equal_the_plain_ones(grid):
    _, system = grid
    fast = ms.run(ms.ConjugateGradient(), system, rtol=1e-10)
    x0 = torch.zeros_like(system.rhs, requires_grad=True)  # a gradient: plain steps only
    plain = ms.run(ms.ConjugateGradient(), system, x0=x0, rtol=1e-10)
    assert torch.equal(fast.iterations, plain.iterations)
    torch.testing.assert_close(fast.x, plain.x.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast.residual_history, plain.residual_history.detach(),
                               rtol=1e-10, atol=1e-14)
    exact = torch.linalg.solve(system.matrix.to_dense(), system.rhs.T).T
    torch.testing.assert_close(fast.x, exact, rtol=1e-7, atol=1e-8)


def test_a_product_buffer_of_the_wrong_shape_is_named(grid):
    _, system = grid
    x = system.rhs.T.contiguous().T
    with pytest.raises(ValueError, match="out must have shape"):
        system.matvec(x, out=torch.empty(x.shape[0], 7, dtype=F64).T.contiguous().T)
