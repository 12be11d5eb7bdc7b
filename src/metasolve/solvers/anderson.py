"""SCS with Anderson acceleration (type II, regularised and safeguarded): the SCS+AA baseline of
the neural SCS paper (sec. 4.4: a history of 5 iterations; Walker & Ni 2011, Zhang et al. 2020).

With the fixed-point map ``f`` of :mod:`metasolve.solvers.scs`, ``g(z) = f(z) - z``, and the last
``memory`` differences ``dZ = [z_{j+1} - z_j]``, ``dG = [g_{j+1} - g_j]``, the accelerated iterate
is ``z_AA = f(z_k) - (dZ + dG) gamma`` with
``gamma = argmin ||g_k - dG gamma||^2 + lambda ||gamma||^2``, ``lambda = regularization
||dG||_F^2`` (Tikhonov, as SCS does against ill-conditioned histories). Safeguard: the step is
kept only if ``||g(z_AA)|| <= safeguard ||g(z_k)||``; otherwise the plain step ``f(z_k)`` is
taken (costing one more application of ``f`` that iteration). ``state["aa_rejected"]``
counts the rejections per instance (``Solution.info["rejected_steps"]``).
"""

from __future__ import annotations

import torch

from ..validation import check_count, check_positive
from .registry import register_method
from .scs import SCS


@register_method
class AndersonSCS(SCS):
    """SCS + Anderson acceleration.

    Args:
        memory: the history length (the paper's SCS+AA uses 5).
        regularization: the Tikhonov weight relative to ``||dG||_F^2``.
        safeguard: the largest accepted growth of ``||g||`` over the plain iterate's.
        alpha, eps_abs, eps_rel: as :class:`~metasolve.solvers.scs.SCS`.
    """

    name = "scs-anderson"

    def __init__(self, memory: int = 5, regularization: float = 1e-8, safeguard: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.memory = check_count("memory", memory, minimum=1)
        self.regularization = check_positive("regularization", regularization)
        self.safeguard = check_positive("safeguard", safeguard)

    def config(self) -> dict:
        return {**super().config(), "memory": self.memory,
                "regularization": self.regularization, "safeguard": self.safeguard}

    def init_extra(self, problem, x0, fz, params):
        batch, d = x0.shape
        zeros = torch.zeros(batch, self.memory, d, dtype=x0.dtype, device=x0.device)
        return {"aa_dz": zeros, "aa_dg": zeros.clone(), "aa_prev_z": x0,
                "aa_prev_g": fz - x0,
                "aa_rejected": torch.zeros(batch, dtype=torch.int64, device=x0.device)}

    def report(self, problem, state):
        """``rejected_steps``: per instance, the accelerated steps the safeguard refused."""
        return {"rejected_steps": state["aa_rejected"]}

    def accelerate(self, problem, state, z, fz, fixed_point_map):
        g = fz - z
        k = state["k"]
        first = (k == 0).reshape(-1, 1, 1)
        # Shift the newest differences in (the first step has none yet).
        dz = torch.cat([state["aa_dz"][:, 1:], (z - state["aa_prev_z"]).unsqueeze(1)], dim=1)
        dg = torch.cat([state["aa_dg"][:, 1:], (g - state["aa_prev_g"]).unsqueeze(1)], dim=1)
        dz = torch.where(first, state["aa_dz"], dz)
        dg = torch.where(first, state["aa_dg"], dg)
        gram = dg @ dg.mT
        scale = dg.square().sum(dim=(1, 2))
        eye = torch.eye(self.memory, dtype=z.dtype, device=z.device)
        # The absolute floor keeps an empty history (dG = 0: the first step, or a converged
        # instance) solvable; it then gives gamma = 0, the plain step.
        lam = (self.regularization * scale + torch.finfo(z.dtype).tiny).reshape(-1, 1, 1)
        gamma = torch.linalg.solve(gram + lam * eye, (dg @ g.unsqueeze(-1))).squeeze(-1)
        candidate = fz - ((dz + dg) * gamma.unsqueeze(-1)).sum(dim=1)
        f_candidate = fixed_point_map(candidate)
        g_norm = torch.linalg.vector_norm(g, dim=1)
        accept = (torch.linalg.vector_norm(f_candidate - candidate, dim=1)
                  <= self.safeguard * g_norm) & (k > 0)
        accept &= torch.isfinite(candidate).all(dim=1)
        z_next = torch.where(accept.unsqueeze(1), candidate, fz)
        if bool(accept.all()):
            f_next = f_candidate
        else:  # the plain step for the rejected instances (computed for the batch)
            f_next = torch.where(accept.unsqueeze(1), f_candidate, fixed_point_map(fz))
        extra = {"aa_dz": dz, "aa_dg": dg, "aa_prev_z": z, "aa_prev_g": g,
                 "aa_rejected": state["aa_rejected"] + ((~accept) & (k > 0)).long()}
        return z_next, extra, f_next
