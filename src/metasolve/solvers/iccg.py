"""ICCG(alpha): conjugate gradients preconditioned with the zero fill-in incomplete Cholesky
factorization of the shifted matrix ``A + alpha I`` (GBMS paper, sec. 4.2; the paper's
implementation follows Huang et al., 2009, which is the standard ICCG).

``M = L L^T`` with ``L`` the IC(0) factor of ``A + alpha I``: lower triangular, nonzero only where
the lower triangle of ``A`` is, and ``(L L^T)_ij = (A + alpha I)_ij`` on that pattern. Small
``alpha`` keeps ``M`` close to ``A`` but the factorization may meet a non-positive pivot and
fail; large ``alpha`` makes it succeed but ``M`` a poorer model of ``A``. The paper learns
``alpha`` per task (``theta = alpha``); a failed factorization is reported per instance as
``Status.BREAKDOWN`` and never spoils the other instances of the batch.

Everything is batched over instances with per-instance ``alpha`` and exactly differentiable in
``alpha``. :func:`incomplete_cholesky` works column by column (left-looking), vectorized over the
batch and the rows of each column, and touches only the band of ``A`` where its pattern lives,
so a banded matrix (the elastic beam) costs ``O(N * bandwidth^2)`` per instance. Training
unrolls up to ``N`` iterations, so the gradient is built for speed (docs/architecture.md, sec. 4,
"ICCG"): the factor's derivative in ``alpha`` is carried beside it in the same sweep, once per
solve, and the iterations' preconditioner and matrix products have analytic backward passes
(:class:`_Precondition`, :class:`_BandMatvec`), so autograd records two nodes per iteration
instead of hundreds. The products read ``A``'s lower band by diagonals, the stored factor by
blocks; both reads bound their cost, so ``A x`` and the next ``A p`` share one. A matrix that
itself requires a gradient takes the plain autograd path (:func:`incomplete_cholesky_reference`).

Example:
    >>> import torch, metasolve as ms
    >>> A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    >>> system = ms.LinearSystem(A, torch.ones(2, 3, dtype=torch.float64))
    >>> sol = ms.run(ICCG(), system, rtol=1e-10, params={"alpha": torch.tensor([0.0, 0.5],
    ...              dtype=torch.float64)})
    >>> sol.iterations.tolist()  # alpha = 0: IC(0) of a tridiagonal matrix is exact
    [1, 3]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ..problems import LinearSystem
from ..sparse import SparseBatch
from ..validation import check_finite_number, check_instance_scalars
from .base import IterativeMethod, State, batched_dot, safe_ratio
from .registry import register_method


def _dense_batch(problem: LinearSystem) -> torch.Tensor:
    """``A`` as a dense ``(B, N, N)`` tensor (a shared matrix is expanded, not copied)."""
    matrix = problem.matrix.to_dense() if problem.sparse else problem.matrix
    if matrix.ndim == 2:
        matrix = matrix.expand(problem.batch_size, -1, -1)
    return matrix


def _shifted_band(matrix: torch.Tensor, shift: torch.Tensor | None, pattern: torch.Tensor | None):
    """The band of the lower triangle of ``matrix + shift I`` by columns, for IC(0).

    Returns ``(lower, keep, inside, flat, bw)``: ``lower[:, k, r] = (A + alpha I)[k + r, k]``,
    ``keep`` where ``L`` may be nonzero there, ``inside`` where ``k + r < N``, and ``flat`` the
    index of ``(k + r, k)`` in the flattened ``(N, N)`` matrix.
    """
    batch, n, _ = matrix.shape
    device = matrix.device
    eye = torch.eye(n, dtype=torch.bool, device=device)
    if pattern is None:
        pattern = matrix.detach() != 0
    pattern = torch.tril(pattern.expand(batch, n, n) | eye)
    rows, cols = pattern.nonzero()[:, 1:].unbind(1)
    bw = int((rows - cols).max()) if rows.numel() else 0
    # Column k's entries can be nonzero at rows k..k+bw only: work on the band
    # band[:, k, r] = (A + alpha I)[k + r, k], gathered once (one gather, one backward scatter).
    offsets = torch.arange(bw + 1, device=device)
    k_idx, r_idx = torch.meshgrid(torch.arange(n, device=device), offsets, indexing="ij")
    inside = (k_idx + r_idx) < n
    flat = torch.where(inside, (k_idx + r_idx) * n + k_idx, 0).reshape(-1)
    lower = matrix.reshape(batch, n * n)[:, flat].reshape(batch, n, bw + 1) * inside
    if shift is not None:
        lower = torch.cat([lower[:, :, :1] + shift.reshape(-1, 1, 1), lower[:, :, 1:]], dim=2)
    keep = pattern.reshape(batch, n * n)[:, flat].reshape(batch, n, bw + 1) & inside
    return lower, keep, inside, flat, bw


def _unband(band: torch.Tensor, inside: torch.Tensor, flat: torch.Tensor, n: int) -> torch.Tensor:
    """The dense ``(B, N, N)`` matrix of column-band storage ``band[:, k, r] = L[k + r, k]``."""
    batch = band.shape[0]
    factor = torch.zeros(batch, n * n, dtype=band.dtype, device=band.device).index_add(
        1, flat[inside.reshape(-1)], (band * inside).reshape(batch, -1)[:, inside.reshape(-1)])
    return factor.reshape(batch, n, n)


def incomplete_cholesky_reference(matrix: torch.Tensor, shift: torch.Tensor | None = None,
                                  pattern: torch.Tensor | None = None
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`incomplete_cholesky` differentiated by autograd through every column: the
    reference the fast path is tested against, and the path taken when ``matrix`` itself
    requires a gradient. Same arguments and results."""
    batch, n, _ = matrix.shape
    dtype, device = matrix.dtype, matrix.device
    lower, keep, inside, flat, bw = _shifted_band(matrix, shift, pattern)
    # window[:, r, c] = L[k + r, k - bw + c]: the bw previous columns at the rows of column k.
    window = torch.zeros(batch, bw + 1, bw, dtype=dtype, device=device)
    failed = torch.zeros(batch, dtype=torch.bool, device=device)
    columns = []
    for k, (seg, mask) in enumerate(zip(lower.unbind(1), keep.unbind(1), strict=True)):
        if bw:
            seg = seg - (window * window[:, :1, :]).sum(dim=2)
        # Once an instance fails its later columns are not needed; where() with finite
        # stand-ins (never a product with a discarded inf) keeps values and gradients finite.
        ok = ~failed & (seg[:, 0] > 0) & torch.isfinite(seg).all(dim=1)
        failed = ~ok
        safe = torch.where(ok.unsqueeze(1), seg, torch.ones_like(seg))
        diag = torch.sqrt(safe[:, :1])
        below = safe[:, 1:] / diag * (mask[:, 1:] & ok.unsqueeze(1))
        column = torch.cat([diag, below], dim=1)  # L[k + r, k], r = 0..bw
        columns.append(column)
        if bw and k + 1 < n:
            # Shift the window up one row and left one column; the new column enters right.
            window = torch.cat([torch.cat([window[:, 1:, 1:], below.unsqueeze(2)], dim=2),
                                window.new_zeros(batch, 1, bw)], dim=1)
    factor = _unband(torch.stack(columns, dim=1), inside, flat, n)
    eye = torch.eye(n, dtype=dtype, device=device)
    factor = torch.where(failed.reshape(-1, 1, 1), eye, factor)
    return factor, failed


def _ic0_with_tangent(matrix: torch.Tensor, shift: torch.Tensor | None = None,
                      pattern: torch.Tensor | None = None, tangent: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """IC(0) of ``matrix + shift I`` and its derivative in the shift, without autograd:
    ``(L, dL / d alpha, failed)``, both factors dense ``(B, N, N)``, ``L = I`` and
    ``dL / d alpha = 0`` where ``failed``; the derivative is ``None`` if not ``tangent``.

    The columns follow :func:`incomplete_cholesky_reference`'s arithmetic operation for
    operation, so ``L`` and ``failed`` are the reference's; the tangent is that recurrence
    differentiated by hand (forward mode: one scalar ``alpha`` per instance) and carried beside
    it. Column ``k``'s window of previous columns is a slice of one preallocated matrix, written
    in place column by column (no copies, no graph).
    """
    with torch.no_grad():
        batch, n, _ = matrix.shape
        dtype, device = matrix.dtype, matrix.device
        lower, keep, _, _, bw = _shifted_band(
            matrix.detach(), None if shift is None else shift.detach(), pattern)
        # full[:, i, j + bw] = L[i, j], with bw zero columns on the left and bw + 1 zero rows
        # below, so that column k's window L[k + r, k - bw + c] (r = 0..bw, c = 0..bw-1) is
        # the slice full[:, k:k + bw + 1, k:k + bw]; dfull holds dL / d alpha alike.
        full = torch.zeros(batch, n + bw + 1, n + bw, dtype=dtype, device=device)
        dfull = torch.zeros_like(full) if tangent else None
        failed = torch.zeros(batch, dtype=torch.bool, device=device)
        seed = torch.zeros(batch, bw + 1, dtype=dtype, device=device)
        seed[:, 0] = 1.0  # d(A + alpha I)[k + r, k] / d alpha
        for k, (seg, mask) in enumerate(zip(lower.unbind(1), keep.unbind(1), strict=True)):
            dseg = seed
            if bw:
                window = full[:, k:k + bw + 1, k:k + bw]
                seg = seg - (window * window[:, :1, :]).sum(dim=2)
                if tangent:
                    dwindow = dfull[:, k:k + bw + 1, k:k + bw]
                    dseg = seed - (dwindow * window[:, :1, :]
                                   + window * dwindow[:, :1, :]).sum(dim=2)
            ok = ~failed & (seg[:, 0] > 0) & torch.isfinite(seg).all(dim=1)
            failed = ~ok
            safe = torch.where(ok.unsqueeze(1), seg, torch.ones_like(seg))
            diag = torch.sqrt(safe[:, :1])
            scale = mask[:, 1:] & ok.unsqueeze(1)
            below = safe[:, 1:] / diag * scale
            rows = min(bw, n - 1 - k)  # rows of column k below the diagonal inside the matrix
            full[:, k, k + bw] = diag[:, 0]
            full[:, k + 1:k + 1 + rows, k + bw] = below[:, :rows]
            if tangent:
                # d sqrt(s_0) = ds_0 / (2 sqrt(s_0)); d(s_i / d) = (ds_i - (s_i / d) dd) / d.
                dseg = torch.where(ok.unsqueeze(1), dseg, 0.0)
                ddiag = dseg[:, :1] / (2 * diag)
                dbelow = (dseg[:, 1:] - below * ddiag) / diag * scale
                dfull[:, k, k + bw] = ddiag[:, 0]
                dfull[:, k + 1:k + 1 + rows, k + bw] = dbelow[:, :rows]
        failed_ = failed.reshape(-1, 1, 1)
        factor = torch.where(failed_, torch.eye(n, dtype=dtype, device=device),
                             full[:, :n, bw:])
        derivative = torch.where(failed_, 0.0, dfull[:, :n, bw:]) if tangent else None
    return factor, derivative, failed


def incomplete_cholesky(matrix: torch.Tensor, shift: torch.Tensor | None = None,
                        pattern: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """IC(0) of ``matrix + shift I`` for a batch: ``(L, failed)``.

    Column ``k`` of ``L`` (left-looking):
    ``v = a_{k:, k} - L_{k:, :k} L_{k, :k}^T``, ``L_kk = sqrt(v_0)``, ``L_ik = v_i / L_kk`` where
    ``(i, k)`` is in the pattern, else 0 (zero fill-in). With a full pattern this is the Cholesky
    factor.

    Args:
        matrix: ``(B, N, N)`` symmetric; only its lower triangle is read.
        shift: ``(B,)`` diagonal shifts ``alpha`` (default 0).
        pattern: ``(B, N, N)`` or ``(N, N)`` bool, where ``L`` may be nonzero; default the
            nonzeros of ``matrix`` (the diagonal always belongs to it).

    Returns:
        ``L`` ``(B, N, N)`` lower triangular, and ``failed`` ``(B,)`` bool: a pivot was
        non-positive or a column non-finite. A failed instance gets ``L = I`` (finite, so it
        cannot poison the batch's values or gradients); its caller must not use it.

    Differentiable in ``shift`` exactly: the derivative ``dL / d alpha`` is computed beside
    ``L`` in the same sweep (:func:`_ic0_with_tangent`) and the backward pass is one product
    with it. A ``matrix`` that requires a gradient takes
    :func:`incomplete_cholesky_reference` instead (autograd through every column).
    """
    if matrix.requires_grad:
        return incomplete_cholesky_reference(matrix, shift, pattern)
    factor, tangent, failed = _ic0_with_tangent(matrix, shift, pattern)
    if shift is not None and shift.requires_grad:
        factor = _ShiftedFactor.apply(shift, factor, tangent)
    return factor, failed


class _ShiftedFactor(torch.autograd.Function):
    """``L(alpha)`` with its precomputed derivative: the backward is ``<grad_L, dL/dalpha>``."""

    @staticmethod
    def forward(ctx, shift, factor, tangent):
        ctx.save_for_backward(tangent)
        return factor.clone()

    @staticmethod
    def backward(ctx, grad):
        (tangent,) = ctx.saved_tensors
        return (grad * tangent).sum(dim=(1, 2)), None, None


def _bandwidth(matrix: torch.Tensor) -> int:
    """The largest ``|i - j|`` with ``A_ij != 0`` over the batch."""
    rows, cols = (matrix.detach() != 0).any(dim=0).nonzero().unbind(1)
    return int((rows - cols).abs().max()) if rows.numel() else 0


def _band(matrix: torch.Tensor, bw: int) -> torch.Tensor:
    """The lower band of a symmetric ``A`` by diagonals, ``(B, bw + 1, N)``:
    ``band[:, o, i] = A[i + o, i]`` (0 where ``i + o >= N``); the upper band is its mirror.

    One contiguous row per diagonal and half the full band: the products of the iterations are
    bound by reading the band, so storing each entry once is what makes them fast."""
    batch, n, _ = matrix.shape
    o, i = torch.meshgrid(torch.arange(bw + 1), torch.arange(n), indexing="ij")
    inside = ((i + o) < n).to(matrix.device)
    flat = torch.where(inside, (i + o) * n + i, 0).reshape(-1).to(matrix.device)
    return matrix.reshape(batch, n * n)[:, flat].reshape(batch, bw + 1, n) * inside


def _band_matvec(band: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A x`` for the symmetric ``A`` of :func:`_band`, ``x`` ``(B, N)`` or ``(B, k, N)`` (``k``
    vectors at once, for one read of the band): ``O(N * bandwidth)`` per instance and vector.

    Each stored diagonal is used twice while it is in cache, for ``A[i + o, i]`` and its mirror
    ``A[i, i + o]``, by fused multiply-adds into the result (a product with all diagonals at
    once would write and read back a temporary larger than the band)."""
    lift = x.ndim == 3
    if lift:
        band = band.unsqueeze(1)
    n = x.shape[-1]
    out = band[..., 0, :] * x
    # In place when nothing is recorded (the fast path); out of place under autograd.
    inplace = not (torch.is_grad_enabled() and (band.requires_grad or x.requires_grad))
    for offset in range(1, band.shape[-2]):
        diagonal = band[..., offset, :n - offset]
        if inplace:
            out[..., offset:].addcmul_(diagonal, x[..., :n - offset])
            out[..., :n - offset].addcmul_(diagonal, x[..., offset:])
        else:
            out = out + torch.nn.functional.pad(diagonal * x[..., :n - offset], (offset, 0)) \
                + torch.nn.functional.pad(diagonal * x[..., offset:], (0, offset))
    return out


def _blocks(factor: torch.Tensor, bw: int, unit_padding: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """A banded lower ``L`` as block-bidiagonal: diagonal blocks ``D`` and sub-diagonal blocks
    ``E``, both ``(B, nb, s, s)`` with ``s = max(bw, 1)`` (so ``L`` has no other blocks).

    ``N`` is padded to ``nb * s`` with identity rows (zero rows if not ``unit_padding``: the
    derivative of a factor), which leave the solves unchanged.
    """
    batch, n, _ = factor.shape
    size = max(bw, 1)
    nb = -(-n // size)
    pad = nb * size - n
    if pad:
        factor = torch.nn.functional.pad(factor, (0, pad, 0, pad))
        if unit_padding:
            factor = factor + torch.diag(torch.cat([factor.new_zeros(n), factor.new_ones(pad)]))
    grid = factor.reshape(batch, nb, size, nb, size)
    idx = torch.arange(nb, device=factor.device)
    diagonal = grid[:, idx, :, idx].transpose(0, 1)
    sub = grid[:, idx[1:], :, idx[:-1]].transpose(0, 1)
    sub = torch.cat([torch.zeros_like(diagonal[:, :1]), sub], dim=1)
    return diagonal, sub


def _substitute(diagonal: torch.Tensor, sub: torch.Tensor, r: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, y)`` with ``y = L^{-1} r`` and ``z = L^{-T} y = (L L^T)^{-1} r``, by block forward
    and backward substitution: one batched triangular solve per diagonal block,
    ``O(N * bandwidth)`` per instance."""
    batch, nb, size, _ = diagonal.shape
    n = r.shape[1]
    rhs = torch.nn.functional.pad(r, (0, nb * size - n)).reshape(batch, nb, size).unbind(1)
    d_blocks, e_blocks = diagonal.unbind(1), sub.unbind(1)
    y = []
    for j in range(nb):  # L y = r
        b = rhs[j] if j == 0 else rhs[j] - (e_blocks[j] * y[-1].unsqueeze(1)).sum(dim=2)
        y.append(torch.linalg.solve_triangular(d_blocks[j], b.unsqueeze(2), upper=False)[..., 0])
    x = [None] * nb
    for j in reversed(range(nb)):  # L^T x = y
        b = y[j] if j == nb - 1 else y[j] - (e_blocks[j + 1] * x[j + 1].unsqueeze(2)).sum(dim=1)
        x[j] = torch.linalg.solve_triangular(d_blocks[j].mT, b.unsqueeze(2), upper=True)[..., 0]
    return torch.cat(x, dim=1)[:, :n], torch.cat(y, dim=1)[:, :n]


def _precondition(diagonal: torch.Tensor, sub: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``z = (L L^T)^{-1} r`` (:func:`_substitute`), differentiated by autograd."""
    return _substitute(diagonal, sub, r)[0]


def _block_product(diagonal: torch.Tensor, sub: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``L u`` for a block-bidiagonal ``L`` (:func:`_blocks`) and ``u`` ``(B, N, k)``."""
    batch, nb, size, _ = diagonal.shape
    n, k = u.shape[1], u.shape[2]
    blocks = torch.nn.functional.pad(u, (0, 0, 0, nb * size - n)).reshape(batch, nb, size, k)
    out = [diagonal[:, j] @ blocks[:, j] + (sub[:, j] @ blocks[:, j - 1] if j else 0)
           for j in range(nb)]
    return torch.cat(out, dim=1)[:, :n]


class _Precondition(torch.autograd.Function):
    """``z = M(alpha)^{-1} r`` with ``M = L L^T``, differentiable in ``r`` and ``alpha`` with an
    analytic backward: ``grad_r = M^{-1} grad_z`` and, from ``dz = -M^{-1} M' z`` with
    ``M' = L' L^T + L L'^T`` (``L' = dL / d alpha``),
    ``grad_alpha = -g^T M' z = -(g . L' y + z . L' v)`` where ``g = M^{-1} grad_z``,
    ``v = L^{-1} grad_z = L^T g`` and ``y = L^{-1} r = L^T z``. The forward is
    :func:`_substitute`'s, so values equal the autograd path's bit for bit."""

    @staticmethod
    def forward(ctx, r, alpha, diagonal, sub, d_diagonal, d_sub):
        z, y = _substitute(diagonal, sub, r)
        ctx.save_for_backward(z, y, diagonal, sub, d_diagonal, d_sub)
        return z

    @staticmethod
    def backward(ctx, grad_z):
        z, y, diagonal, sub, d_diagonal, d_sub = ctx.saved_tensors
        g, v = _substitute(diagonal, sub, grad_z)
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            both = _block_product(d_diagonal, d_sub, torch.stack([y, v], dim=2))
            grad_alpha = -((g * both[..., 0]).sum(dim=1) + (z * both[..., 1]).sum(dim=1))
        return g, grad_alpha, None, None, None, None


class _BandMatvec(torch.autograd.Function):
    """``A x`` from the band of a constant symmetric ``A`` (:func:`_band_matvec`); the backward
    is the same product, ``A^T g = A g``."""

    @staticmethod
    def forward(ctx, x, band):
        ctx.save_for_backward(band)
        return _band_matvec(band, x)

    @staticmethod
    def backward(ctx, grad):
        (band,) = ctx.saved_tensors
        return _band_matvec(band, grad), None


@register_method
class ICCG(IterativeMethod):
    """Conjugate gradients preconditioned with IC(0) of ``A + alpha I``: ICCG(alpha).

    Parameters ``theta`` read from ``params``: ``x0`` and ``alpha`` (``(B,)``, the diagonal shift,
    the paper's ``alpha_tau``); the constructor's ``alpha`` is the default for all instances.

    State: ``x``, the recurrence residual ``r``, ``z = M^{-1} r``, the direction ``p``,
    ``rz = r^T z``, the products ``ax = A x`` and ``ap = A p`` (computed together at the end of
    a step), the lower band of ``A`` by diagonals (``band``; ``A`` is symmetric and only its
    lower triangle is read, as by IC(0)), the factor ``L`` as diagonal and
    sub-diagonal blocks (``D``, ``E``) and ``breakdown`` (IC(0) failed, or ``p^T A p < 0``: ``A``
    is not positive definite). The monitored norm is the true residual ``||b - A x||``, not the
    recurrence's ``r``, which drifts from it on ill-conditioned systems (thin beams).

    Cost: the matrix products and the two triangular solves use the band of ``A`` (half-width
    ``bw``, read off its pattern) only, ``O(N bw)`` per iteration and instance; a dense matrix
    is the case ``bw = N - 1``.
    """

    name = "iccg"
    parameter_names = ("alpha",)
    parameter_shapes = {"alpha": "instance"}
    problem_type = LinearSystem

    def __init__(self, alpha: float = 0.0):
        self.alpha = check_finite_number("alpha", alpha)

    def config(self):
        return {"alpha": self.alpha}

    def validate(self, problem) -> None:
        super().validate(problem)
        if isinstance(problem.matrix, SparseBatch):
            raise TypeError("ICCG factorises a dense band of each matrix; it takes a dense "
                            "(B, N, N) or a shared (N, N) matrix, not a SparseBatch (for "
                            "per-instance sparse matrices use ConjugateGradient("
                            "preconditioner='ic0'), IC(0) of each instance's pattern)")
        matrix = _dense_batch(problem).detach()
        asym = (matrix - matrix.mT).abs().amax(dim=(1, 2))
        scale = matrix.abs().amax(dim=(1, 2))
        if bool((asym > 1e-10 * scale).any()):
            worst = int(torch.argmax(asym / scale.clamp_min(torch.finfo(scale.dtype).tiny)))
            raise ValueError(f"matrix must be symmetric for ICCG; instance {worst} has "
                             f"max |A - A^T| = {asym[worst].item():.3g}")

    def shift(self, problem: LinearSystem, params: Mapping) -> torch.Tensor:
        alpha = params.get("alpha")
        if alpha is None:
            return torch.full((problem.batch_size,), self.alpha, dtype=problem.dtype,
                              device=problem.rhs.device)
        return check_instance_scalars("params['alpha']", alpha, problem.batch_size)

    def init(self, problem: LinearSystem, x0, params) -> State:
        matrix = _dense_batch(problem)
        bw = _bandwidth(matrix)
        shift = self.shift(problem, params)
        band = _band(matrix, bw)
        constant = {"band": band}
        if matrix.requires_grad:
            # A gradient in A itself: autograd through the factorization and the solves.
            factor, failed = incomplete_cholesky_reference(matrix, shift)
            constant["D"], constant["E"] = _blocks(factor, bw)
        else:
            # The factor and its derivative in alpha once per solve; the products and solves
            # of the iterations differentiate analytically (_Precondition, _BandMatvec).
            grad = torch.is_grad_enabled()
            factor, tangent, failed = _ic0_with_tangent(matrix, shift,
                                                        tangent=grad and shift.requires_grad)
            blocks = _blocks(factor, bw)
            if tangent is not None:
                blocks += _blocks(tangent, bw, unit_padding=False)
            # Each block column j as one contiguous (B, s, s) tensor: the batched triangular
            # solves and products of the iterations then copy nothing.
            blocks = [block.transpose(0, 1).contiguous().transpose(0, 1) for block in blocks]
            constant["D"], constant["E"] = blocks[:2]
            constant["dD"], constant["dE"] = blocks[2:] if tangent is not None else blocks[:2]
            constant["alpha"] = shift
        ax = _matvec(constant, x0)
        r = problem.rhs - ax
        z = _apply_preconditioner(constant, r)
        return {"x": x0, "r": r, "z": z, "p": z, "rz": batched_dot(r, z), "ax": ax,
                "ap": _matvec(constant, z), **constant, "breakdown": failed}

    def step(self, problem: LinearSystem, state: State, params: Mapping) -> State:
        p, ap = state["p"], state["ap"]
        pap = batched_dot(p, ap)
        step = safe_ratio(state["rz"], pap)
        x = state["x"] + step.unsqueeze(1) * p
        r = state["r"] - step.unsqueeze(1) * ap
        z = _apply_preconditioner(state, r)
        rz = batched_dot(r, z)
        p = z + safe_ratio(rz, state["rz"]).unsqueeze(1) * p
        breakdown = state["breakdown"] | ~(pap >= 0)
        # A x for the monitored true residual and A p for the next step, in one read of the
        # band: the products are bound by that read.
        ax, ap = _matvec(state, torch.stack([x, p], dim=1)).unbind(1)
        return {**state, "x": x, "r": r, "z": z, "p": p, "rz": rz, "ax": ax, "ap": ap,
                "breakdown": breakdown}

    def residual(self, problem: LinearSystem, state: State) -> torch.Tensor:
        return torch.linalg.vector_norm(problem.rhs - state["ax"], dim=1)


def _matvec(state: State, x: torch.Tensor) -> torch.Tensor:
    if "alpha" in state:  # the fast path: A is constant, the backward is analytic
        return _BandMatvec.apply(x, state["band"])
    return _band_matvec(state["band"], x)


def _apply_preconditioner(state: State, r: torch.Tensor) -> torch.Tensor:
    if "alpha" in state:
        return _Precondition.apply(r, state["alpha"], state["D"], state["E"], state["dD"],
                                   state["dE"])
    return _precondition(state["D"], state["E"], r)


def factorization_fails(matrix: torch.Tensor, alpha: float, chunk: int = 250) -> torch.Tensor:
    """``(B,)`` bool: IC(0) of ``A + alpha I`` fails, for a constant ``alpha``."""
    with torch.no_grad():
        return torch.cat([incomplete_cholesky(part, torch.full((len(part),), float(alpha),
                                                               dtype=part.dtype))[1]
                          for part in matrix.split(chunk)])


def smallest_safe_shift(matrix: torch.Tensor, rel_tol: float = 1e-3) -> float:
    """The smallest constant ``alpha >= 0`` for which IC(0) succeeds on every matrix, by
    bisection on a log scale (the GBMS paper's ``Psi_base``, sec. 4.2); returns the succeeding
    end of the final bracket."""
    if not bool(factorization_fails(matrix, 0.0).any()):
        return 0.0
    high = 1.0
    while bool(factorization_fails(matrix, high).any()):
        high *= 10.0
        if high > 1e12:
            raise RuntimeError("IC(0) fails for every shift up to 1e12")
    low = high / 10.0
    while bool(not factorization_fails(matrix, low).any()) and low > 1e-12:
        high, low = low, low / 10.0
    while high / low > 1.0 + rel_tol:
        mid = math.sqrt(low * high)
        if bool(factorization_fails(matrix, mid).any()):
            low = mid
        else:
            high = mid
    return high
