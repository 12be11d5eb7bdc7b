"""Per-instance sparse matrices (:class:`metasolve.SparseBatch`) and the sweeps over them.

Every operation of a ``SparseBatch`` is checked against the same operation on the dense
``(B, N, N)`` matrices, for both layouts (one pattern shared by the batch; different patterns as
one block-diagonal pattern); every method that solves a ``LinearSystem`` gives the same iterates
on the sparse batch as on the dense one, to round-off; SOR and SSOR give the iterates of a plain
loop over the unknowns on every storage; gradients through the values pass ``gradcheck``.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch
from reference import DTYPE, plain_sor, randn

import metasolve as ms
import metasolve.sparse as sparse_module
from metasolve.polynomials import chebyshev_recurrence_coefficients, chebyshev_solve_expansion
from metasolve.solvers import METHODS
from metasolve.tasks.operators import to_torch_csr

B, N = 3, 9
LAYOUTS = ("shared", "blocks")


def instances(seed: int = 0, symmetric: bool = True, n: int = N, batch: int = B) -> torch.Tensor:
    """``(B, N, N)`` sparse, strictly diagonally dominant matrices, each with its own holes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        a = torch.randn(n, n, generator=g, dtype=DTYPE) * (torch.rand(n, n, generator=g) < 0.4)
        a.fill_diagonal_(0.0)
        if symmetric:
            a = torch.tril(a, -1)
            a = a + a.T
        out.append(a + torch.diag(a.abs().sum(1) + 1.0 + torch.rand(n, generator=g,
                                                                    dtype=DTYPE)))
    return torch.stack(out)


def stored(dense: torch.Tensor, layout: str) -> ms.SparseBatch:
    if layout == "shared":
        return ms.SparseBatch.from_dense(dense)
    return ms.SparseBatch.stack([scipy.sparse.csr_matrix(m.numpy()) for m in dense],
                                dtype=dense.dtype)


def laplacian2d(n: int) -> scipy.sparse.csr_matrix:
    t = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n))
    eye = scipy.sparse.eye(n)
    return (scipy.sparse.kron(eye, t) + scipy.sparse.kron(t, eye)).tocsr()


def bmv(matrices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.bmm(matrices, x.unsqueeze(-1)).squeeze(-1)


# --- the container ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_operations_match_the_dense_matrices(layout):
    dense = instances(symmetric=False)
    matrices = stored(dense, layout)
    assert matrices.shared_pattern == (layout == "shared")
    assert matrices.shape == (B, N, N)
    x = randn(B, N, seed=1)
    block = randn(B, 4, N, seed=2)
    lower, upper = torch.tril(dense, -1), torch.triu(dense, 1)
    diag = torch.diagonal(dense, dim1=1, dim2=2)
    close = torch.testing.assert_close
    close(matrices.to_dense(), dense)
    close(matrices.matvec(x), bmv(dense, x))
    close(matrices.matvec(block), (dense @ block.mT).mT)
    close(matrices.matvec(x, "lower"), bmv(lower, x))
    close(matrices.matvec(x, "upper"), bmv(upper, x))
    close(matrices.diagonal(), diag)
    close(matrices.strictly_lower().to_dense(), lower)
    close(matrices.strictly_upper().to_dense(), upper)
    scale = torch.tensor([1.0, 1.4, 0.6], dtype=DTYPE)
    for up, part in ((False, lower), (True, upper)):
        for s in (1.0, 0.5, scale):
            factor = s.reshape(-1, 1, 1) if isinstance(s, torch.Tensor) else s
            expected = torch.linalg.solve_triangular(torch.diag_embed(diag) + factor * part,
                                                     x.unsqueeze(-1), upper=up).squeeze(-1)
            close(matrices.solve_triangular(x, upper=up, scale=s), expected)
    for idx in (slice(1, None), torch.tensor([2, 0]), torch.tensor([True, False, True]),
                torch.tensor([1])):
        close(matrices[idx].to_dense(), dense[idx])
        close(matrices.index(idx).matvec(x[idx]), bmv(dense[idx], x[idx]))
    single = matrices.to(torch.float32)
    assert single.dtype == torch.float32 and single.pattern is matrices.pattern
    close(single.matvec(x.float()), bmv(dense, x).float())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_chunked_products_add_up(layout, monkeypatch):
    """Outside autograd a product runs in chunks of the entries; tiny chunks give the same."""
    dense = instances(seed=3, n=20, symmetric=False)
    matrices = stored(dense, layout)
    x = randn(B, 20, seed=4)
    whole = matrices.matvec(x)
    monkeypatch.setitem(sparse_module.CHUNK_ELEMENTS, "cpu", 7)
    with torch.no_grad():
        torch.testing.assert_close(matrices.matvec(x), whole)
        torch.testing.assert_close(matrices.matvec(x, "upper"), bmv(torch.triu(dense, 1), x))
    torch.testing.assert_close(whole, bmv(dense, x))


def test_level_schedules_of_common_patterns():
    n = 12
    grid = ms.SparseBatch.stack([laplacian2d(n)])
    assert grid.pattern.levels(upper=False) == grid.pattern.levels(upper=True) == 2 * n - 1
    tridiagonal = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(7, 7))
    assert ms.SparseBatch.stack([tridiagonal]).pattern.levels() == 7
    assert ms.SparseBatch.stack([scipy.sparse.eye(5)]).pattern.levels() == 1
    # Different patterns side by side: the deepest block sets the count.
    both = ms.SparseBatch.stack([scipy.sparse.eye(7), tridiagonal])
    assert not both.shared_pattern and both.pattern.levels() == 7


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_stack_shares_a_common_pattern_and_reads_torch_and_scipy():
    a = laplacian2d(3)
    b = a.copy()
    b.data = b.data * 2.0
    shared = ms.SparseBatch.stack([a, b])
    assert shared.shared_pattern and tuple(shared.values.shape) == (2, a.nnz)
    dense = torch.from_numpy(np.stack([a.toarray(), b.toarray()]))
    for matrices in ([torch.from_numpy(a.toarray()), torch.from_numpy(b.toarray())],
                     [m.to_sparse() for m in dense], [m.to_sparse_csr() for m in dense]):
        batch = ms.SparseBatch.stack(matrices)
        assert batch.shared_pattern
        torch.testing.assert_close(batch.to_dense(), dense)
    mixed = ms.SparseBatch.stack([a, scipy.sparse.eye(9)], dtype=torch.float32)
    assert not mixed.shared_pattern and mixed.dtype == torch.float32
    assert tuple(mixed.values.shape) == (a.nnz + 9,)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_a_shared_torch_matrix_is_read_once():
    matrix = instances()[0].to_sparse_csr()
    first, second = (ms.SparseBatch.from_shared(matrix, batch) for batch in (2, 5))
    assert first.pattern is second.pattern and second.batch_size == 5
    assert second.values.stride(0) == 0  # an expanded view: no copy per instance
    torch.testing.assert_close(second.to_dense(), matrix.to_dense().expand(5, N, N))


def test_linear_system_holds_a_sparse_batch():
    dense = instances()
    rhs = randn(B, N, seed=5)
    problem = ms.LinearSystem(stored(dense, "blocks"), rhs, torch.linalg.solve(dense, rhs))
    assert problem.sparse and not problem.shared_matrix
    torch.testing.assert_close(problem.residual(problem.solution), torch.zeros(B, N, dtype=DTYPE))
    torch.testing.assert_close(problem.diagonal(), torch.diagonal(dense, dim1=1, dim2=2))
    sub = problem.index(torch.tensor([2, 1]))
    torch.testing.assert_close(sub.matrix.to_dense(), dense[[2, 1]])
    wide = ms.LinearSystem(stored(dense.float(), "shared"), rhs.float()).widened()
    assert wide.dtype == torch.float64 and wide.matrix.dtype == torch.float64
    # An eigenproblem over it multiplies blocks of vectors without densifying.
    start = randn(B, N, 2, seed=6)
    eigen = ms.EigenProblem(problem, start, torch.full((B,), 100.0, dtype=DTYPE), wanted=1)
    torch.testing.assert_close(eigen.block_matvec(start), dense @ start)


# --- every linear method: the sparse batch against the dense batch --------------------------------


def _bounds(dense):
    eig = torch.linalg.eigvalsh(dense)
    return 0.9 * eig[:, 0], 1.1 * eig[:, -1]


def _polynomial(dense, degree):
    lower, upper = _bounds(dense)
    return {"coefficients": chebyshev_solve_expansion(lower, upper, degree), "lower": lower,
            "upper": upper}


#: For every method that solves linear systems: (method, params from the dense matrices,
#: iterations compared, run options). ``None``: the method refuses a SparseBatch (checked).
LINEAR = {
    "jacobi": lambda d: (ms.Jacobi(), {"omega": torch.tensor([1.0, 0.9, 0.8], dtype=DTYPE)},
                         6, {}),
    "sor": lambda d: (ms.SOR(), {"omega": torch.tensor([1.0, 1.3, 0.7], dtype=DTYPE)}, 5, {}),
    "ssor": lambda d: (ms.SSOR(omega=1.2), {}, 4, {}),
    "cg": lambda d: (ms.ConjugateGradient(), {}, 5, {}),
    "cg-jacobi": lambda d: (ms.ConjugateGradient(preconditioner="jacobi"), {}, 5, {}),
    "cg-polynomial": lambda d: (ms.ConjugateGradient(), _polynomial(d, 3), 4, {}),
    "chebyshev": lambda d: (ms.Chebyshev(), dict(zip(("lower", "upper"), _bounds(d),
                                                     strict=True)), 6, {}),
    "gmres": lambda d: (ms.GMRES(restart=3), {}, 3, {}),
    "bicgstab": lambda d: (ms.BiCGStab(), {}, 4, {}),
    "polynomial-recurrence": lambda d: (ms.PolynomialRecurrence(),
                                        chebyshev_recurrence_coefficients(*_bounds(d), 6), 6, {}),
    "chebyshev-expansion": lambda d: (ms.ChebyshevExpansion(), _polynomial(d, 6), 6, {}),
    "chebyshev-series": lambda d: (ms.ChebyshevSeries(), _polynomial(d, 6), 6,
                                   {"monitor": "error"}),
    "r2n2": lambda d: (ms.R2N2(layers=2, stage_weights=[-0.1], output_weights=[-0.1, -0.1]),
                       {}, 4, {}),
    "iccg": None,
}


def test_every_linear_method_is_in_the_table():
    linear = {name for name in METHODS if METHODS[name].__module__.startswith("metasolve.")
              and isinstance(METHODS[name].problem_type, type)
              and issubclass(METHODS[name].problem_type, ms.LinearSystem)}
    covered = {name if entry is None else entry(instances())[0].name
               for name, entry in LINEAR.items()}
    missing = sorted((linear | {"r2n2"}) - covered)
    assert not missing, f"linear methods without a row in LINEAR: {missing}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_sparse_batch_iterates_like_the_dense_batch(name, layout):
    dense = instances(seed=7)
    rhs = randn(B, N, seed=8)
    x0 = randn(B, N, seed=9)
    solution = torch.linalg.solve(dense, rhs)
    sparse = ms.LinearSystem(stored(dense, layout), rhs, solution)
    if LINEAR[name] is None:
        with pytest.raises(TypeError, match="SparseBatch"):
            ms.run(METHODS[name](), sparse)
        return
    method, params, steps, options = LINEAR[name](dense)
    runs = [ms.run(method, problem, params=params, x0=x0, fixed_iterations=steps, rtol=0.0,
                   **options)
            for problem in (ms.LinearSystem(dense, rhs, solution), sparse)]
    torch.testing.assert_close(runs[1].x, runs[0].x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(runs[1].residual_history, runs[0].residual_history, rtol=1e-10,
                               atol=1e-12)
    # The solvers converge: the iterates move towards the solution (the series evaluates a
    # matrix function instead).
    closer = (runs[1].x - solution).norm(dim=1) < (x0 - solution).norm(dim=1)
    assert name == "chebyshev-series" or bool(closer.all())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_subspace_iteration_on_a_sparse_batch(layout):
    dense = instances(seed=10)
    start = randn(B, N, 3, seed=11)
    upper = torch.linalg.eigvalsh(dense)[:, -1] * 1.01
    runs = [ms.run(ms.FilteredSubspaceIteration(degree=3), ms.EigenProblem(
        ms.LinearSystem(matrix, torch.zeros(B, N, dtype=DTYPE)), start, upper, wanted=2),
        fixed_iterations=4) for matrix in (dense, stored(dense, layout))]
    torch.testing.assert_close(runs[1].x, runs[0].x, rtol=1e-10, atol=1e-10)


# --- SOR and SSOR against the plain sweep, on every storage ------------------------------------


def _storages(dense_one: torch.Tensor, dense: torch.Tensor):
    """``(label, matrix, the (B, N, N) it stands for)`` for every storage a LinearSystem takes."""
    return [
        ("dense per instance", dense, dense),
        ("dense shared", dense_one, dense_one.expand(B, N, N)),
        ("torch sparse shared", dense_one.to_sparse_csr(), dense_one.expand(B, N, N)),
        ("sparse batch shared", stored(dense, "shared"), dense),
        ("sparse batch blocks", stored(dense, "blocks"), dense),
    ]


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
@pytest.mark.parametrize("symmetric", [False, True], ids=["sor", "ssor"])
def test_sor_iterates_are_the_plain_sweep(symmetric):
    dense = instances(seed=12)
    rhs, x0 = randn(B, N, seed=13), randn(B, N, seed=14)
    omega = torch.tensor([1.0, 1.25, 0.75], dtype=DTYPE)
    method = ms.SSOR() if symmetric else ms.SOR()
    for label, matrix, full in _storages(dense[0], dense):
        sol = ms.run(method, ms.LinearSystem(matrix, rhs), params={"omega": omega}, x0=x0,
                     fixed_iterations=3)
        expected = np.stack([plain_sor(full[b].numpy(), rhs[b].numpy(), x0[b].numpy(),
                                       omega=float(omega[b]), sweeps=3, symmetric=symmetric)
                             for b in range(B)])
        np.testing.assert_allclose(sol.x.numpy(), expected, rtol=0, atol=1e-12, err_msg=label)
        # The monitored norm is the true residual of the iterate.
        torch.testing.assert_close(sol.residual_history[-1], (rhs - bmv(full, sol.x)).norm(dim=1))
    # SOR's default is Gauss-Seidel; a DiagonalSystem's sweep is the diagonal solve.
    gs = ms.run(ms.SOR(), ms.LinearSystem(dense, rhs), x0=x0, fixed_iterations=2)
    expected = np.stack([plain_sor(dense[b].numpy(), rhs[b].numpy(), x0[b].numpy(), omega=1.0,
                                   sweeps=2) for b in range(B)])
    np.testing.assert_allclose(gs.x.numpy(), expected, atol=1e-12)
    eig = torch.rand(B, N, dtype=DTYPE) + 1.0
    diag = ms.run(method, ms.DiagonalSystem(eig, rhs), rtol=1e-12, params={"omega": omega})
    torch.testing.assert_close(diag.x, rhs / eig)


def test_sor_converges_to_the_dense_solve_on_a_grid_family():
    """A small variable-coefficient diffusion family: SOR with a good factor in far fewer
    iterations than Gauss-Seidel, both at the dense solve's answer."""
    n = 8
    base = laplacian2d(n)
    matrices = []
    for b in range(B):
        m = base.copy()
        m.data = m.data * (1.0 + 0.3 * b)
        matrices.append(m + scipy.sparse.diags(np.linspace(0.0, 0.1 * b, n * n)))
    batch = ms.SparseBatch.stack(matrices)
    assert batch.shared_pattern
    problem = ms.LinearSystem(batch, torch.ones(B, n * n, dtype=DTYPE))
    expected = torch.linalg.solve(batch.to_dense(), problem.rhs)
    gs = ms.run(ms.SOR(), problem, rtol=1e-10)
    sor = ms.run(ms.SOR(omega=1.5), problem, rtol=1e-10)
    for sol in (gs, sor):
        assert bool(sol.converged.all())
        torch.testing.assert_close(sol.x, expected, rtol=0, atol=1e-8)
    assert bool((sor.iterations * 2 < gs.iterations).all())


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_through_the_values(layout):
    dense = instances(seed=15, n=5)
    matrices = stored(dense, layout)
    values = matrices.values.clone().requires_grad_(True)
    x = randn(B, 5, seed=16).requires_grad_(True)
    scale = torch.tensor([1.0, 1.3, 0.7], dtype=DTYPE, requires_grad=True)

    def with_values(v):
        return ms.SparseBatch(matrices.pattern, v)

    assert torch.autograd.gradcheck(lambda v, x: with_values(v).matvec(x), (values, x))
    assert torch.autograd.gradcheck(lambda v: with_values(v).diagonal(), (values,))
    assert torch.autograd.gradcheck(
        lambda v, x, s: with_values(v).solve_triangular(x, upper=True, scale=s),
        (values, x, scale))
    rhs = randn(B, 5, seed=17)
    omega = torch.tensor([1.1, 0.9, 1.2], dtype=DTYPE, requires_grad=True)

    def solved(method, params=None, steps=3):
        return lambda v, *p: ms.run(method, ms.LinearSystem(with_values(v), rhs),
                                    params=dict(zip(params or (), p, strict=True)),
                                    fixed_iterations=steps).x

    assert torch.autograd.gradcheck(solved(ms.SOR(), ("omega",)), (values, omega))
    assert torch.autograd.gradcheck(solved(ms.SSOR(), ("omega",), 2), (values, omega))
    assert torch.autograd.gradcheck(solved(ms.ConjugateGradient()), (values,))
    assert torch.autograd.gradcheck(solved(ms.BiCGStab(), steps=2), (values,))


# --- errors -----------------------------------------------------------------------------------


def test_bad_patterns_and_values_are_named():
    crow, col = torch.tensor([0, 2, 3]), torch.tensor([0, 1, 1])
    pattern = ms.SparsePattern(crow, col)
    with pytest.raises(TypeError, match="crow_indices"):
        ms.SparsePattern(crow.float(), col)
    with pytest.raises(TypeError, match="col_indices"):
        ms.SparsePattern(crow, [0, 1, 1])
    with pytest.raises(ValueError, match="crow_indices"):
        ms.SparsePattern(torch.tensor([1, 2, 3]), col)
    with pytest.raises(ValueError, match="non-decreasing"):
        ms.SparsePattern(torch.tensor([0, 3, 2, 3]), col)
    with pytest.raises(ValueError, match="col_indices must lie"):
        ms.SparsePattern(crow, torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="strictly increasing"):
        ms.SparsePattern(crow, torch.tensor([1, 0, 1]))
    with pytest.raises(ValueError, match="strictly increasing"):
        ms.SparsePattern(crow, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="block"):
        ms.SparsePattern(torch.tensor([0, 1, 2]), torch.tensor([0, 0]), blocks=2)
    with pytest.raises(ValueError, match="values"):
        ms.SparseBatch(pattern, torch.tensor([[1.0, float("nan"), 2.0]]))
    with pytest.raises(ValueError, match="values"):
        ms.SparseBatch(pattern, torch.ones(2, 4))
    with pytest.raises(TypeError, match="values"):
        ms.SparseBatch(pattern, torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="pattern"):
        ms.SparseBatch((crow, col), torch.ones(2, 3))
    matrices = ms.SparseBatch(pattern, torch.ones(2, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="x must have shape"):
        matrices.matvec(torch.ones(3, 2, dtype=DTYPE))
    with pytest.raises(TypeError, match="x must be torch.float64"):
        matrices.matvec(torch.ones(2, 2))
    with pytest.raises(ValueError, match="scale"):
        matrices.solve_triangular(torch.ones(2, 2, dtype=DTYPE), scale=torch.ones(3))
    with pytest.raises(ValueError, match="part"):
        matrices.matvec(torch.ones(2, 2, dtype=DTYPE), "diagonal")
    with pytest.raises(ValueError, match="at least one instance"):
        matrices[torch.tensor([False, False])]
    with pytest.raises(ValueError, match="diagonal must have shape"):
        matrices.solve_triangular(torch.ones(2, 2, dtype=DTYPE), diagonal=torch.ones(3))
    with pytest.raises(ValueError, match="matrix must hold 3 matrices"):
        ms.LinearSystem(matrices, torch.ones(3, 2, dtype=DTYPE))
    with pytest.raises(TypeError, match="matrix and rhs"):
        ms.LinearSystem(matrices, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"matrices must all be 2 x 2"):
        ms.SparseBatch.stack([scipy.sparse.eye(2), scipy.sparse.eye(3)])
    with pytest.raises(TypeError, match="list of matrices"):
        ms.SparseBatch.stack(torch.eye(2))


def test_bad_method_settings_are_named():
    dense = instances(seed=18)
    problem = ms.LinearSystem(stored(dense, "shared"), randn(B, N, seed=19))
    for bad in (0.0, 2.0, -1.0):
        with pytest.raises(ValueError, match="omega must lie in"):
            ms.SOR(omega=bad)
    with pytest.raises(ValueError, match=r"params\['omega'\] must lie in"):
        ms.run(ms.SSOR(), problem, params={"omega": torch.tensor([1.0, 2.5, 1.0],
                                                                 dtype=DTYPE)})
    zero = dense.clone()
    zero[1, 3, 3] = 0.0
    with pytest.raises(ValueError, match="zero on its diagonal"):
        ms.run(ms.SOR(), ms.LinearSystem(stored(zero, "blocks"), problem.rhs))
    with pytest.raises(ValueError, match="preconditioner"):
        ms.ConjugateGradient(preconditioner="ilu")
    with pytest.raises(ValueError, match="takes no polynomial"):
        ms.run(ms.ConjugateGradient(preconditioner="jacobi"), problem,
               params=_polynomial(dense, 3))
    with pytest.raises(ValueError, match="positive diagonal"):
        ms.run(ms.ConjugateGradient(preconditioner="jacobi"),
               ms.LinearSystem(-dense, problem.rhs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_its_tensors():
    dense = instances(seed=20)
    rhs = randn(B, N, seed=21)
    for layout in LAYOUTS:
        matrices = stored(dense, layout).to("cuda")
        assert matrices.pattern.device.type == "cuda"
        problem = ms.LinearSystem(matrices, rhs.cuda())
        for method in (ms.SOR(omega=1.2), ms.BiCGStab(), ms.Jacobi(),
                       ms.ConjugateGradient(preconditioner="ic0")):
            sol = ms.run(method, problem, rtol=1e-10)
            assert sol.x.device.type == "cuda" and bool(sol.converged.all())
            torch.testing.assert_close(sol.x.cpu(), torch.linalg.solve(dense, rhs), rtol=0,
                                       atol=1e-8)


def test_a_shared_sparse_matrix_multiplies_rows_like_the_dense_one():
    """``LinearSystem.matvec`` with one torch CSR matrix for the batch: a contiguous ``(B, N)``
    product equal to the dense one, nonsymmetric too, with the gradient ``A^T g`` in ``x``."""
    dense = instances(seed=4, symmetric=False)[0]
    system = ms.LinearSystem(to_torch_csr(scipy.sparse.csr_matrix(dense.numpy())),
                             randn(B, N, seed=5))
    x = randn(B, N, seed=6).requires_grad_()
    product = system.matvec(x)
    assert product.is_contiguous()
    torch.testing.assert_close(product, x.detach() @ dense.T, rtol=1e-14, atol=1e-14)
    weights = randn(B, N, seed=7)
    (product * weights).sum().backward()
    torch.testing.assert_close(x.grad, weights @ dense, rtol=1e-14, atol=1e-14)


def _nine_point(n: int, seed: int, margin: float) -> scipy.sparse.csr_matrix:
    """SPD on a 9-point pattern (IC(0) then meets products ``L_ij L_kj`` inside a row); with
    ``margin < 1`` not diagonally dominant, where IC(0) can break down."""
    t = scipy.sparse.diags([1.0, 1.0, 1.0], [-1, 0, 1], shape=(n, n))
    pattern = scipy.sparse.kron(t, t).tocsr()
    rand = scipy.sparse.random(n * n, n * n, density=1.0, random_state=seed).multiply(pattern)
    off = -(rand + rand.T)
    dominance = np.asarray(abs(off).sum(axis=1)).ravel()
    matrix = scipy.sparse.csr_matrix(off + scipy.sparse.diags(dominance * margin + 1e-3))
    matrix.sort_indices()
    return matrix


@pytest.mark.parametrize("layout", LAYOUTS)
def test_incomplete_cholesky_is_the_reference_factor_and_fails_where_it_fails(layout):
    from metasolve.solvers.iccg import incomplete_cholesky_reference

    scipy_matrices = [_nine_point(5, 0, 1.05), _nine_point(5, 1, 1.05), _nine_point(5, 2, 0.6)]
    if layout == "blocks":  # a different pattern for the second instance (5-point)
        five = scipy.sparse.csr_matrix(scipy_matrices[1].multiply(
            scipy.sparse.kron(scipy.sparse.diags([1.0, 1.0, 1.0], [-1, 0, 1], shape=(5, 5)),
                              scipy.sparse.identity(5)) + scipy.sparse.kron(
                scipy.sparse.identity(5),
                scipy.sparse.diags([1.0, 1.0, 1.0], [-1, 0, 1], shape=(5, 5)))))
        five.setdiag(scipy_matrices[1].diagonal())
        five.sort_indices()
        scipy_matrices[1] = five
    matrices = ms.SparseBatch.stack(scipy_matrices)
    assert matrices.shared_pattern == (layout == "shared")
    factor, failed = matrices.incomplete_cholesky()
    dense = matrices.to_dense()
    for b in range(3):
        expected, expected_failed = incomplete_cholesky_reference(dense[b:b + 1],
                                                                  pattern=dense[b] != 0)
        assert bool(failed[b]) == bool(expected_failed[0])
        if not bool(failed[b]):
            torch.testing.assert_close(factor.to_dense()[b], expected[0], rtol=0, atol=1e-13)
    assert failed.tolist() == [False, False, True]
    # The two sweeps apply (L L^T)^-1.
    r = randn(3, 25, seed=4)
    z = factor.solve_triangular(factor.solve_triangular(r), transpose=True)
    torch.testing.assert_close(factor.solve_factored(r)[:2], z[:2], rtol=1e-14, atol=1e-14)
    lower = factor.to_dense()[:2]
    expected = torch.linalg.solve(lower @ lower.transpose(1, 2), r[:2].unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(z[:2], expected, rtol=1e-12, atol=1e-12)


def test_ic0_preconditioned_cg_solves_and_reports_breakdown():
    matrices = ms.SparseBatch.stack([_nine_point(6, 3, 1.05), _nine_point(6, 4, 0.6),
                                     _nine_point(6, 5, 1.05)])
    rhs = randn(3, 36, seed=2)
    problem = ms.LinearSystem(matrices, rhs)
    sol = ms.run(ms.ConjugateGradient(preconditioner="ic0"), problem, rtol=1e-10, maxiter=100)
    assert sol.status.tolist() == [int(ms.Status.CONVERGED), int(ms.Status.BREAKDOWN),
                                   int(ms.Status.CONVERGED)]
    assert int(sol.iterations[1]) == 0
    plain = ms.run(ms.ConjugateGradient(), problem, rtol=1e-10, maxiter=100)
    assert bool((sol.iterations[[0, 2]] < plain.iterations[[0, 2]]).all())
    expected = torch.linalg.solve(matrices.to_dense(), rhs.unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(sol.x[[0, 2]], expected[[0, 2]], rtol=1e-8, atol=1e-9)
    with pytest.raises(ValueError, match="SparseBatch.*ICCG"):
        ms.run(ms.ConjugateGradient(preconditioner="ic0"),
               ms.LinearSystem(matrices.to_dense(), rhs), rtol=1e-8)
    with pytest.raises(ValueError, match="no polynomial preconditioner"):
        ms.run(ms.ConjugateGradient(preconditioner="ic0"), problem,
               params={"coefficients": torch.ones(3, 2, dtype=DTYPE),
                       "lower": torch.ones(3, dtype=DTYPE), "upper": torch.ones(3, dtype=DTYPE)})


def test_incomplete_cholesky_names_what_its_pattern_lacks():
    lower_only = ms.SparsePattern(torch.tensor([0, 1, 3]), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="structurally symmetric"):
        ms.SparseBatch(lower_only, torch.ones(1, 3, dtype=DTYPE)).incomplete_cholesky()
    no_diagonal = ms.SparsePattern(torch.tensor([0, 1, 2]), torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="diagonal"):
        ms.SparseBatch(no_diagonal, torch.ones(1, 2, dtype=DTYPE)).incomplete_cholesky()
