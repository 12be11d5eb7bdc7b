"""Meta-solvers ``Psi(tau; omega) -> theta`` (GBMS paper, sec. 2.1).

A meta-solver maps a batch of task features ``(B, F)`` to a dict of solver parameters, one entry
per head (``{"x0": (B, N)}``, ``{"omega": (B,)}``, ...). Two kinds:

* :class:`ConstantMetaSolver`: ``theta`` is the same for every task (one learned relaxation
  factor, R2N2's weights); ``omega`` is the head's pre-activation.
* :class:`NetworkMetaSolver`: a fully connected network of the features with constrained heads.

``Psi_base`` of the paper (a zero initial guess) needs no meta-solver at all: run the method with
no ``params``.

Every meta-solver class registers its ``kind`` in :data:`METASOLVERS` (``@register_metasolver``),
and :func:`metasolver_from_config` rebuilds one from its :meth:`~MetaSolver.config` through that
registry, so a new kind (the AutoSpec engine, say) is loadable from an artifact without this
module knowing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..registry import Registry
from ..validation import (
    check_choice,
    check_count,
    check_counts,
    check_finite_number,
    check_mapping,
    check_tensor,
)
from .heads import HEADS, Head, head_from_config

METASOLVERS = Registry("meta-solver kind", key="kind")
register_metasolver = METASOLVERS.register

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def dense_parameters(widths: Sequence[int]) -> int:
    """Weights and biases of fully connected layers ``widths[0] -> widths[1] -> ...``:
    ``sum(w_in w_out + w_out)``, the count ``nn.Linear`` layers of these widths hold."""
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))


def heads_sizes(heads: dict) -> tuple[int, int] | None:
    """``(outputs, stored entries)`` of the heads a meta-solver config describes
    (``{name: {"kind": ..., "config": {...}}}``), from the configs alone; ``None`` if a head kind
    does not declare its sizes. Raises ``TypeError``/``ValueError`` naming a malformed head."""
    check_mapping("heads", heads)
    if not heads:
        raise ValueError("a meta-solver needs at least one head, the config has none")
    outputs = stored = 0
    for name, head in heads.items():
        check_mapping(f"heads[{name!r}]", head)
        kind = head.get("kind")
        if not isinstance(kind, str) or kind not in HEADS:
            raise ValueError(f"heads[{name!r}] has unknown head kind {kind!r}; registered: "
                             f"{sorted(HEADS)}")
        sizes = HEADS[kind].sizes(check_mapping(f"heads[{name!r}].config", head.get("config")))
        if sizes is None:
            return None
        outputs, stored = outputs + sizes[0], stored + sizes[1]
    return outputs, stored


class MetaSolver(nn.Module):
    """Base: ``forward(features) -> {name: theta}``; ``config()`` describes the architecture."""

    kind = ""

    def __init__(self, heads: Mapping[str, Head]):
        super().__init__()
        if not heads:
            raise ValueError("a meta-solver needs at least one head")
        for name, head in heads.items():
            if not isinstance(head, Head):
                raise TypeError(f"heads[{name!r}] must be a Head, got {type(head).__name__}")
        # Heads in name order: the outputs are split by this order, and an artifact's JSON stores
        # the heads as a dict with sorted keys, so any other order would not survive a reload.
        self.heads = nn.ModuleDict({name: heads[name] for name in sorted(heads)})

    @property
    def outputs(self) -> tuple[str, ...]:
        """The names of the parameters ``theta`` that :meth:`forward` returns."""
        return tuple(self.heads)

    @property
    def n_outputs(self) -> int:
        return sum(h.n_outputs for h in self.heads.values())

    def _split(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, head in self.heads.items():
            out[name] = head(z[:, start:start + head.n_outputs])
            start += head.n_outputs
        return out

    def heads_config(self) -> dict:
        return {name: {"kind": h.kind, "config": h.config()} for name, h in self.heads.items()}

    def config(self) -> dict:
        """The constructor's arguments as JSON, with ``kind``: :func:`metasolver_from_config`
        rebuilds the (untrained) meta-solver from it."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> MetaSolver:
        """The inverse of :meth:`config` (without ``kind``): heads are rebuilt from their own
        configs, everything else goes to the constructor."""
        config = dict(config)
        config["heads"] = {name: head_from_config(h["kind"], h["config"])
                           for name, h in config.pop("heads").items()}
        return cls(**config)

    @classmethod
    def parameter_count(cls, config: dict) -> int | None:
        """The number of entries of the state dict the (untrained) meta-solver :meth:`config`
        describes would hold, computed arithmetically from the config without building anything,
        with its fields' types checked (``TypeError`` or ``ValueError`` otherwise). Loading an
        artifact compares it with a ceiling before building (``metasolve.artifact``); a kind
        that returns ``None`` (the default) declares nothing and is built unchecked."""
        return None

    def baseline_params(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``theta`` of the classical method this meta-solver starts from, for the same tasks
        (read by losses relative to it). Only meta-solvers whose untrained state is a classical
        method define it."""
        raise TypeError(f"a {type(self).__name__} has no classical baseline to compare with")


@register_metasolver
class ConstantMetaSolver(MetaSolver):
    """The same ``theta`` for every task; learns the head's pre-activation ``z``.

    Args:
        heads: name -> head.
        init: optional name -> initial pre-activation (a float or a tensor of the head's size).
    """

    kind = "constant"

    def __init__(self, heads: Mapping[str, Head], init: Mapping[str, float] | None = None,
                 in_features: int | None = None):
        super().__init__(heads)
        self.in_features = in_features
        init = dict(init or {})
        unknown = sorted(set(init) - set(self.heads))
        if unknown:
            raise ValueError(f"init names {unknown} are not heads; heads: {sorted(self.heads)}")
        z = torch.zeros(self.n_outputs, dtype=torch.float64)
        start = 0
        for name, head in self.heads.items():
            if name in init:
                value = torch.as_tensor(init[name], dtype=torch.float64).reshape(-1)
                if value.numel() not in (1, head.n_outputs):
                    raise ValueError(f"init[{name!r}] must have 1 or {head.n_outputs} entries, "
                                     f"got {value.numel()}")
                z[start:start + head.n_outputs] = value
            start += head.n_outputs
        self.z = nn.Parameter(z)

    def config(self) -> dict:
        return {"kind": self.kind, "heads": self.heads_config(), "in_features": self.in_features}

    @classmethod
    def parameter_count(cls, config: dict) -> int | None:
        check_count("in_features", config.get("in_features"), allow_none=True)
        sizes = heads_sizes(config.get("heads"))
        return None if sizes is None else sizes[0] + sizes[1]  # z, plus the heads' buffers

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        check_tensor("features", features, ndim=2)
        return self._split(self.z.expand(features.shape[0], -1))


@register_metasolver
class NetworkMetaSolver(MetaSolver):
    """A fully connected network ``features -> hidden layers -> heads``.

    ``Psi_nn`` of the GBMS paper's Poisson example (Appendix C.1) is
    ``NetworkMetaSolver(16, {"x0": BasisHead(sine_basis(16))}, hidden=(15, 15))`` (SiLU).

    Args:
        in_features: ``F``, the width of the task features.
        heads: name -> head; the last layer has the heads' total width.
        hidden: widths of the hidden layers.
        activation: one of ``silu``, ``relu``, ``tanh``, ``gelu``.
        feature_scale: optional ``(F,)`` divisor applied to the features before the first layer.
        zero_init: start the last layer at zero, so the untrained meta-solver predicts ``head(0)``
            for every task (a zero initial guess, the middle of an interval). Training then starts
            from the classical method's default instead of from random parameters.
        head_bias: optional head name -> initial bias of that head's outputs in the last layer
            (App. C.2 starts the relaxation factor's bias at -1, ``r = 1 + sigmoid(-1)``).
    """

    kind = "network"

    def __init__(self, in_features: int, heads: Mapping[str, Head],
                 hidden: Sequence[int] = (15, 15), activation: str = "silu",
                 feature_scale: torch.Tensor | None = None, zero_init: bool = False,
                 head_bias: Mapping[str, float] | None = None):
        super().__init__(heads)
        self.in_features = check_count("in_features", in_features, minimum=1)
        self.hidden = [check_count("hidden", w, minimum=1) for w in hidden]
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        layers, width = [], in_features
        for w in self.hidden:
            layers += [nn.Linear(width, w, dtype=torch.float64), ACTIVATIONS[activation]()]
            width = w
        layers.append(nn.Linear(width, self.n_outputs, dtype=torch.float64))
        self.net = nn.Sequential(*layers)
        if zero_init:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        head_bias = dict(head_bias or {})
        unknown = sorted(set(head_bias) - set(self.heads))
        if unknown:
            raise ValueError(f"head_bias names {unknown} are not heads; "
                             f"heads: {sorted(self.heads)}")
        start = 0
        with torch.no_grad():
            for name, head in self.heads.items():
                if name in head_bias:
                    value = check_finite_number(f"head_bias[{name!r}]", head_bias[name])
                    layers[-1].bias[start:start + head.n_outputs] = value
                start += head.n_outputs
        scale = torch.ones(in_features, dtype=torch.float64) if feature_scale is None \
            else check_tensor("feature_scale", feature_scale, shape=(in_features,)).double()
        if not bool((scale > 0).all()):
            raise ValueError("feature_scale must be positive (it divides the features)")
        self.register_buffer("feature_scale", scale.clone())

    def config(self) -> dict:
        return {"kind": self.kind, "in_features": self.in_features, "hidden": self.hidden,
                "activation": self.activation, "heads": self.heads_config()}

    @classmethod
    def parameter_count(cls, config: dict) -> int | None:
        in_features = check_count("in_features", config.get("in_features"), minimum=1)
        hidden = check_counts("hidden", config.get("hidden", [15, 15]), minimum=1)
        check_choice("activation", config.get("activation", "silu"), tuple(ACTIVATIONS))
        sizes = heads_sizes(config.get("heads"))
        if sizes is None:
            return None
        # The layers, the feature_scale buffer (in_features) and the heads' buffers.
        return dense_parameters([in_features, *hidden, sizes[0]]) + in_features + sizes[1]

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        check_tensor("features", features, ndim=2)
        if features.shape[1] != self.in_features:
            raise ValueError(f"features must have {self.in_features} columns (the meta-solver's "
                             f"in_features), got shape {tuple(features.shape)}")
        z = self.net(features.to(torch.float64) / self.feature_scale)
        return self._split(z)


def metasolver_from_config(config: dict) -> MetaSolver:
    """Rebuild an (untrained) meta-solver from :meth:`MetaSolver.config`, by its ``kind``."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in METASOLVERS:
        raise ValueError(f"unknown meta-solver kind {kind!r}; registered: {sorted(METASOLVERS)}")
    return METASOLVERS[kind].from_config(config)
