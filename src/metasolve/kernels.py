"""Optional compiled kernels: the hot tensor code of an iteration through ``torch.compile``.

An iteration written as separate PyTorch operations passes over the whole batch once per
operation; at the sizes metasolve batches (a few hundred kilobytes to megabytes per vector) the
data no longer sits in cache between operations, and each pass costs memory traffic.
``torch.compile`` fuses the elementwise work, the row reductions and the gathers of a sparse
product into a few loops, which read each vector once. It needs a C++ compiler on the CPU (and
Triton on a GPU) and compiles each kernel on first use (seconds), so it is off by default:

* ``metasolve.set_compile(True)``, or the environment variable ``METASOLVE_COMPILE=1``, turns it
  on for the functions marked :func:`compiled`;
* a kernel whose compilation fails (no compiler, an unsupported operation) warns once with
  :class:`CompileFallbackWarning` and runs uncompiled from then on: the results are the same,
  only slower.

Compiled and uncompiled kernels compute the same expressions; they agree to round-off (the
fused reductions may sum in another order).
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

_ENABLED = os.environ.get("METASOLVE_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")


class CompileFallbackWarning(UserWarning):
    """A kernel could not be compiled and runs uncompiled."""


def set_compile(enabled: bool) -> None:
    """Turn compiled kernels on or off for this process (see the module doc)."""
    global _ENABLED
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _ENABLED = enabled


def compiling() -> bool:
    """Whether the calling code is being traced by ``torch.compile`` (a kernel may then take
    a form that compiles well, such as a gathered sparse product, instead of a library call
    that would break the compiled graph)."""
    return torch.compiler.is_compiling()


def compiled(function):
    """Mark ``function`` as a kernel: compiled with ``torch.compile`` when compiled kernels
    are on, called as it is otherwise."""
    holder: dict = {}

    @functools.wraps(function)
    def kernel(*args, **kwargs):
        if not _ENABLED or holder.get("failed"):
            return function(*args, **kwargs)
        fast = holder.get("compiled")
        if fast is None:
            fast = holder["compiled"] = torch.compile(function)
        try:
            return fast(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the compiler's failures have many types
            # An error of the arguments raises again, uncompiled, as it would without compile.
            result = function(*args, **kwargs)
            holder["failed"] = True
            reason = (str(error).splitlines() or [""])[0][:200]
            warnings.warn(f"torch.compile could not compile {function.__qualname__} "
                          f"({type(error).__name__}: {reason}); it runs uncompiled from now on",
                          CompileFallbackWarning, stacklevel=2)
            return result

    kernel.uncompiled = function
    return kernel


def euclidean_norm(t: torch.Tensor, dim: int, keepdim: bool = False) -> torch.Tensor:
    """The Euclidean norm along ``dim``, as the square root of a sum of squares: PyTorch's CPU
    reduces that several times faster than ``vector_norm`` across a dimension that is not the
    last (the batch-as-columns layout of the SCS kernels). The sum is floored at the smallest
    normal number, so a zero vector has a norm of about 1e-154 (float64) and a gradient of
    zero, not NaN."""
    squares = (t * t).sum(dim=dim, keepdim=keepdim)
    return squares.clamp_min(torch.finfo(t.dtype).tiny).sqrt()

