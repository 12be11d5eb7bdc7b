"""The one place where input is checked (docs/architecture.md, convention 5).

Every message names the argument, what was received and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch


def check_tensor(name: str, value, *, ndim: int | Iterable[int] | None = None,
                 shape: tuple | None = None, floating: bool = True,
                 finite: bool = True) -> torch.Tensor:
    """Check that ``value`` is a tensor of the expected rank/shape, floating and finite."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                             f"got shape {tuple(value.shape)}")
    if shape is not None:
        if len(shape) != value.ndim or any(
                s is not None and s != v for s, v in zip(shape, value.shape, strict=False)):
            want = tuple("*" if s is None else s for s in shape)
            raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if finite and value.is_floating_point():
        data = value.detach()
        if data.layout != torch.strided:
            data = data.to_sparse_coo().coalesce().values()
        if not bool(torch.isfinite(data).all()):
            bad = int((~torch.isfinite(data)).sum())
            raise ValueError(f"{name} contains {bad} NaN or Inf entries; expected finite values")
    return value


def check_finite_number(name: str, value) -> float:
    """A finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_nonnegative(name: str, value, *, allow_none: bool = False) -> float | None:
    """A tolerance-like scalar: a finite real number >= 0."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_positive(name: str, value) -> float:
    value = check_nonnegative(name, value)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got 0")
    return value


def check_count(name: str, value, *, minimum: int = 0, allow_none: bool = False) -> int | None:
    """An iteration count or size: an int >= ``minimum``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_counts(name: str, value, *, minimum: int = 0) -> list[int]:
    """A list (or tuple) of counts, each an int >= ``minimum`` (layer widths, a shape)."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__}")
    return [check_count(name, v, minimum=minimum) for v in value]


def check_mapping(name: str, value) -> dict:
    """A dict with string keys (a JSON object), e.g. a configuration read from a file."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a JSON object (dict), got {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{name} must have string keys, got {bad[:3]!r}")
    return value


def check_choice(name: str, value, choices: Iterable):
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_instance_scalars(name: str, value: torch.Tensor, batch: int) -> torch.Tensor:
    """One number per instance, given as ``(B,)`` or ``(B, 1)``; returned as ``(B,)``."""
    if tuple(value.shape) not in ((batch,), (batch, 1)):
        raise ValueError(f"{name} must hold one value per instance, shape ({batch},) or "
                         f"({batch}, 1), got {tuple(value.shape)}")
    return value.reshape(batch)


def check_instance_counts(name: str, value, batch: int) -> torch.Tensor:
    """One iteration count per instance: an integer tensor of shape ``(B,)``, each >= 0."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be an int or a tensor, got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {value.dtype}")
    value = check_instance_scalars(name, value, batch)
    if batch and int(value.min()) < 0:
        raise ValueError(f"{name} must be >= 0 for every instance, got {int(value.min())}")
    return value


def check_batch(name: str, value: torch.Tensor, batch: int) -> torch.Tensor:
    if value.ndim == 0 or value.shape[0] != batch:
        raise ValueError(f"{name} must have batch size {batch} (leading dimension), "
                         f"got shape {tuple(value.shape)}")
    return value


#: The words a method may use in ``parameter_shapes`` (besides an explicit tuple of sizes in
#: which ``"B"`` stands for the batch and ``"N"`` for the unknowns per instance).
PARAMETER_SHAPES = {
    "instance": "(B,) or (B, 1): one value per instance",
    "vector": "(B, N): one vector per instance",
    "steps": "(B, K) with K >= 1: one value per instance and step",
}


def _describe_shape(kind, batch: int, size: int) -> str:
    if isinstance(kind, str):
        return PARAMETER_SHAPES[kind].replace("(B,", f"({batch},").replace(
            "(B, N)", f"({batch}, {size})")
    return str(tuple({"B": batch, "N": size}.get(s, s) for s in kind))


def check_parameter_shape(name: str, value: torch.Tensor, kind, batch: int,
                          size: int) -> torch.Tensor:
    """Check one method parameter against its declared shape ``kind``: a word of
    :data:`PARAMETER_SHAPES` or a tuple of sizes (ints, ``"B"``, ``"N"``)."""
    shape = tuple(value.shape)
    if kind == "instance":
        ok = shape in ((batch,), (batch, 1))
    elif kind == "vector":
        ok = shape == (batch, size)
    elif kind == "steps":
        ok = len(shape) == 2 and shape[0] == batch and shape[1] >= 1
    elif isinstance(kind, tuple):
        ok = shape == tuple({"B": batch, "N": size}.get(s, s) for s in kind)
    else:
        raise ValueError(f"unknown parameter shape {kind!r} for {name}; use one of "
                         f"{sorted(PARAMETER_SHAPES)} or a tuple of sizes")
    if not ok and kind == "instance":  # the words of check_instance_scalars
        raise ValueError(f"{name} must hold one value per instance, shape ({batch},) or "
                         f"({batch}, 1), got {shape}")
    if not ok:
        raise ValueError(f"{name} must have shape {_describe_shape(kind, batch, size)}, "
                         f"got {shape}")
    return value


def check_params(params, shapes, *, batch: int, size: int, dtype: torch.dtype,
                 owner: str) -> dict:
    """The ``params`` of a solve: a mapping of finite floating tensors, each with the shape
    ``shapes[name]`` its method declares (``None``: any shape with the batch leading; ``x0`` is
    checked by the problem). Returns a new dict.

    ``params`` that is not a mapping is a ``TypeError`` naming ``params`` (a bare tensor is the
    usual mistake: name it, ``params={"omega": tensor}``)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping from parameter names to tensors (e.g. "
                        f"{{'{next(iter(shapes), 'x0')}': tensor}}), got {type(params).__name__}")
    params = dict(params)
    unknown = sorted(set(params) - set(shapes) - {"x0"})
    if unknown:
        raise TypeError(f"params has unknown entries {unknown} for {owner}; "
                        f"allowed: {sorted(set(shapes) | {'x0'})}")
    for name, value in params.items():
        label = f"params[{name!r}]"
        check_tensor(label, value)
        if name != "x0" and shapes[name] is not None:
            check_parameter_shape(label, value, shapes[name], batch, size)
        check_batch(label, value, batch)
        if value.dtype != dtype:
            raise TypeError(f"{label} has dtype {value.dtype}, the problem has {dtype}")
    return params


def check_instance(name: str, value, cls: type):
    """An instance of ``cls``; the class itself gets a ``TypeError`` saying to instantiate it."""
    if isinstance(value, type) and issubclass(value, cls):
        raise TypeError(f"{name} must be an instance, got the class {value.__name__} itself; "
                        f"instantiate it first: {value.__name__}()")
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
    return value


def check_device(name: str, value) -> torch.device:
    """A device this process can put tensors on: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``
    or a :class:`torch.device`. A malformed name, or a device this machine lacks (``"cuda"``
    without a GPU, ``"cuda:3"`` on a machine with two), is a ``ValueError`` naming the
    argument; nothing requires a GPU unless one is asked for."""
    if isinstance(value, str):
        try:
            device = torch.device(value)
        except RuntimeError as exc:
            raise ValueError(f"{name} must name a torch device such as 'cpu', 'cuda' or "
                             f"'cuda:1', got {value!r}") from exc
    elif isinstance(value, torch.device):
        device = value
    else:
        raise TypeError(f"{name} must be a device name (str) or a torch.device, got "
                        f"{type(value).__name__}")
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "meta":
        raise ValueError(f"{name}={value!r}: the meta device holds no data, nothing can be "
                         "solved on it")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={value!r}: CUDA is not available in this process (torch "
                             f"{torch.__version__} sees no GPU); use 'cpu' or run on a "
                             "machine with a GPU and a CUDA build of torch")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{name}={value!r}: this machine has {count} CUDA device(s), "
                             f"numbered 0 to {count - 1}")
        return device
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, NotImplementedError) as exc:
        reason = " ".join(str(exc).split(". ")[0].split())[:160]
        raise ValueError(f"{name}={value!r}: this torch cannot put tensors on a {device.type} "
                         f"device here ({reason}); use 'cpu' or 'cuda'") from exc
    return device
