"""Saving and loading trained solvers: safetensors for tensors, JSON for everything else.

One file holds both: the trained tensors (``LearnedSolver.model``), and in the safetensors header
a JSON document (family, method, meta-solver architecture, training settings, metasolve version)
plus a SHA-256 of the document and the tensor bytes. Loading never unpickles anything; it checks
the format tag, the checksum, and that every tensor matches the architecture the JSON describes,
and raises :class:`ArtifactError` (a ``ValueError``) saying what is wrong otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__

FORMAT = "metasolve-artifact"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """A model or checkpoint file is missing, corrupted, truncated or does not match."""


def _digest(tensors: dict[str, torch.Tensor], document: str) -> str:
    """SHA-256 over the JSON document and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(document.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_tensors(path, tensors: dict[str, torch.Tensor], document: dict) -> Path:
    """Atomically write ``tensors`` with ``document`` (JSON) and a checksum in the header.

    The file is written under a unique temporary name beside ``path`` and then renamed over it,
    so a reader sees the old file or the new one, never a partial one, even when several
    processes save to the same path at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    text = json.dumps(document, sort_keys=True)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "document": text,
              "sha256": _digest(tensors, text)}
    # A temporary name of its own for every write, so that two processes saving the same path
    # never rename (or truncate) each other's half-written file; created exclusively, with the
    # permissions an ordinary file gets (``mkstemp`` would make it owner-only).
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb"):
            pass
        save_file(tensors, str(tmp), metadata=header)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_tensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a file written by :func:`write_tensors`."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no metasolve file at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file (corrupted or "
                            f"truncated?): {exc}") from exc
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{path} is a safetensors file but not a metasolve artifact "
                            f"(format tag {header.get('format')!r}, expected {FORMAT!r})")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise ArtifactError(f"{path} has artifact format version "
                            f"{header.get('format_version')!r}; this metasolve reads "
                            f"{FORMAT_VERSION}")
    if header.get("sha256") != _digest(tensors, header.get("document", "")):
        raise ArtifactError(f"{path}: contents do not match their checksum (corrupted file)")
    try:
        document = json.loads(header["document"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: the JSON description is missing or invalid: {exc}") from exc
    return tensors, document


def save(solver, path) -> Path:
    """Save a :class:`~metasolve.learned.solver.LearnedSolver` to ``path``."""
    document = {
        "kind": "learned_solver",
        "metasolve_version": __version__,
        "method": {"name": solver.method.name, "config": solver.method.config()},
        "metasolver": solver.metasolver.config(),
        "family": None if solver.family is None else {"name": solver.family.name,
                                                      "config": solver.family.config()},
        "monitor": solver.monitor,
        "settings": solver.settings,
    }
    return write_tensors(path, solver.model.state_dict(), document)


def load(path, family=None):
    """Load a solver saved by :func:`save`.

    Args:
        family: optionally the task family to attach; it must match the stored one. If omitted,
            the stored family is rebuilt when its class is registered (imported).
    """
    from .learned.metasolver import metasolver_from_config
    from .learned.solver import LearnedSolver
    from .solvers.registry import method_from_config
    from .tasks.base import FAMILIES, family_from_config

    tensors, document = read_tensors(path)
    if document.get("kind") != "learned_solver":
        raise ArtifactError(f"{path} holds a {document.get('kind')!r}, not a learned solver")
    stored = document.get("family")
    if stored is not None and not (isinstance(stored, dict) and "name" in stored):
        raise ArtifactError(f"{path}: the stored family description is malformed: {stored!r}")
    if family is not None and stored is not None and (
            stored.get("name") != family.name or stored.get("config") != family.config()):
        raise ArtifactError(f"{path} was trained on family {stored.get('name')} "
                            f"{stored.get('config')}, but {family.name} {family.config()} "
                            "was given")
    try:
        method = method_from_config(document["method"]["name"], document["method"]["config"])
        metasolver = metasolver_from_config(document["metasolver"])
        if family is None and stored is not None:
            if stored["name"] in FAMILIES:
                family = family_from_config(stored["name"], stored["config"])
            else:
                warnings.warn(f"{path}: task family {stored['name']!r} is not registered (import "
                              "the module that defines it); loading without it", stacklevel=2)
        solver = LearnedSolver(method, metasolver, family=family,
                               monitor=document.get("monitor", "residual"),
                               settings=document.get("settings"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot rebuild the solver from its JSON: {exc}") from exc
    expected = solver.model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{path}: tensors do not match the stored architecture "
                            f"(missing {missing}, unexpected {extra})")
    for name, value in expected.items():
        got = tensors[name]
        if tuple(value.shape) != tuple(got.shape) or value.dtype != got.dtype:
            raise ArtifactError(f"{path}: tensor {name!r} is {got.dtype} of shape "
                                f"{tuple(got.shape)}, the architecture needs {value.dtype} of "
                                f"shape {tuple(value.shape)}")
    solver.model.load_state_dict(tensors)
    solver.model.eval()
    return solver
