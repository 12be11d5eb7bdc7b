"""Neural fixed-point acceleration of SCS (neural SCS paper, sec. 4-5).

Two learned methods, each an :class:`~metasolve.solvers.scs.SCS` whose ``accelerate`` rule is a
network (so the driver loop, the stopping test and the residuals are SCS's own):

* :class:`RecurrentSCS` (Algorithm 1, sec. 4): at every iteration a GRU cell reads the
  tau-normalised iterate ``z_t / tau`` and its image ``f(z_t) / tau_f`` and updates a hidden state
  ``h``; a decoder maps ``h`` to a correction of the plain step, ``z_{t+1} = f(z_t)/tau_f +
  D(h_{t+1})``.
* :class:`IntermittentSCS` (Algorithm 2, sec. 5): an MLP is applied only at the iterations of the
  access set ``A``; it reads ``f(z_{t-1})``, the last ``k`` iterates (the history ``H_t``) and the
  context ``phi``, and returns ``z_t = f(z_{t-1})/tau_f + MLP(...)``; elsewhere
  ``z_t = f(z_{t-1})``. Optional overparametrisation (sec. 5.2, Arora et al. 2018): each hidden
  weight matrix is a product of two, the output matrix a product of ``(m x k)`` and ``(k x k)``.

The initializer ``g_init`` (an MLP of the context ``phi``) is the meta-solver: a
:class:`~metasolve.learned.metasolver.NetworkMetaSolver` with the head ``start_correction``
(added to SCS's cold start, in tau = 1 units) and, for the recurrent model, ``hidden0``. Every
correction is made in tau-normalised units and its ``tau`` entry is masked to zero, so the
predicted iterates have ``tau = 1`` and nothing is learned about ``tau`` (sec. 4.3.2: a model
that could shrink ``tau`` would shrink the residuals without solving anything); the embedding is
homogeneous, so rescaling an iterate by a positive number changes nothing else.

Training Algorithm 2 uses the truncated gradients of sec. 5.1: while autograd records, the model
reads a detached iterate and history at each access, so each access is trained by the residuals
that follow it (up to the next access), not through the iterations before it.

The corrections start at zero (zero-initialised last layers): untrained, both methods are SCS.

``scaled_corrections=True`` (our option, not the paper's) makes every correction after the start
proportional to the current fixed-point residual: the model reads the residual's direction
``(f(z) - z) / ||f(z) - z||`` (tau-normalised) besides its usual inputs and its output is
multiplied by ``||f(z) - z||``. The paper's corrections do not vanish at SCS's fixed point: a
correction can never be more accurate than the network's prediction error, so a trained model's
lead over SCS fades once SCS's own residual reaches that error (on the fixed-``F`` small Lasso,
``metasolve reproduce neural-scs-lasso-variants --scale paper-corrections``: 12.2 times below SCS
at iteration 10, 2.7 times at 30). Scaled corrections keep SCS's fixed points as the accelerated
iteration's, and the model learns a step relative to the current residual instead of an
absolute position.

**Safeguarded mode** (:meth:`_LearnedSCS.safeguarded`, what ``LearnedSolver.solve`` runs by
default; docs/architecture.md, sec. 6). The paper's models come with no guarantee: a correction
that helps on the training distribution can stall or ruin the iteration elsewhere, and the
unscaled corrections do not even keep SCS's fixed points. The guarded view of a model (the same
weights) borrows the rule of SCS's safeguarded Anderson acceleration (SCS 3's
``safeguard_factor``; Zhang, O'Donoghue & Boyd, SIAM J. Optim. 30, 2020): an accelerated iterate
is worth taking only if it does not make the fixed-point residual worse than the iterate it
accelerates. At each iteration where the network proposes an iterate ``z'`` (every iteration of
Algorithm 1, the access set of Algorithm 2), ``f(z')`` is applied once (the next step needs it
anyway) and, per instance, ``z'`` is kept only if ``||z'/tau' - f(z')/tau_f'|| <= factor
||z/tau - f(z)/tau_f||`` (factor 1, SCS's default, and finite); otherwise the plain SCS step
``f(z)`` is taken, at the cost of one more application of ``f`` that iteration. The learned
start is tested the same way: it is used only where its fixed-point residual is no larger than
the cold start's (elsewhere the cold start, and a zero ``hidden0``). The model's own memory (the
GRU state, the history of Algorithm 2) still observes every iterate. With plain steps wherever
the network does not reduce the residual, a model with arbitrary weights converges where SCS
does. ``Solution.info["rejected_steps"]`` counts the refused steps per instance and
``info["start_rejected"]`` the refused starts. Training and the papers' tables run the models
unguarded, exactly as the paper's Algorithms 1 and 2.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..solvers.registry import register_method
from ..solvers.scs import SCS, LinearStep, tau_normalized
from ..validation import check_count, check_counts, check_positive

#: The safeguard's tolerance: an accelerated iterate is kept if its fixed-point residual is at
#: most this factor times the residual of the iterate it accelerates (SCS's ``safeguard_factor``
#: default; larger values accept steps that raise the residual a little).
SAFEGUARD_FACTOR = 1.0


def _linear(width_in: int, width_out: int, overparametrize: bool, zero: bool = False):
    """A linear layer, or (overparametrised) a product of two with the same expressiveness."""
    if not overparametrize:
        layer = nn.Linear(width_in, width_out, dtype=torch.float64)
        if zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        return layer
    first = nn.Linear(width_in, width_out, bias=False, dtype=torch.float64)
    second = nn.Linear(width_out, width_out, dtype=torch.float64)
    if zero:
        nn.init.zeros_(second.weight)
        nn.init.zeros_(second.bias)
    return nn.Sequential(first, second)


def mlp(width_in: int, hidden: Sequence[int], width_out: int,
        overparametrize: bool = False) -> nn.Sequential:
    """ReLU MLP whose output layer starts at zero (so the correction it predicts starts at 0)."""
    layers, width = [], width_in
    for h in hidden:
        layers += [_linear(width, h, overparametrize), nn.ReLU()]
        width = h
    layers.append(_linear(width, width_out, overparametrize, zero=True))
    return nn.Sequential(*layers)


def mlp_parameters(width_in: int, hidden: Sequence[int], width_out: int,
                   overparametrize: bool = False) -> int:
    """The number of weights :func:`mlp` of these widths holds, without building it."""
    widths = [width_in, *hidden, width_out]
    # An overparametrised layer is a bias-free a -> b product followed by a b -> b layer.
    return sum(a * b + b + (b * b if overparametrize else 0)
               for a, b in zip(widths[:-1], widths[1:], strict=True))


def _boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false, got {type(value).__name__}")
    return value


class _LearnedSCS(SCS, nn.Module, abc.ABC):
    """Shared plumbing: an SCS whose acceleration rule has trainable weights."""

    parameter_names = ("start_correction",)
    parameter_shapes = {"start_correction": "vector"}

    def __init__(self, dim: int, scaled_corrections: bool = False, **scs_options):
        nn.Module.__init__(self)
        SCS.__init__(self, **scs_options)
        self.dim = check_count("dim", dim, minimum=4)
        self.scaled_corrections = bool(scaled_corrections)
        if dim % 2:
            raise ValueError(f"dim must be even (the iterate is (u, v)), got {dim}")
        keep = torch.ones(dim, dtype=torch.float64)
        keep[dim // 2 - 1] = 0.0  # u's last entry is tau
        self.register_buffer("tau_free", keep)
        # The safeguard is a way of running the model, not part of it: off here (training and
        # the paper's tables), on in the view :meth:`safeguarded` returns; not in ``config``.
        self.guarded = False
        self.safeguard_factor = SAFEGUARD_FACTOR

    def safeguarded(self, factor: float = SAFEGUARD_FACTOR) -> _LearnedSCS:
        """A view of this model (the same weights and buffers, not a copy of them) that runs in
        safeguarded mode (module docstring): learned steps and the learned start are kept per
        instance only where they do not raise the fixed-point residual beyond ``factor``."""
        view = copy.copy(self)  # shares the parameter, buffer and submodule dicts
        view.guarded = True
        view.safeguard_factor = check_positive("factor", factor)
        return view

    def classical(self, problem_type: type | None = None) -> SCS:
        """The classical method this model accelerates: plain SCS with its settings (for cone
        programs, whatever ``problem_type`` says)."""
        return SCS(**SCS.config(self))

    def correction(self, value: torch.Tensor) -> torch.Tensor:
        """A predicted correction with its ``tau`` entry removed (predictions keep tau = 1)."""
        return value * self.tau_free

    def residual_inputs(self, zn: torch.Tensor, fzn: torch.Tensor):
        """With scaled corrections: the extra model input, the direction of the tau-normalised
        fixed-point residual, and the factor ``||f(z) - z||`` of the correction (one per
        instance). Without: no extra input and factor 1."""
        if not self.scaled_corrections:
            return [], 1.0
        residual = fzn - zn
        size = torch.linalg.vector_norm(residual, dim=1, keepdim=True)
        direction = residual / size.clamp_min(torch.finfo(residual.dtype).tiny)
        return [direction], size

    def config(self) -> dict:
        return {"dim": self.dim, "scaled_corrections": self.scaled_corrections,
                **SCS.config(self)}

    @staticmethod
    def _dim(config: dict) -> int:
        dim = check_count("dim", config.get("dim"), minimum=4)
        _boolean("scaled_corrections", config.get("scaled_corrections", False))
        return dim

    def init(self, problem, x0, params):
        if problem.size != self.dim:
            raise ValueError(f"{self.name} was built for iterates of length {self.dim}, the "
                             f"program's is {problem.size} (2 (n + m + 1))")
        correction = params.get("start_correction")
        if correction is not None and tuple(correction.shape) != (x0.shape[0], self.dim):
            raise ValueError(f"params['start_correction'] must have shape ({x0.shape[0]}, "
                             f"{self.dim}), got {tuple(correction.shape)}")
        start_rejected = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        if correction is not None:
            start = tau_normalized(x0) + self.correction(correction)
            if self.guarded:
                start, params, start_rejected = self._guard_start(problem, x0, start, params)
            x0 = start
        state = super().init(problem, x0, params)
        if self.guarded:
            state["rejected_steps"] = torch.zeros(x0.shape[0], dtype=torch.int64,
                                                  device=x0.device)
            state["start_rejected"] = start_rejected
        return state

    def _guard_start(self, problem, cold, start, params):
        """The learned ``start`` where its fixed-point residual is no larger than the ``cold``
        start's, else the cold start; the other start parameters (``hidden0``) of a rejected
        start become zero, the untrained model's, since they were predicted for the learned
        start. Returns the start, the parameters and the rejected instances."""
        linear = LinearStep(problem, self.normalize)
        def fixed_point_residual(z):
            return self.residual_of(z, self.fixed_point_map(problem, linear, z))

        # NaN compares false: a non-finite learned start is rejected.
        keep = fixed_point_residual(start) <= fixed_point_residual(cold)
        params = dict(params)
        for name in self.parameter_names:
            if name != "start_correction" and params.get(name) is not None:
                value = params[name]
                params[name] = torch.where(keep.reshape(-1, *[1] * (value.ndim - 1)), value,
                                           torch.zeros_like(value))
        return torch.where(keep.unsqueeze(1), start, cold), params, ~keep

    def accelerate(self, problem, state, z, fz, fixed_point_map):
        candidate, extra, proposed = self.propose(problem, state, z, fz)
        if not self.guarded:
            return candidate, extra, None
        if proposed is not None and not bool(proposed.any()):
            return candidate, extra, None  # a plain step everywhere: nothing to test
        f_candidate = fixed_point_map(candidate)
        # SCS's safeguard: the proposal may not raise the fixed-point residual (tau-normalised,
        # the norm the driver monitors) above factor times the current one. NaN fails.
        accept = self.residual_of(candidate, f_candidate) <= \
            self.safeguard_factor * self.residual_of(z, fz)
        if proposed is not None:
            accept = accept | ~proposed  # there the candidate is the plain step already
        if bool(accept.all()):
            return candidate, {**extra, "rejected_steps": state["rejected_steps"]}, f_candidate
        keep = accept.unsqueeze(1)
        z_next = torch.where(keep, candidate, fz)
        f_next = torch.where(keep, f_candidate, fixed_point_map(fz))
        return z_next, {**extra, "rejected_steps": state["rejected_steps"] + (~accept).long()}, \
            f_next

    @abc.abstractmethod
    def propose(self, problem, state, z, fz):
        """The network's next iterate from ``z`` and ``f(z)``, the model state it updates, and
        the ``(B,)`` instances where the network proposed it (``None``: all); elsewhere the
        proposal is the plain step ``f(z)``."""

    def report(self, problem, state):
        """In safeguarded mode: ``rejected_steps`` (per instance, the learned steps replaced by
        plain SCS steps) and ``start_rejected`` (the instances that started cold)."""
        if "rejected_steps" not in state:
            return {}
        return {"rejected_steps": state["rejected_steps"],
                "start_rejected": state["start_rejected"]}


@register_method
class RecurrentSCS(_LearnedSCS):
    """Algorithm 1: a GRU acceleration model applied at every iteration.

    Args:
        dim: length of the SCS iterate ``2 (n + m + 1)`` of the family.
        hidden: the GRU's hidden width.
        encoder: hidden widths of the encoder MLP from ``(z, f(z))`` (and, with
            ``scaled_corrections``, the residual's direction) to the GRU input.
        scaled_corrections: corrections proportional to the fixed-point residual (module
            docstring).
    """

    name = "scs-recurrent"
    parameter_names = ("start_correction", "hidden0")

    @property
    def parameter_shapes(self):
        return {"start_correction": "vector", "hidden0": ("B", self.hidden)}

    def __init__(self, dim: int, hidden: int = 128, encoder: Sequence[int] = (256,),
                 scaled_corrections: bool = False, **scs_options):
        super().__init__(dim, scaled_corrections, **scs_options)
        self.hidden = check_count("hidden", hidden, minimum=1)
        self.encoder_widths = [check_count("encoder", w, minimum=1) for w in encoder]
        w_in = (3 if self.scaled_corrections else 2) * dim
        width = self.encoder_widths[-1] if self.encoder_widths else w_in
        layers = []
        for w in self.encoder_widths:
            layers += [nn.Linear(w_in, w, dtype=torch.float64), nn.ReLU()]
            w_in = w
        self.encoder = nn.Sequential(*layers)
        self.cell = nn.GRUCell(width, self.hidden, dtype=torch.float64)
        self.decoder = _linear(self.hidden, dim, False, zero=True)

    def config(self) -> dict:
        return {**super().config(), "hidden": self.hidden, "encoder": self.encoder_widths}

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        """Entries of the state dict the config describes, from the config alone (loading an
        artifact bounds memory with it before building; :meth:`MetaSolver.parameter_count`)."""
        dim = cls._dim(config)
        hidden = check_count("hidden", config.get("hidden", 128), minimum=1)
        encoder = check_counts("encoder", config.get("encoder", [256]), minimum=1)
        w_in = (3 if config.get("scaled_corrections", False) else 2) * dim
        width = encoder[-1] if encoder else w_in
        gru = 3 * hidden * (width + hidden + 2)  # weight_ih, weight_hh and their biases
        encoder_weights = mlp_parameters(w_in, encoder[:-1], encoder[-1]) if encoder else 0
        return dim + encoder_weights + gru + hidden * dim + dim  # tau_free, ..., the decoder

    def init_extra(self, problem, x0, fz, params):
        h0 = params.get("hidden0")
        if h0 is not None and tuple(h0.shape) != (x0.shape[0], self.hidden):
            raise ValueError(f"params['hidden0'] must have shape ({x0.shape[0]}, {self.hidden}), "
                             f"got {tuple(h0.shape)}")
        if h0 is None:
            h0 = torch.zeros(x0.shape[0], self.hidden, dtype=x0.dtype, device=x0.device)
        return {"hidden": h0}

    def propose(self, problem, state, z, fz):
        zn, fzn = tau_normalized(z), tau_normalized(fz)
        extra, size = self.residual_inputs(zn, fzn)
        hidden = self.cell(self.encoder(torch.cat([zn, fzn, *extra], dim=1)), state["hidden"])
        return fzn + size * self.correction(self.decoder(hidden)), {"hidden": hidden}, None


@register_method
class IntermittentSCS(_LearnedSCS):
    """Algorithm 2: an MLP acceleration model applied only at the access set.

    Args:
        dim: length of the SCS iterate of the family.
        context_dim: width of the context ``phi`` (``problem.context``); the buffer
            ``context_scale`` divides it (set it to the training features' spread).
        access: the iterations ``A`` at which the model is applied (1-based, as the paper's).
        history: ``k``, iterates kept as the model's input besides ``f(z)``.
        hidden: hidden widths of the MLP; ``overparametrize`` as in sec. 5.2.
        scaled_corrections: corrections proportional to the fixed-point residual (module
            docstring).
    """

    name = "scs-intermittent"

    def __init__(self, dim: int, context_dim: int, access: Sequence[int] = (1, 2, 5, 10, 15),
                 history: int = 1, hidden: Sequence[int] = (512, 512),
                 overparametrize: bool = False, scaled_corrections: bool = False,
                 **scs_options):
        super().__init__(dim, scaled_corrections, **scs_options)
        self.context_dim = check_count("context_dim", context_dim)
        self.access = sorted({check_count("access", a, minimum=1) for a in access})
        self.history = check_count("history", history, minimum=1)
        self.hidden = [check_count("hidden", w, minimum=1) for w in hidden]
        self.overparametrize = bool(overparametrize)
        iterates = self.history + (2 if self.scaled_corrections else 1)
        self.net = mlp(iterates * dim + self.context_dim, self.hidden, dim,
                       self.overparametrize)
        self.register_buffer("context_scale", torch.ones(self.context_dim,
                                                         dtype=torch.float64))
        self.register_buffer("access_mask", torch.zeros(max(self.access) + 1,
                                                        dtype=torch.bool))
        self.access_mask[self.access] = True

    def config(self) -> dict:
        return {**super().config(), "context_dim": self.context_dim, "access": self.access,
                "history": self.history, "hidden": self.hidden,
                "overparametrize": self.overparametrize}

    @classmethod
    def parameter_count(cls, config: dict) -> int:
        """Entries of the state dict the config describes, from the config alone (loading an
        artifact bounds memory with it before building; :meth:`MetaSolver.parameter_count`)."""
        dim = cls._dim(config)
        context_dim = check_count("context_dim", config.get("context_dim"))
        access = check_counts("access", config.get("access", [1, 2, 5, 10, 15]), minimum=1)
        history = check_count("history", config.get("history", 1), minimum=1)
        hidden = check_counts("hidden", config.get("hidden", [512, 512]), minimum=1)
        over = _boolean("overparametrize", config.get("overparametrize", False))
        iterates = history + (2 if config.get("scaled_corrections", False) else 1)
        # The MLP, then the buffers: tau_free, context_scale and access_mask (max(access) + 1).
        return (mlp_parameters(iterates * dim + context_dim, hidden, dim, over)
                + dim + context_dim + max(access, default=0) + 1)

    def init_extra(self, problem, x0, fz, params):
        if self.context_dim and (problem.context is None
                                 or problem.context.shape[1] != self.context_dim):
            raise ValueError(f"{self.name} needs problem.context with {self.context_dim} "
                             f"columns (the family's features)")
        past = tau_normalized(x0).unsqueeze(1).expand(-1, self.history, -1)
        return {"history": past.clone()}

    def propose(self, problem, state, z, fz):
        zn, fzn = tau_normalized(z), tau_normalized(fz)
        history = torch.cat([state["history"][:, 1:], zn.unsqueeze(1)], dim=1)
        t = state["k"] + 1  # the iteration this step produces
        accessed = (t < self.access_mask.numel()) & self.access_mask[
            t.clamp(max=self.access_mask.numel() - 1)]
        if not bool(accessed.any()):
            return fz, {"history": history}, accessed
        if torch.is_grad_enabled():  # truncated gradients (sec. 5.1): start from a detached state
            zn, fzn, history_in = zn.detach(), fzn.detach(), history.detach()
        else:
            history_in = history
        extra, size = self.residual_inputs(zn, fzn)
        inputs = [fzn, history_in.flatten(1), *extra]
        if self.context_dim:
            inputs.append(problem.context / self.context_scale)
        predicted = fzn + size * self.correction(self.net(torch.cat(inputs, dim=1)))
        return (torch.where(accessed.unsqueeze(1), predicted, fz), {"history": history},
                accessed)
