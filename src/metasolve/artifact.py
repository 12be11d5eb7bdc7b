"""The file format of trained solvers and checkpoints: safetensors for tensors, JSON for the rest.

One file holds both: named tensors, and in the safetensors header a JSON document (what the file
is, its ``kind``, and whatever the writer needs to rebuild the object) plus a SHA-256 of the
document and the tensor bytes. Reading never unpickles anything; :func:`read_tensors` checks the
format tag, its version and the checksum, and raises :class:`ArtifactError` (a ``ValueError``)
saying what is wrong otherwise.

This module knows the format only, not what is stored:
:meth:`~metasolve.learned.solver.LearnedSolver.save` and
:meth:`~metasolve.learned.solver.LearnedSolver.load` (``metasolve.save``, ``metasolve.load``)
write and rebuild trained solvers, and the trainers write their checkpoints, all through
:func:`write_tensors` and :func:`read_tensors` (docs/architecture.md, section 10).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

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


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and bytes): equal exactly when the
    tensors are bitwise equal."""
    return _digest(tensors, "")


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
