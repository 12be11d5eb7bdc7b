"""Spectral building blocks for polynomial methods: the Lanczos probe against SciPy's eigsh and a
dense eigensolver, and Chebyshev iteration against its residual polynomial."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import metasolve as ms
from metasolve.polynomials import chebyshev_basis_apply, chebyshev_recurrence_coefficients
from metasolve.probes import lanczos_probe

DTYPE = torch.float64


def poisson2d(m: int) -> sp.csr_matrix:
    """5-point Laplacian on an m x m grid (Dirichlet), unscaled."""
    t = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m), dtype=np.float64)
    return (sp.kron(sp.eye(m), t) + sp.kron(t, sp.eye(m))).tocsr()


def test_lanczos_ritz_extremes_match_eigsh_on_2d_poisson():
    a = poisson2d(30)  # N = 900
    matrix = torch.sparse_csr_tensor(torch.tensor(a.indptr), torch.tensor(a.indices),
                                     torch.tensor(a.data, dtype=DTYPE), size=a.shape,
                                     check_invariants=True)
    probe = lanczos_probe(lambda v: (matrix @ v.T).T, size=900, steps=60, batch=2, seed=1)
    largest = spla.eigsh(a, k=1, which="LA", return_eigenvectors=False)[0]
    smallest = spla.eigsh(a, k=1, sigma=0, which="LM", return_eigenvectors=False)[0]
    for b in range(2):  # two start vectors
        theta = probe.ritz_values[b].numpy()
        assert smallest - 1e-10 <= theta.min() and theta.max() <= largest + 1e-10  # interlacing
        assert theta.max() == pytest.approx(largest, rel=1e-3)
        assert theta.min() == pytest.approx(smallest, rel=0.05)
        # The residual norm bounds the distance from a Ritz value to the spectrum.
        assert probe.residual_norms[b, -1] >= abs(theta.max() - largest) - 1e-12
    assert probe.matvecs == 60
    assert bool((probe.condition_estimate <= largest / smallest + 1e-8).all())


def test_a_full_lanczos_run_recovers_every_eigenvalue():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 12, 12, generator=g, dtype=DTYPE))
    eig = torch.rand(3, 12, generator=g, dtype=DTYPE) * 10 + 0.5
    matrices = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    probe = lanczos_probe(lambda v: torch.einsum("bij,bj->bi", matrices, v), size=12, steps=12,
                          batch=3)
    torch.testing.assert_close(probe.ritz_values, torch.sort(eig, dim=1).values, rtol=1e-9,
                               atol=1e-9)
    assert float(probe.residual_norms.max()) < 1e-8


def test_lanczos_probe_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps must be at most size"):
        lanczos_probe(lambda v: v, size=4, steps=5)
    with pytest.raises(TypeError, match="matvec"):
        lanczos_probe("A", size=4, steps=2)
    with pytest.raises(ValueError, match="matvec must return shape"):
        lanczos_probe(lambda v: v[:, :2], size=4, steps=2)


def test_chebyshev_residual_is_the_scaled_chebyshev_polynomial():
    # Diagonal A: r_k = p_k(A) r_0 entrywise, p_k(t) = T_k((theta - t)/delta) / T_k(theta/delta).
    eig = torch.linspace(1.0, 50.0, 40, dtype=DTYPE)
    rhs = torch.randn(2, 40, generator=torch.Generator().manual_seed(2), dtype=DTYPE)
    lower = torch.tensor([1.0, 0.5], dtype=DTYPE)
    upper = torch.tensor([50.0, 60.0], dtype=DTYPE)
    k = 9
    sol = ms.run(ms.Chebyshev(), ms.LinearSystem(torch.diag(eig), rhs),
                 params={"lower": lower, "upper": upper}, fixed_iterations=k, rtol=0.0)
    for b in range(2):
        theta, delta = float(upper[b] + lower[b]) / 2, float(upper[b] - lower[b]) / 2
        cheb = np.polynomial.chebyshev.Chebyshev.basis(k)
        p = cheb((theta - eig.numpy()) / delta) / cheb(theta / delta)
        expected = p * rhs[b].numpy()
        np.testing.assert_allclose((rhs[b] - eig * sol.x[b]).numpy(), expected, rtol=1e-9,
                                   atol=1e-12)


def test_chebyshev_with_exact_bounds_converges_at_the_minimax_rate():
    a = poisson2d(12)
    dense = torch.tensor(a.toarray(), dtype=DTYPE)
    eig = torch.linalg.eigvalsh(dense)
    rhs = torch.randn(3, 144, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    sol = ms.run(ms.Chebyshev(float(eig[0]), float(eig[-1])), ms.LinearSystem(dense, rhs),
                 rtol=1e-10, maxiter=2000)
    assert bool(sol.converged.all())
    torch.testing.assert_close(sol.x, torch.linalg.solve(dense, rhs.T).T, rtol=1e-7, atol=1e-9)
    # ||r_k|| / ||r_0|| <= 1 / T_k(theta / delta) <= 2 ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^k.
    kappa = float(eig[-1] / eig[0])
    q = (kappa**0.5 - 1) / (kappa**0.5 + 1)
    bound = 2 * q ** sol.iterations.double()
    assert bool((sol.residual_history[-1] / sol.residual_history[0] <= bound).all())
    assert int(sol.iterations.max()) <= int(np.ceil(np.log(1e-10 / 2) / np.log(q))) + 1


def test_chebyshev_rejects_bad_bounds():
    with pytest.raises(ValueError, match="0 < lower < upper"):
        ms.Chebyshev(lower=2.0, upper=1.0)
    system = ms.LinearSystem(torch.eye(3, dtype=DTYPE), torch.ones(2, 3, dtype=DTYPE))
    with pytest.raises(ValueError, match="0 < lower < upper"):
        ms.run(ms.Chebyshev(), system, params={"lower": torch.tensor([0.5, -1.0], dtype=DTYPE),
                                               "upper": torch.tensor([2.0, 2.0], dtype=DTYPE)})
    with pytest.raises(ValueError, match=r"params\['upper'\] must hold one value"):
        ms.run(ms.Chebyshev(), system, params={"upper": torch.ones(2, 3, dtype=DTYPE)})


def test_recurrence_with_chebyshev_coefficients_is_chebyshev_iteration():
    dense = torch.tensor(poisson2d(8).toarray(), dtype=DTYPE)
    rhs = torch.randn(2, 64, generator=torch.Generator().manual_seed(4), dtype=DTYPE)
    lower = torch.tensor([0.2, 0.3], dtype=DTYPE)
    upper = torch.tensor([8.0, 7.9], dtype=DTYPE)
    k = 30
    coefficients = chebyshev_recurrence_coefficients(lower, upper, k)
    system = ms.LinearSystem(dense, rhs)
    learned_form = ms.run(ms.PolynomialRecurrence(), system, params=coefficients,
                          fixed_iterations=k, rtol=0.0)
    classical = ms.run(ms.Chebyshev(), system, params={"lower": lower, "upper": upper},
                       fixed_iterations=k, rtol=0.0)
    torch.testing.assert_close(learned_form.x, classical.x, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(learned_form.residual_history, classical.residual_history,
                               rtol=1e-10, atol=1e-13)


def test_recurrence_refuses_to_run_past_its_coefficients():
    system = ms.LinearSystem(torch.eye(3, dtype=DTYPE), torch.ones(1, 3, dtype=DTYPE))
    theta = {"initial": torch.tensor([0.5], dtype=DTYPE),
             "momentum": torch.zeros(1, 2, dtype=DTYPE), "step": torch.full((1, 2), 0.5,
                                                                          dtype=DTYPE)}
    with pytest.raises(ValueError, match="maxiter <= 2"):
        ms.run(ms.PolynomialRecurrence(), system, params=theta, fixed_iterations=3, rtol=0.0)
    with pytest.raises(ValueError, match="needs params"):
        ms.run(ms.PolynomialRecurrence(), system, params={"initial": theta["initial"]})


def test_chebyshev_basis_apply_equals_the_dense_polynomial():
    g = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(2, 10, 10, generator=g, dtype=DTYPE))
    eig = torch.rand(2, 10, generator=g, dtype=DTYPE) * 4 + 1
    matrices = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    v = torch.randn(2, 10, generator=g, dtype=DTYPE)
    coefficients = torch.randn(2, 7, generator=g, dtype=DTYPE)
    lower = torch.tensor([0.8, 1.0], dtype=DTYPE)
    upper = torch.tensor([5.2, 5.0], dtype=DTYPE)
    out = chebyshev_basis_apply(lambda w: torch.einsum("bij,bj->bi", matrices, w), v,
                                coefficients, lower, upper)
    for b in range(2):
        series = np.polynomial.chebyshev.Chebyshev(coefficients[b].numpy())
        mapped = (2 * eig[b].numpy() - float(lower[b] + upper[b])) / float(upper[b] - lower[b])
        dense = q[b].numpy() @ np.diag(series(mapped)) @ q[b].numpy().T @ v[b].numpy()
        np.testing.assert_allclose(out[b].numpy(), dense, rtol=1e-11, atol=1e-11)
    # Degree 0 is the identity times c_0; a bad shape is refused.
    c0 = torch.tensor([[2.0], [3.0]], dtype=DTYPE)
    torch.testing.assert_close(chebyshev_basis_apply(lambda w: w, v, c0, lower, upper),
                               v * c0)
    with pytest.raises(ValueError, match="coefficients must have shape"):
        chebyshev_basis_apply(lambda w: w, v, coefficients[:1], lower, upper)


@pytest.mark.parametrize("terms", [1, 2, 8])
@pytest.mark.parametrize("batch_fastest", [False, True])
def test_chebyshev_basis_apply_in_place_is_the_recorded_result_bitwise(terms, batch_fastest):
    # Outside autograd the steps are written in place; the arithmetic, and so every bit of the
    # result, is the recorded version's (which the gradients go through).
    system = ms.sparse_system(poisson2d(12), 3, seed=2)
    v = system.rhs.T.contiguous().T if batch_fastest else system.rhs.clone()
    g = torch.Generator().manual_seed(3)
    coefficients = torch.randn(3, terms, generator=g, dtype=DTYPE)
    lower = torch.tensor([0.1, 0.2, 0.05], dtype=DTYPE)
    upper = torch.tensor([8.0, 8.1, 7.9], dtype=DTYPE)
    with torch.no_grad():
        fast = chebyshev_basis_apply(system.matvec, v, coefficients, lower, upper)
    recorded = chebyshev_basis_apply(system.matvec, v, coefficients.requires_grad_(), lower,
                                     upper)
    assert recorded.requires_grad
    assert torch.equal(fast, recorded.detach())
    untouched = v.clone()
    with torch.no_grad():
        # An operator that hands back its input is not written over.
        same = chebyshev_basis_apply(lambda w: w, v, coefficients.detach(), lower, upper)
    assert torch.equal(v, untouched)
    torch.testing.assert_close(same, chebyshev_basis_apply(lambda w: w.clone(), v,
                                                           coefficients.detach(), lower, upper))


def test_probe_interval_contains_the_top_of_the_spectrum():
    a = poisson2d(20)
    dense = torch.tensor(a.toarray(), dtype=DTYPE)
    eig = torch.linalg.eigvalsh(dense)
    probe = lanczos_probe(lambda v: v @ dense, size=400, steps=25, batch=3, seed=7)
    lower, upper = probe.interval()
    assert bool((upper >= eig[-1]).all())  # above lambda_max here (not in general) ...
    assert bool((upper <= eig[-1] * (1 + 1e-2)).all())  # ... and tight
    assert bool((lower > 0).all()) and bool((lower <= probe.ritz_values[:, 0]).all())


def _hidden_top(top: float, component: float, seed: int, size: int = 200) -> torch.Tensor:
    """A dense SPD matrix with ``size - 1`` eigenvalues evenly in [1, 2] and one at ``top``,
    whose eigenvector has only ``component`` along the start vector ``lanczos_probe`` draws
    from ``seed``: a short probe all but misses that eigenvalue."""
    start = torch.randn(1, size, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)[0]
    start = start / start.norm()
    other = torch.randn(size, generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE)
    other = other - (other @ start) * start
    u = other / other.norm() + component * start
    u = u / u.norm()
    # The Householder reflection that maps e_0 to u carries diag(eig)'s e_0 eigenvector to u.
    w = -u
    w[0] += 1.0
    w = w / w.norm()
    reflection = torch.eye(size, dtype=DTYPE) - 2 * torch.outer(w, w)
    eig = torch.linspace(1.0, 2.0, size, dtype=DTYPE)
    eig[0] = top
    return reflection @ torch.diag(eig) @ reflection


def test_probe_interval_upper_margin_scales_the_upper_end_exactly():
    a = torch.tensor(poisson2d(10).toarray(), dtype=DTYPE)
    probe = lanczos_probe(lambda v: v @ a, size=100, steps=10, batch=3, seed=2)
    lower, upper = probe.interval()
    torch.testing.assert_close(upper, probe.ritz_values[:, -1] + probe.residual_norms[:, -1],
                               rtol=0, atol=0)  # the default is the unwidened estimate
    for margin in (0.0, 0.05, 0.2, 1):
        wide_lower, wide_upper = probe.interval(upper_margin=margin)
        assert torch.equal(wide_lower, lower)
        assert torch.equal(wide_upper, upper * (1 + margin))


def test_probe_interval_rejects_a_negative_or_non_finite_margin():
    probe = lanczos_probe(lambda v: 2 * v, size=5, steps=2)
    for bad in (-0.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="upper_margin"):
            probe.interval(upper_margin=bad)
    with pytest.raises(TypeError, match="upper_margin"):
        probe.interval(upper_margin="0.05")


def test_recommended_margin_covers_a_top_eigenvalue_the_probe_misses():
    # lambda_max = 2.05, 2.5% above the rest, with a 1e-8 component along the start vector:
    # 10 Lanczos steps do not see it, and the probe's upper end falls about 2.4% short.
    a = _hidden_top(2.05, 1e-8, seed=0)
    top = float(torch.linalg.eigvalsh(a)[-1])
    probe = lanczos_probe(lambda v: v @ a, size=200, steps=10, seed=0)
    assert float(probe.interval()[1][0]) < top / 1.02
    assert float(probe.interval(upper_margin=0.05)[1][0]) > top


def test_no_margin_covers_a_top_eigenvalue_far_from_the_start_vector():
    # The documented limit: at 25% above the rest, the hidden eigenvalue lies beyond the
    # recommended margin, beyond 0.2, and beyond the Zhou-Li estimate theta_s + beta_s
    # (beta_s = ||residual norms||_2 for a Lanczos probe).
    a = _hidden_top(2.5, 1e-8, seed=0)
    top = float(torch.linalg.eigvalsh(a)[-1])
    probe = lanczos_probe(lambda v: v @ a, size=200, steps=10, seed=0)
    for margin in (0.0, 0.05, 0.2):
        assert float(probe.interval(upper_margin=margin)[1][0]) < top
    beta = torch.linalg.vector_norm(probe.residual_norms, dim=1)
    assert float(probe.ritz_values[0, -1] + beta[0]) < top
    # Lanczos amplifies even a round-off component of an eigenvalue far above the rest, so
    # the same construction at 100 is found; the miss needs a top close to the bulk.
    far = _hidden_top(100.0, 0.0, seed=0)
    found = lanczos_probe(lambda v: v @ far, size=200, steps=10, seed=0)
    assert float(found.interval()[1][0]) >= 100.0 * (1 - 1e-10)


def test_minimal_residual_is_attained_and_below_every_method_at_equal_products():
    from metasolve.probes import minimal_residual

    a = poisson2d(12)  # N = 144, condition number about 60
    dense = torch.tensor(a.toarray(), dtype=DTYPE)
    rhs = torch.randn(3, 144, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    steps = 25
    floor = minimal_residual(lambda v: v @ dense, rhs, steps)
    # Attained: the least-squares polynomial in the Krylov space, built independently from the
    # dense eigendecomposition in a Chebyshev basis vanishing at 0 (well conditioned here).
    values, vectors = torch.linalg.eigh(dense)
    coefficients = rhs @ vectors
    s = 2 * values / values.max() - 1
    terms = [torch.ones_like(s), s]
    for _ in range(steps - 1):
        terms.append(2 * s * terms[-1] - terms[-2])
    basis = torch.stack([terms[j] - (-1.0) ** j for j in range(1, steps + 1)], dim=1)
    for i in range(3):
        weighted = basis * coefficients[i].unsqueeze(1)
        fit = torch.linalg.lstsq(weighted, coefficients[i].unsqueeze(1)).solution
        best = torch.linalg.vector_norm(coefficients[i] - (weighted @ fit)[:, 0]) \
            / torch.linalg.vector_norm(rhs[i])
        assert float(floor[i]) == pytest.approx(float(best), rel=1e-8)
    # Below CG and Chebyshev with exact bounds after the same number of products.
    system = ms.LinearSystem(dense, rhs)
    lower, upper = values.min().expand(3).contiguous(), values.max().expand(3).contiguous()
    for method, params in ((ms.ConjugateGradient(), {}),
                           (ms.Chebyshev(), {"lower": lower, "upper": upper})):
        x = ms.run(method, system, params=params, fixed_iterations=steps, rtol=0.0).x
        residual = torch.linalg.vector_norm(rhs - x @ dense, dim=1) \
            / torch.linalg.vector_norm(rhs, dim=1)
        assert bool((floor <= residual * (1 + 1e-10)).all())


def test_minimal_residual_rejects_bad_arguments():
    from metasolve.probes import minimal_residual

    rhs = torch.ones(2, 5, dtype=DTYPE)
    with pytest.raises(ValueError, match="steps"):
        minimal_residual(lambda v: v, rhs, 6)
    with pytest.raises(ValueError, match="steps"):
        minimal_residual(lambda v: v, rhs, 0)
    with pytest.raises(TypeError, match="matvec"):
        minimal_residual("A", rhs, 2)
    with pytest.raises(ValueError, match="rhs row 1 is zero"):
        minimal_residual(lambda v: v, torch.stack([rhs[0], torch.zeros(5, dtype=DTYPE)]), 2)
    with pytest.raises(ValueError, match="rhs"):
        minimal_residual(lambda v: v, torch.full((1, 5), float("nan"), dtype=DTYPE), 2)
    # An invariant Krylov subspace (A = 2 I): the floor is at round-off, not NaN.
    assert float(minimal_residual(lambda v: 2 * v, rhs, 3).max()) < 1e-12
