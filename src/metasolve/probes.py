"""Matrix-free spectral probes: what a learned polynomial method may know about an operator
(AutoSpec summary, "spectral probes": approximate eigenvalues and their residual norms).

:func:`lanczos_probe` runs ``s`` steps of the Lanczos process from a random start vector, using
only products ``A @ v``, on a batch of symmetric operators at once. Its Ritz values (the
eigenvalues of the ``s x s`` tridiagonal matrix ``T_s``) approximate the spectrum, the extreme
ones fastest, and never leave ``[lambda_min(A), lambda_max(A)]``. The residual norm of the Ritz
pair ``(theta_i, V y_i)`` is ``||A V y_i - theta_i V y_i|| = |beta_s (y_i)_s|``, which says how far
each Ritz value can be trusted. The probe costs ``s`` matrix-vector products, which
``Probe.matvecs`` reports so that every cost comparison can include it.

The basis is fully reorthogonalized (``s`` is small), so the probe is stable in floating point.

Example:
    >>> import torch
    >>> from metasolve.probes import lanczos_probe
    >>> A = torch.diag(torch.linspace(1.0, 100.0, 50, dtype=torch.float64))
    >>> probe = lanczos_probe(lambda v: v @ A, size=50, steps=20, batch=1, seed=0)
    >>> round(float(probe.ritz_values[0, -1]), 3), probe.matvecs
    (100.0, 20)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .validation import check_count, check_nonnegative, check_tensor


@dataclass(frozen=True)
class Probe:
    """Result of :func:`lanczos_probe` for a batch of ``B`` operators.

    Attributes:
        ritz_values: ``(B, s)``, ascending.
        residual_norms: ``(B, s)``, ``|beta_s (y_i)_s|`` for each Ritz pair, in the same order.
        matvecs: products ``A @ v`` spent per operator.
    """

    ritz_values: torch.Tensor
    residual_norms: torch.Tensor
    matvecs: int

    @property
    def condition_estimate(self) -> torch.Tensor:
        """``theta_max / theta_min`` per operator (a lower bound on the condition number)."""
        return self.ritz_values[:, -1] / self.ritz_values[:, 0]

    def interval(self, upper_margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)`` per operator: the extreme Ritz values widened by their residual
        norms, the upper end then multiplied by ``1 + upper_margin``.

        An estimate, not a guaranteed enclosure: for a symmetric ``A`` each Ritz value lies
        within its residual norm of *some* eigenvalue, which need not be the extreme one, so
        when the probe has not found the top of the spectrum the upper end lies below
        ``lambda_max`` (and a Chebyshev method on this interval can diverge: the driver then
        reports ``DIVERGED``). Likewise the lower end may lie above ``lambda_min``; it is
        floored at a tenth of the smallest Ritz value, so that it stays positive.

        ``upper_margin`` (default 0, the interval every recorded AutoSpec result used) widens
        the upper end for callers that need it above ``lambda_max``. Measured for Lanczos
        probes of 10, 20 and 32 steps, 8 random starts each, on the AutoSpec transfer set and
        36 SPD matrices outside it (scikit-fem Laplacians, graph Laplacians, random sparse SPD;
        ``benchmarks/probe_margin.py``, docs/RESULTS.md): with margin 0 the upper end was below
        ``lambda_max`` for 2.5% of the probes on the transfer set and 1.5% outside (by up to
        2.8%), and Chebyshev iteration on such an interval ended at relative residuals up to
        2e11 after 100 steps; margin 0.02 still failed on the transfer set; **0.05**, the
        recommended margin, was above ``lambda_max`` on every measured probe and cost
        Chebyshev almost nothing against the exact top. The Zhou-Li estimate
        ``theta_s + beta_s`` (``beta_s``, the Lanczos residual vector's norm, is the 2-norm of
        ``residual_norms`` for a Lanczos probe) never failed either, but lies 22% above
        ``lambda_max`` in the median (0.05: 5%). The margins were measured for Lanczos probes
        only, not for :func:`subspace_probe`.

        No margin and no matrix-free estimate is safe for every operator: a top eigenvalue a
        little above the rest whose eigenvector is nearly orthogonal to the start vector stays
        out of the Krylov space (one far above the rest is found even from a round-off
        component, which the Lanczos polynomial amplifies).

        Raises:
            TypeError: ``upper_margin`` not a real number.
            ValueError: ``upper_margin`` negative or not finite.
        """
        upper_margin = check_nonnegative("upper_margin", upper_margin)
        low = self.ritz_values[:, 0] - self.residual_norms[:, 0]
        high = self.ritz_values[:, -1] + self.residual_norms[:, -1]
        return torch.maximum(low, self.ritz_values[:, 0] / 10), high * (1 + upper_margin)


def _lanczos(matvec, start: torch.Tensor, steps: int):
    """``steps`` Lanczos steps from ``start`` ``(B, N)`` (normalized here), fully
    reorthogonalized: ``(basis (B, steps, N), tridiagonal (B, steps, steps), last beta (B,))``.

    The basis is written into one tensor allocated at the start and the reorthogonalization
    reads its filled rows in place with two batched products, instead of stacking the basis
    anew at every step (the same arithmetic: on 2D Poisson with 102,400 unknowns and 2
    operators, 10 steps took 106 ms stacked and take 74 ms, 32 steps 776 and 492 ms;
    ``benchmarks/probe_cost.py``). Under autograd the rows it reads are copied first, since a
    view saved for the backward pass must not be overwritten by the rows written later."""
    batch, size = start.shape
    basis = start.new_empty(batch, steps, size)
    basis[:, 0] = start / torch.linalg.vector_norm(start, dim=1, keepdim=True)
    alphas, betas = start.new_empty(batch, steps), start.new_empty(batch, steps)
    tiny = torch.finfo(start.dtype).tiny
    track = torch.is_grad_enabled()
    for j in range(steps):
        v = basis[:, j].clone() if track else basis[:, j]
        w = matvec(v)
        if tuple(w.shape) != (batch, size):
            raise ValueError(f"matvec must return shape ({batch}, {size}), got {tuple(w.shape)}")
        alphas[:, j] = (w * v).sum(dim=1)
        # Full reorthogonalization (twice is enough) against every basis vector so far.
        done = basis[:, :j + 1]  # (B, j+1, N), a view
        if track:
            done = done.clone()
        for _ in range(2):
            w = w - torch.bmm(torch.bmm(done, w.unsqueeze(2)).mT, done).squeeze(1)
        beta = torch.linalg.vector_norm(w, dim=1)
        betas[:, j] = beta
        if j + 1 < steps:
            basis[:, j + 1] = w / beta.clamp_min(tiny).unsqueeze(1)
    off = betas[:, :-1]
    tridiagonal = torch.diag_embed(alphas) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    return basis, tridiagonal, betas[:, -1]


def lanczos_probe(matvec: Callable[[torch.Tensor], torch.Tensor], size: int, steps: int,
                  batch: int = 1, seed: int = 0, dtype: torch.dtype = torch.float64,
                  device=None) -> Probe:
    """``steps`` Lanczos steps on ``batch`` symmetric operators of order ``size``.

    Args:
        matvec: ``(B, N) -> (B, N)``, row ``b`` mapped by operator ``b`` (the only access to it).
        size: ``N``.
        steps: ``s``, at most ``N``; the Lanczos process stops early (an invariant subspace) only
            in exact arithmetic, and a zero ``beta`` is kept harmless here.
        seed: the random start vector's seed (Gaussian, normalized).
    """
    size = check_count("size", size, minimum=1)
    steps = check_count("steps", steps, minimum=1)
    batch = check_count("batch", batch, minimum=1)
    if steps > size:
        raise ValueError(f"steps must be at most size ({size}), got {steps}")
    if not callable(matvec):
        raise TypeError(f"matvec must be callable, got {type(matvec).__name__}")
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(batch, size, generator=generator, dtype=dtype).to(device)
    _, tridiagonal, beta = _lanczos(matvec, start, steps)
    values, vectors = torch.linalg.eigh(tridiagonal)
    residuals = (beta.unsqueeze(1) * vectors[:, -1, :]).abs()
    return Probe(ritz_values=values, residual_norms=residuals, matvecs=steps)


def rayleigh_ritz(basis: torch.Tensor, image: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rayleigh-Ritz on orthonormal blocks ``basis`` ``(B, N, k)`` with ``image = A basis``:
    ``(Ritz values (B, k) ascending, Ritz vectors (B, N, k), residual norms (B, k))``, the
    residual of pair ``i`` being ``||A v_i - theta_i v_i||``."""
    small = basis.mT @ image
    values, vectors = torch.linalg.eigh((small + small.mT) / 2)
    ritz_vectors = basis @ vectors
    residuals = torch.linalg.vector_norm(image @ vectors - ritz_vectors * values.unsqueeze(1),
                                         dim=1)
    return values, ritz_vectors, residuals


def subspace_probe(matvec: Callable[[torch.Tensor], torch.Tensor], size: int, block: int,
                   iterations: int, batch: int = 1, seed: int = 0,
                   dtype: torch.dtype = torch.float64, device=None) -> Probe:
    """A subspace-iteration probe (the AutoSpec summary's probe for matrix functions): a random
    block of ``block`` vectors, multiplied by ``A`` and re-orthonormalized ``iterations`` times,
    then Rayleigh-Ritz on the block. Its Ritz values move towards the top of the spectrum as
    ``iterations`` grows (the probe sharpens there); residual norms ``||A V y - theta V y||``.
    Costs ``block * (iterations + 1)`` products.
    """
    size = check_count("size", size, minimum=1)
    block = check_count("block", block, minimum=1)
    iterations = check_count("iterations", iterations)
    batch = check_count("batch", batch, minimum=1)
    if block > size:
        raise ValueError(f"block must be at most size ({size}), got {block}")
    if not callable(matvec):
        raise TypeError(f"matvec must be callable, got {type(matvec).__name__}")

    def apply(vectors):  # (B, N, k) -> A (B, N, k), one product per column
        return torch.stack([matvec(vectors[:, :, j]) for j in range(vectors.shape[2])], dim=2)

    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(batch, size, block, generator=generator,
                                        dtype=dtype).to(device))[0]
    for _ in range(iterations):
        basis = torch.linalg.qr(apply(basis))[0]
    values, _, residuals = rayleigh_ritz(basis, apply(basis))
    return Probe(ritz_values=values, residual_norms=residuals,
                 matvecs=block * (iterations + 1))


def minimal_residual(matvec: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                     steps: int) -> torch.Tensor:
    """``(B,)``: ``min ||p(A) b|| / ||b||`` over polynomials ``p`` of degree at most ``steps``
    with ``p(0) = 1``, for each row ``b`` of ``rhs``: the relative residual of MINRES after
    ``steps`` products, computed in a fully reorthogonalized Lanczos basis so that it is the
    exact-arithmetic optimum to round-off.

    No method whose iterate after ``steps`` products is ``q(A) b`` (Richardson, Chebyshev, any
    fixed or learned polynomial, CG) can have a smaller residual on that ``b``: this is the
    floor a comparison "at equal products" is measured against. From ``A V_k = V_{k+1} T~_k``
    (``V_k`` the Lanczos basis started at ``b / ||b||``, ``T~_k`` the ``(k + 1) x k`` Lanczos
    tridiagonal) the relative residual of ``x = ||b|| V_k y`` is ``||e_1 - T~_k y||``, a small
    least-squares problem. An invariant Krylov subspace (Lanczos breakdown) gives a floor at
    round-off, as it should: the solution lies in it.

    Memory: the basis holds ``steps * N`` numbers per row.
    """
    steps = check_count("steps", steps, minimum=1)
    check_tensor("rhs", rhs, ndim=2)
    zero = torch.linalg.vector_norm(rhs, dim=1) == 0
    if bool(zero.any()):
        raise ValueError(f"rhs row {int(zero.nonzero()[0])} is zero: its relative residual is "
                         "undefined")
    if steps > rhs.shape[1]:
        raise ValueError(f"steps must be at most the size ({rhs.shape[1]}), got {steps}")
    if not callable(matvec):
        raise TypeError(f"matvec must be callable, got {type(matvec).__name__}")
    _, tridiagonal, beta = _lanczos(matvec, rhs, steps)
    last = torch.zeros_like(tridiagonal[:, :1, :])
    last[:, 0, -1] = beta
    extended = torch.cat([tridiagonal, last], dim=1)  # T~_k, (B, k + 1, k)
    target = torch.zeros(extended.shape[0], steps + 1, 1, dtype=rhs.dtype, device=rhs.device)
    target[:, 0, 0] = 1.0
    # An orthogonal-factorization solver, not the normal equations (T~_k may be as
    # ill-conditioned as A), and one that accepts rank deficiency: after an exact breakdown the
    # Lanczos vectors are zero and so are T~_k's later columns.
    y = torch.linalg.lstsq(extended, target, driver="gelsd").solution
    return torch.linalg.vector_norm(target - extended @ y, dim=(1, 2))


def lanczos_function(matvec: Callable[[torch.Tensor], torch.Tensor], vector: torch.Tensor,
                     steps: int, function: Callable[[torch.Tensor], torch.Tensor]
                     ) -> torch.Tensor:
    """The Lanczos approximation of ``f(A) b`` from ``steps`` products:
    ``||b|| V_s f(T_s) e_1`` (the classical Krylov baseline for matrix functions; exact when
    ``f`` is a polynomial of degree below ``s``). ``function`` maps eigenvalues to ``f``."""
    steps = check_count("steps", steps, minimum=1)
    check_tensor("vector", vector, ndim=2)
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    if steps > vector.shape[1]:
        raise ValueError(f"steps must be at most the size ({vector.shape[1]}), got {steps}")
    basis, tridiagonal, _ = _lanczos(matvec, vector, steps)
    values, vectors = torch.linalg.eigh(tridiagonal)
    coefficients = vectors @ (function(values) * vectors[:, 0, :]).unsqueeze(2)  # f(T) e_1
    norm = torch.linalg.vector_norm(vector, dim=1, keepdim=True)
    return norm * torch.einsum("bk,bkn->bn", coefficients[..., 0], basis)
